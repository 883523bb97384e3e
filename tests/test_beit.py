"""BEiT / MAE and Feature2Pyramid behaviour the oracle cases do not reach: the relative position
index and BEiTAttention in every bias mode against mmseg's code (in torch), drop path on both
residual branches, the input-size rule, Feature2Pyramid's second operation list against torch,
and mmseg's layer-wise lr decay (LayerDecayOptimizerConstructor) on the full-size configs."""
import ast
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from conftest import ROOT, SHARED, require
from segjax.models import build_module
from segjax.models.backbones import beit
from segjax.models.necks.featurepyramid import Feature2Pyramid

torch = pytest.importorskip("torch")
MMSEG_SRC = os.path.join(ROOT, "..", "mmseg_src", "mmseg")


def mmseg_relative_position_index(wh, ww):
  """mmseg BEiTAttention._init_rel_pos_embedding's buffer, as mmseg computes it."""
  coords = torch.stack(torch.meshgrid([torch.arange(wh), torch.arange(ww)], indexing="ij"))
  coords_flatten = torch.flatten(coords, 1)
  relative_coords = (coords_flatten[:, :, None] - coords_flatten[:, None, :]).permute(1, 2, 0).contiguous()
  relative_coords[:, :, 0] += wh - 1
  relative_coords[:, :, 1] += ww - 1
  relative_coords[:, :, 0] *= 2 * ww - 1
  num_relative_distance = (2 * wh - 1) * (2 * ww - 1) + 3
  index = torch.zeros(size=(wh * ww + 1,) * 2, dtype=relative_coords.dtype)
  index[1:, 1:] = relative_coords.sum(-1)
  index[0, 0:] = num_relative_distance - 3
  index[0:, 0] = num_relative_distance - 2
  index[0, 0] = num_relative_distance - 1
  return index


@pytest.mark.parametrize("window", [(3, 4), (4, 3), (14, 14)])
def test_relative_position_index_is_mmseg_buffer(window):
  np.testing.assert_array_equal(beit.relative_position_index(window),
                                mmseg_relative_position_index(*window).numpy())


def mmseg_attention(x, params, bias_mode, window, num_heads):
  """mmseg BEiTAttention.forward in torch, on segjax's parameters (Flax layout)."""
  t = lambda a: torch.from_numpy(np.asarray(a, np.float64))
  x = t(x)
  b, n, c = x.shape
  weight = t(params["qkv"]["kernel"]).T
  if bias_mode == "qv_bias":
    qkv_bias = torch.cat((t(params["q_bias"]), torch.zeros(c, dtype=x.dtype), t(params["v_bias"])))
  else:
    qkv_bias = t(params["qkv"]["bias"]) if bias_mode else None
  qkv = torch.nn.functional.linear(x, weight, qkv_bias)
  qkv = qkv.reshape(b, n, 3, num_heads, -1).permute(2, 0, 3, 1, 4)
  q, k, v = qkv[0], qkv[1], qkv[2]
  attn = (q * (c // num_heads) ** -0.5) @ k.transpose(-2, -1)
  wh, ww = window
  index = mmseg_relative_position_index(wh, ww)
  bias = t(params["relative_position_bias_table"])[index.view(-1)].view(wh * ww + 1, wh * ww + 1, -1)
  attn = (attn + bias.permute(2, 0, 1).unsqueeze(0)).softmax(dim=-1)
  out = (attn @ v).transpose(1, 2).reshape(b, n, c)
  return torch.nn.functional.linear(out, t(params["proj"]["kernel"]).T, t(params["proj"]["bias"])).numpy()


def randomised(params, seed):
  """Every parameter drawn N(0, 0.5), so zero-initialised biases and tables take part."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(tree, [0.5 * jax.random.normal(k, p.shape, p.dtype) for k, p in zip(keys, leaves)])


@pytest.mark.parametrize("bias_mode", ["qv_bias", True, False])
def test_attention_matches_mmseg_in_each_bias_mode(bias_mode):
  window, heads = (3, 4), 4
  attn = beit.BEiTAttention(16, heads, window, bias_mode)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 13, 16)), jnp.float32)
  params = randomised(attn.init(jax.random.PRNGKey(0), x)["params"], 1)
  assert ("q_bias" in params) == (bias_mode == "qv_bias")
  assert ("bias" in params["qkv"]) == (bias_mode is True)
  got = attn.apply({"params": params}, x)
  np.testing.assert_allclose(got, mmseg_attention(x, params, bias_mode, window, heads), atol=2e-5)


def test_drop_path_drops_each_residual_branch_per_sample():
  """mmcv DropPath on both branches, drawn independently: each sample's output is one of the
  four eval-mode outputs with the kept branches' layer scales divided by 1 - rate."""
  rate, keep = 0.5, 0.5
  layer = beit.BEiTTransformerEncoderLayer(16, 2, 32, drop_path_rate=rate, window_size=(2, 2))
  plain = beit.BEiTTransformerEncoderLayer(16, 2, 32, window_size=(2, 2))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(64, 5, 16)), jnp.float32)
  params = randomised(layer.init(jax.random.PRNGKey(0), x)["params"], 2)
  got = layer.apply({"params": params}, x, True, rngs={"dropout": jax.random.PRNGKey(5)})
  np.testing.assert_allclose(layer.apply({"params": params}, x, True), plain.apply({"params": params}, x),
                             atol=1e-6)  # no dropout rng: deterministic
  candidates = []
  for scale_1 in (1 / keep, 0.0):
    for scale_2 in (1 / keep, 0.0):
      scaled = dict(params, gamma_1=params["gamma_1"] * scale_1, gamma_2=params["gamma_2"] * scale_2)
      candidates.append(plain.apply({"params": scaled}, x))
  distances = np.stack([np.abs(np.asarray(got - c)).max(axis=(1, 2)) for c in candidates])
  assert distances.min(axis=0).max() < 1e-5
  chosen = distances.argmin(axis=0)
  assert len(set(chosen.tolist())) == 4  # with 64 samples at rate 0.5, every combination occurs


def test_input_must_give_the_img_size_grid():
  model = beit.BEiT(**dict(beit.BEiT.TINY, img_size=(48, 64)))
  with pytest.raises(ValueError, match=r"img_size=\(48, 64\).*\(3, 4\)"):
    model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))


def test_mae_takes_mmseg_arguments_only():
  with pytest.raises(ValueError, match="qv_bias"):
    build_module(dict(type="MAE", qv_bias=True), "backbone")


def test_feature2pyramid_without_x4_against_torch():
  """Without a 4 among rescales, mmseg applies x2 (ConvTranspose2d), identity, 2x2 and 4x4 max
  pools (floor mode: a 7-wide map pools to 3 and 1)."""
  neck = Feature2Pyramid(embed_dim=6, rescales=(2, 1, 0.5, 0.25))
  rng = np.random.default_rng(0)
  feats = [jnp.asarray(rng.normal(size=(2, 6, 7, 6)), jnp.float32) for _ in range(4)]
  variables = neck.init(jax.random.PRNGKey(0), feats)
  assert set(variables["params"]) == {"upsample_2x"}
  variables = {"params": randomised(variables["params"], 3)}
  got = neck.apply(variables, feats)
  up = torch.nn.ConvTranspose2d(6, 6, kernel_size=2, stride=2)
  with torch.no_grad():  # Flax (k, k, out, in) -> PyTorch (in, out, k, k)
    up.weight.copy_(torch.from_numpy(np.array(variables["params"]["upsample_2x"]["0"]["kernel"]).transpose(3, 2, 0, 1)))
    up.bias.copy_(torch.from_numpy(np.array(variables["params"]["upsample_2x"]["0"]["bias"])))
  nchw = [torch.from_numpy(np.array(f).transpose(0, 3, 1, 2)) for f in feats]
  with torch.no_grad():
    expected = [up(nchw[0]), nchw[1], torch.nn.MaxPool2d(2, 2)(nchw[2]), torch.nn.MaxPool2d(4, 4)(nchw[3])]
  for g, e in zip(got, expected):
    np.testing.assert_allclose(g, e.numpy().transpose(0, 2, 3, 1), atol=1e-5)
  assert [g.shape[1:3] for g in got] == [(12, 14), (6, 7), (3, 3), (1, 1)]


def test_feature2pyramid_rejects_other_rescales():
  feats = [jnp.zeros((1, 4, 4, 8))] * 4
  with pytest.raises(ValueError, match=r"hold \[3\]"):
    Feature2Pyramid(8, rescales=(4, 2, 1, 3)).init(jax.random.PRNGKey(0), feats)
  with pytest.raises(ValueError, match="3 inputs"):
    Feature2Pyramid(8).init(jax.random.PRNGKey(0), feats[:3])
  with pytest.raises(ValueError, match="embed_dim"):
    Feature2Pyramid(4).init(jax.random.PRNGKey(0), feats)


def mmseg_get_layer_id_for_vit():
  """mmseg's own ``get_layer_id_for_vit``, read from its source file."""
  path = require(os.path.join(MMSEG_SRC, "core", "optimizers", "layer_decay_optimizer_constructor.py"))
  tree = ast.parse(open(path).read())
  function = next(node for node in tree.body
                  if isinstance(node, ast.FunctionDef) and node.name == "get_layer_id_for_vit")
  namespace = {}
  exec(compile(ast.Module([function], []), path, "exec"), namespace)
  return namespace["get_layer_id_for_vit"]


BUFFERS = ("running_mean", "running_var", "num_batches_tracked", "relative_position_index")


@pytest.mark.parametrize("config", ["beit/upernet_beit-base_8x2_640x640_160k_ade20k.py",
                                    "mae/upernet_mae-base_fp16_8x2_512x512_160k_ade20k.py"])
def test_layer_decay_constructor_gives_mmseg_groups(config):
  """Every parameter of the full-size model gets the lr scale and weight decay of mmseg's
  LayerDecayOptimizerConstructor (layer_decay_rate -> decay_rate, layer id by name over
  num_layers + 2 groups, no decay for 1-D, '.bias' and the bare names 'pos_embed'/'cls_token'),
  computed here on mmseg's key listing of that config."""
  from configs import zoo
  from segjax.config import to_plain
  from segjax.convert import conformance
  from segjax.convert.mmseg_config import config_from_file
  from segjax.train import optim

  get_layer_id_for_vit = mmseg_get_layer_id_for_vit()
  reference = require(os.path.join(SHARED, "reference"))
  cfg = config_from_file(zoo.find(config))
  paramwise = dict(cfg.optimizer.paramwise_cfg)
  assert cfg.optimizer.constructor == "LayerDecayOptimizerConstructor" and "layer_decay_rate" in paramwise
  num_layers, rate = paramwise["num_layers"] + 2, paramwise["layer_decay_rate"]
  index = conformance.load_index(reference)
  listing = conformance.key_listing(reference, index[config]["keys"])
  expected = {}
  for name, shape in listing.items():
    if name.rsplit(".", 1)[1] in BUFFERS:
      continue
    no_decay = len(shape) == 1 or name.endswith(".bias") or name in ("pos_embed", "cls_token")
    expected[name] = (rate ** (num_layers - get_layer_id_for_vit(name, num_layers) - 1), 0.0 if no_decay else 1.0)

  params = conformance.abstract_variables(to_plain(cfg.model))["params"]
  lr, wd = optim.multipliers(cfg, params)
  flat_lr, flat_wd = traverse_util.flatten_dict(lr), traverse_util.flatten_dict(wd)
  got = {optim.torch_name(path): (flat_lr[path], flat_wd[path]) for path in flat_lr}
  assert set(got) == set(expected)
  wrong = {name: (got[name], expected[name]) for name in expected
           if got[name][1] != expected[name][1] or not np.isclose(got[name][0], expected[name][0], rtol=1e-12)}
  assert not wrong
  assert len({v[0] for v in expected.values()}) == num_layers  # ids 0 .. num_layers + 1, one per group


def test_layer_wise_vit_decay_type_as_mmseg_names_it():
  """mmseg's deprecation warning asks for LearningRateDecayOptimizerConstructor with
  ``decay_type='layer_wise_vit'``; it assigns the same ids as LayerDecayOptimizerConstructor."""
  from segjax.train import optim

  params = traverse_util.unflatten_dict({
      ("backbone", "layers", "4", "attn", "qkv", "kernel"): jnp.ones((8, 24)),
      ("backbone", "cls_token"): jnp.ones((1, 1, 8)),
      ("neck", "upsample_2x", "0", "kernel"): jnp.ones((2, 2, 8, 8))})
  old, _ = optim.layer_decay_multipliers(params, dict(num_layers=12, layer_decay_rate=0.9), "MAE")
  new, _ = optim.layer_decay_multipliers(params, dict(num_layers=12, decay_rate=0.9, decay_type="layer_wise_vit"), "MAE")
  assert old == new
  assert new["backbone"]["layers"]["4"]["attn"]["qkv"]["kernel"] == pytest.approx(0.9 ** 8)  # id 5 of 0..13
  assert new["backbone"]["cls_token"] == pytest.approx(0.9 ** 13) and new["neck"]["upsample_2x"]["0"]["kernel"] == 1.0
