"""Context heads (NL, GC, DA, CC, EMA, ANN, DNL): what the registry, oracle and conformance tests
do not see. Criss-cross attention and the non-local modes against PyTorch transcriptions of mmcv's
formulas, DANet's three outputs against mmseg's, EMANet's bases update, errors."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ORACLE, require
from segjax.convert import convert_checkpoint
from segjax.models import HEADS, build_segmentor
from segjax.models.heads.cc_head import criss_cross_attention
from segjax.models.heads.ema_head import EMAModule
from segjax.models.heads.nl_head import NLHead, NonLocal2d

torch = pytest.importorskip("torch")


def torch_criss_cross(query, key, value):
  """mmcv 1.7's CrissCrossAttention.forward after the convs (NCHW), verbatim."""
  h = query.shape[2]
  neg_inf_diag = torch.diag(torch.tensor(float("-inf"), dtype=query.dtype).repeat(h), 0)
  energy_h = torch.einsum("bchw,bciw->bwhi", query, key) + neg_inf_diag
  energy_h = energy_h.transpose(1, 2)
  energy_w = torch.einsum("bchw,bchj->bhwj", query, key)
  attn = torch.softmax(torch.cat([energy_h, energy_w], dim=-1), dim=-1)
  out = torch.einsum("bciw,bhwi->bchw", value, attn[..., :h])
  return out + torch.einsum("bchj,bhwj->bchw", value, attn[..., h:])


def test_criss_cross_attention_and_gradients_match_mmcv_formula():
  rng = np.random.default_rng(0)
  q, k = rng.normal(size=(2, 5, 7, 3)), rng.normal(size=(2, 5, 7, 3))
  v, cot = rng.normal(size=(2, 5, 7, 4)), rng.normal(size=(2, 5, 7, 4))
  with jax.enable_x64(True):
    out, vjp = jax.vjp(criss_cross_attention, jnp.asarray(q), jnp.asarray(k), jnp.asarray(v))
    grads = vjp(jnp.asarray(cot))
  tq, tk, tv = (torch.tensor(a.transpose(0, 3, 1, 2), requires_grad=True) for a in (q, k, v))
  tout = torch_criss_cross(tq, tk, tv)
  tout.backward(torch.tensor(cot.transpose(0, 3, 1, 2)))
  np.testing.assert_allclose(np.asarray(out), tout.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-10, atol=1e-12)
  for g, t in zip(grads, (tq, tk, tv)):
    np.testing.assert_allclose(np.asarray(g), t.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-9, atol=1e-12)


def test_criss_cross_counts_the_pixel_itself_once():
  # Constant query/key: every one of the H + W - 1 pixels of the cross gets the same weight, so
  # the output is the plain average of the cross, the centre counted once.
  h, w = 4, 6
  value = np.random.default_rng(1).normal(size=(1, h, w, 2))
  ones = jnp.ones((1, h, w, 1))
  out = np.asarray(criss_cross_attention(ones, ones, jnp.asarray(value)))
  expected = (value.sum(1, keepdims=True) + value.sum(2, keepdims=True) - value) / (h + w - 1)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def torch_non_local(x, p, mode, use_scale):
  """mmcv 1.7's _NonLocalNd.forward (NCHW, norm-free conv_out) on parameters ``p`` (Flax layout)."""
  conv = lambda t, name: torch.nn.functional.conv2d(
      t, torch.tensor(p[name]["conv"]["kernel"]).permute(3, 2, 0, 1),
      torch.tensor(p[name]["conv"]["bias"]) if "bias" in p[name]["conv"] else None)
  n, c = x.shape[:2]
  inter = p["g"]["conv"]["kernel"].shape[-1]
  g_x = conv(x, "g").view(n, inter, -1).permute(0, 2, 1)
  if mode == "gaussian":
    theta_x, phi_x = x.view(n, c, -1).permute(0, 2, 1), x.view(n, c, -1)
  elif mode == "concatenation":
    theta_x, phi_x = conv(x, "theta").view(n, inter, -1, 1), conv(x, "phi").view(n, inter, 1, -1)
  else:
    theta_x, phi_x = conv(x, "theta").view(n, inter, -1).permute(0, 2, 1), conv(x, "phi").view(n, inter, -1)
  if mode == "concatenation":
    h, w = theta_x.size(2), phi_x.size(3)
    cat = torch.cat([theta_x.repeat(1, 1, 1, w), phi_x.repeat(1, 1, h, 1)], dim=1)
    pairwise = torch.relu(conv(cat, "concat_project")).view(n, h, w)
    pairwise = pairwise / pairwise.shape[-1]
  else:
    pairwise = torch.matmul(theta_x, phi_x)
    if mode == "dot_product":
      pairwise = pairwise / pairwise.shape[-1]
    else:
      if mode == "embedded_gaussian" and use_scale:
        pairwise = pairwise / theta_x.shape[-1] ** 0.5
      pairwise = pairwise.softmax(dim=-1)
  y = torch.matmul(pairwise, g_x).permute(0, 2, 1).reshape(n, inter, *x.shape[2:])
  return x + conv(y, "conv_out")


@pytest.mark.parametrize("mode,use_scale", [("embedded_gaussian", True), ("embedded_gaussian", False),
                                            ("dot_product", True), ("concatenation", True), ("gaussian", True)])
def test_non_local_modes_match_mmcv(mode, use_scale):
  x = np.random.default_rng(2).normal(size=(2, 3, 5, 8))
  block = NonLocal2d(8, reduction=2, use_scale=use_scale, mode=mode)
  with jax.enable_x64(True):
    variables = block.init(jax.random.PRNGKey(0), jnp.asarray(x))
    # Random values everywhere (conv_out would start at zero).
    leaves, tree = jax.tree.flatten(variables["params"])
    rng = np.random.default_rng(3)
    params = jax.tree.unflatten(tree, [rng.normal(size=l.shape) for l in leaves])
    out = np.asarray(block.apply({"params": params}, jnp.asarray(x)))
  expected = torch_non_local(torch.tensor(x.transpose(0, 3, 1, 2)), jax.tree.map(np.asarray, params),
                             mode, use_scale)
  np.testing.assert_allclose(out, expected.numpy().transpose(0, 2, 3, 1), rtol=1e-9, atol=1e-10)


def test_danet_three_outputs_match_mmseg():
  d = require(os.path.join(ORACLE, "danet_r50-d8"))
  model = build_segmentor(json.load(open(os.path.join(d, "mmseg_model.json"))))
  x = np.load(os.path.join(d, "input.npy")).transpose(0, 2, 3, 1)
  variables = convert_checkpoint(os.path.join(d, "model.pth"), model, x.shape)
  floor = json.load(open(os.path.join(d, "config.json")))["float32_vs_float64_max_abs"]

  cfg = dict(model.decode_head)
  head = HEADS[cfg.pop("type")](**cfg)
  head_vars = {c: variables[c]["decode_head"] for c in ("params", "batch_stats")}
  feats = model.apply(variables, x)["backbone"]
  outs = jax.jit(lambda v, f: head.apply(v, f))(head_vars, feats)
  ref = np.load(os.path.join(d, "head_forward_outputs.npz"))
  assert len(outs) == 3
  for i, out in enumerate(outs):  # pam_cam, pam, cam
    np.testing.assert_allclose(np.asarray(out), ref[f"out{i}"].transpose(0, 2, 3, 1), rtol=0, atol=4 * floor)
  # forward_test is pam_cam.
  np.testing.assert_allclose(np.asarray(model.apply(variables, x)["decode"]), np.asarray(outs[0]), rtol=0, atol=1e-6)


def test_ema_bases_move_by_momentum_in_training_only():
  rng = np.random.default_rng(4)
  feats = jnp.asarray(rng.normal(size=(2, 4, 5, 6)), jnp.float32)
  module = EMAModule(6, num_bases=3, num_stages=2, momentum=0.1)
  variables = module.init(jax.random.PRNGKey(0), feats)
  bases = np.asarray(variables["batch_stats"]["bases"])
  assert bases.shape == (1, 6, 3)
  np.testing.assert_allclose(np.linalg.norm(bases, axis=1), 1.0, rtol=1e-6)  # L2 over channels
  _, unchanged = module.apply(variables, feats, False, mutable=["batch_stats"])
  np.testing.assert_array_equal(unchanged["batch_stats"]["bases"], bases)
  _, updated = module.apply(variables, feats, True, mutable=["batch_stats"])

  # mmseg's EMAModule in numpy: EM steps, then the batch mean of the bases, L2-normalised, mixed in.
  flat = np.asarray(feats).reshape(2, 20, 6).astype(np.float64)
  b = np.repeat(bases.astype(np.float64), 2, 0)
  for _ in range(2):
    logits = np.einsum("nlc,nck->nlk", flat, b)
    att = np.exp(logits - logits.max(2, keepdims=True))
    att /= att.sum(2, keepdims=True)
    att_normed = att / att.sum(1, keepdims=True)
    b = np.einsum("nlc,nlk->nck", flat, att_normed)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
  mean = b.mean(0, keepdims=True)
  mean /= np.linalg.norm(mean, axis=1, keepdims=True)
  np.testing.assert_allclose(updated["batch_stats"]["bases"], 0.9 * bases + 0.1 * mean, rtol=1e-5, atol=1e-6)


def test_ema_reconstruction_gives_no_gradient_to_its_input():
  feats = jnp.asarray(np.random.default_rng(5).normal(size=(1, 3, 3, 4)), jnp.float32)
  module = EMAModule(4, num_bases=2, num_stages=1, momentum=0.1)
  variables = module.init(jax.random.PRNGKey(0), feats)
  grad = jax.grad(lambda f: module.apply(variables, f).sum())(feats)
  assert not np.any(np.asarray(grad))  # mmseg runs the EM steps under torch.no_grad()


@pytest.mark.parametrize("head,error", [
    (dict(type="NLHead", mode="cosine"), "mode='cosine'"),
    (dict(type="GCHead", pooling_type="max"), "pooling_type='max'"),
    (dict(type="GCHead", fusion_types=("channel_sub",)), "fusion_types"),
    (dict(type="NLHead", num_convs=1), "num_convs=1"),
    (dict(type="EMAHead", ema_channels=8, num_bases=4, num_stages=0), "num_stages=0"),
    (dict(type="ANNHead", in_channels=(32, 64), in_index=(2, 3), project_channels=4,
          query_scales=(1, 2)), "query_scales=(1, 2)"),
    (dict(type="CCHead", channels=4), "in_channels=4"),
    (dict(type="NLHead", in_channels=32), "in_channels=32"),
])
def test_bad_config_errors_name_the_argument(head, error):
  cfg = {**HEADS[head["type"]].TINY, **head}
  module = HEADS[cfg.pop("type")](**cfg)
  feats = [jnp.zeros((1, 64 // s, 64 // s, c)) for c, s in ((8, 4), (16, 8), (32, 16), (64, 32))]
  with pytest.raises(ValueError, match=error.replace("(", r"\(").replace(")", r"\)")):
    module.init(jax.random.PRNGKey(0), feats)


def test_nl_head_is_fcn_with_a_non_local_block_between_its_convs():
  head = NLHead(**NLHead.TINY)
  feats = [jnp.zeros((1, 64 // s, 64 // s, c)) for c, s in ((8, 4), (16, 8), (32, 16), (64, 32))]
  params = jax.eval_shape(head.init, jax.random.PRNGKey(0), feats)["params"]
  assert sorted(params) == ["conv_cat", "conv_seg", "convs", "nl_block"]
  assert sorted(params["convs"]) == ["0", "1"]
  assert sorted(params["nl_block"]) == ["conv_out", "g", "phi", "theta"]
