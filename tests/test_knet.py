"""K-Net behaviour the generic registry / oracle / conformance tests do not see: every stage's
eval logits against mmseg's (knet_stage_logits.npz), KernelUpdator and the per-image dynamic
convolution against torch transcriptions of mmseg's code, config errors."""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ORACLE, require
from segjax.convert import convert_checkpoint
from segjax.models import build_segmentor
from segjax.models.heads.knet_head import IterativeDecodeHead, KernelUpdator, dynamic_conv

torch = pytest.importorskip("torch")
F = torch.nn.functional


def nhwc(a):
  return np.asarray(a).transpose(0, 2, 3, 1)


def stage_logits(model, head, variables, x):
  """Eval-mode logits of every K-Net stage and the decode head's test logits."""
  out = model.apply(variables, x)
  head_vars = {c: v["decode_head"] for c, v in variables.items() if "decode_head" in v}
  return head.apply(head_vars, out["backbone"], all_stages=True), out["decode"]


# Each stage as the generic oracle test judges an output: within 20x the change half a float32 ulp
# of input rounding makes (float64), or 5x segjax's own float32-float64 distance.
@pytest.mark.parametrize("name", ["knet_s3_upernet_r50-d8", "knet_s3_upernet_swin-t"])
def test_every_stage_matches_mmseg(name):
  d = require(os.path.join(ORACLE, name))
  cfg = json.load(open(os.path.join(d, "mmseg_model.json")))
  model = build_segmentor(cfg)
  head = IterativeDecodeHead(**{k: v for k, v in cfg["decode_head"].items() if k != "type"})
  x = nhwc(np.load(os.path.join(d, "input.npy")))
  variables = convert_checkpoint(os.path.join(d, "model.pth"), model, x.shape)
  run = jax.jit(functools.partial(stage_logits, model, head))
  stages, decode = jax.tree.map(np.asarray, run(variables, x))
  np.testing.assert_array_equal(stages[-1], decode)  # forward_test is the last stage
  with jax.enable_x64(True):
    v64 = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
    x64 = x.astype(np.float64)
    exact = [np.asarray(s) for s in run(v64, x64)[0]]
    rounded = x64 * (1 + np.random.default_rng(0).choice([-1.0, 1.0], x.shape) * 2.0**-24)
    noise = [np.abs(np.asarray(s) - e).max() for s, e in zip(run(v64, rounded)[0], exact)]
  reference = np.load(os.path.join(d, "knet_stage_logits.npz"))
  assert len(stages) == len(reference) == 4
  for i, (got, e, n) in enumerate(zip(stages, exact, noise)):
    tolerance = max(20 * n, 5 * np.abs(got - e).max())
    err = np.abs(got - nhwc(reference[f"stage{i}"])).max()
    assert err <= tolerance, f"stage{i}: max |segjax - mmseg| = {err:.3g} > {tolerance:.3g}"


def torch_kernel_updator(p, update_feature, input_feature, in_channels, feat_channels,
                         gate_norm_act, activate_out):
  """mmseg's KernelUpdator.forward (gate_sigmoid=True, LN, ReLU) transcribed with torch ops on
  the Flax parameters ``p``."""
  t = lambda a: torch.tensor(np.asarray(a, np.float64))
  lin = lambda name, x: x @ t(p[name]["kernel"]) + t(p[name]["bias"])
  ln = lambda name, x: F.layer_norm(x, x.shape[-1:], t(p[name]["scale"]), t(p[name]["bias"]))
  update_feature = t(update_feature).reshape(-1, in_channels)
  num_proposals = update_feature.size(0)
  parameters = lin("dynamic_layer", update_feature)
  param_in = parameters[:, :feat_channels].view(-1, feat_channels)
  param_out = parameters[:, -feat_channels:].view(-1, feat_channels)
  input_feats = lin("input_layer", t(input_feature).reshape(num_proposals, -1, feat_channels))
  input_in = input_feats[..., :feat_channels]
  input_out = input_feats[..., -feat_channels:]
  gate_feats = input_in * param_in.unsqueeze(-2)
  if gate_norm_act:
    gate_feats = F.relu(ln("gate_norm", gate_feats))
  input_gate = ln("input_norm_in", lin("input_gate", gate_feats)).sigmoid()
  update_gate = ln("norm_in", lin("update_gate", gate_feats)).sigmoid()
  param_out = ln("norm_out", param_out)
  input_out = ln("input_norm_out", input_out)
  if activate_out:
    param_out, input_out = F.relu(param_out), F.relu(input_out)
  features = update_gate * param_out.unsqueeze(-2) + input_gate * input_out
  return F.relu(ln("fc_norm", lin("fc_layer", features))).numpy()


@pytest.mark.parametrize("gate_norm_act,activate_out", [(False, False), (True, True)])
def test_kernel_updator_is_mmseg_formula(gate_norm_act, activate_out):
  # in_channels 4 under 8-channel kernels: mmseg's configs run the updator on 256-channel halves
  # of 512-channel kernels.
  rng = np.random.default_rng(0)
  update_feature = rng.normal(size=(2, 5, 8))
  input_feature = rng.normal(size=(2, 5, 1, 8))
  updator = KernelUpdator(in_channels=4, feat_channels=4, out_channels=4,
                          gate_norm_act=gate_norm_act, activate_out=activate_out)
  with jax.enable_x64(True):
    variables = updator.init(jax.random.PRNGKey(0), update_feature, input_feature)
    params = jax.tree.map(lambda a: a + 0.1 * np.random.default_rng(1).normal(size=a.shape), variables["params"])
    got = updator.apply({"params": params}, update_feature, input_feature)
  expected = torch_kernel_updator(params, update_feature, input_feature, 4, 4, gate_norm_act, activate_out)
  assert got.shape == (20, 1, 4)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_dynamic_conv_is_torch_conv2d_per_image(kernel_size):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 6, 7, 5)).astype(np.float32)
  kernels = rng.normal(size=(2, 4, 5, kernel_size, kernel_size)).astype(np.float32)
  got = dynamic_conv(jnp.asarray(x), jnp.asarray(kernels), kernel_size // 2)
  expected = torch.cat([F.conv2d(torch.tensor(x[i:i + 1]).permute(0, 3, 1, 2), torch.tensor(kernels[i]),
                                 padding=kernel_size // 2) for i in range(2)])
  np.testing.assert_allclose(np.asarray(got), expected.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-5)


def test_bad_configs_name_the_problem():
  feats = [jnp.zeros((1, 64 // s, 64 // s, c)) for c, s in ((8, 4), (16, 8), (32, 16), (64, 32))]
  tiny = IterativeDecodeHead.TINY

  def init(**changes):
    head = IterativeDecodeHead(**{**tiny, **changes})
    return head.init(jax.random.PRNGKey(0), feats)

  with pytest.raises(ValueError, match="num_stages=3 but 2 kernel_update_head"):
    init(num_stages=3)
  with pytest.raises(ValueError, match="num_classes=4 differs from kernel_generate_head.num_classes=3"):
    init(num_classes=4)
  update = dict(tiny["kernel_update_head"][0])
  with pytest.raises(ValueError, match="kernel_updator_cfg.type='DynamicConv' is not available"):
    init(kernel_update_head=(dict(update, kernel_updator_cfg=None),) * 2)
  with pytest.raises(ValueError, match="in_channels=16"):
    init(kernel_update_head=(dict(update, in_channels=16, out_channels=16),) * 2)
  with pytest.raises(ValueError, match="kernel_update_head\\[0\\].type='Nope'"):
    init(kernel_update_head=(dict(update, type="Nope"),) * 2)
