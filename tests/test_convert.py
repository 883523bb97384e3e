"""Checkpoint rules on synthetic state dicts: renames, skips, Conv1d layout, qkv split, mmseg's
pos_embed resize (against PyTorch's bicubic interpolation), the shape-only check, and ResNet's
release sources."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from segjax.convert import (CheckpointMismatchError, CheckpointRules, check_state_dict,
                            convert_backbone_checkpoint, convert_state_dict, resize_pos_embed,
                            resize_pos_embed_to_target, split_qkv, to_state_dict)
from segjax.models.backbones.resnet import ResNetV1c

RNG = np.random.default_rng(0)


def shapes(tree):
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, np.float32), tree,
                      is_leaf=lambda x: isinstance(x, tuple))


def test_renames_apply_in_order_and_skips_drop_keys():
  target = shapes({"params": {"blocks": {"0": {"proj": {"kernel": (4, 6), "bias": (6,)}}}},
                   "batch_stats": {"blocks": {"0": {"norm": {"mean": (6,), "var": (6,)}}}}})
  weight = RNG.normal(size=(6, 4)).astype(np.float32)
  state = {
      "layers.0.fc.weight": weight, "layers.0.fc.bias": np.arange(6.0),
      "layers.0.bn.running_mean": np.zeros(6), "layers.0.bn.running_var": np.ones(6),
      "layers.0.bn.num_batches_tracked": np.array(3),  # skipped for every family
      "layers.0.attn.relative_position_index": np.zeros((4, 4), np.int64),
  }
  # The second rename sees the first one's output: "layers." -> "stage." -> "blocks.".
  rules = CheckpointRules(skip=(r"\.relative_position_index$",),
                          renames=((r"^layers\.", "stage."), (r"^stage\.", "blocks."),
                                   (r"\.fc\.", ".proj."), (r"\.bn\.", ".norm.")))
  out = convert_state_dict(state, target, {"": rules})
  np.testing.assert_array_equal(out["params"]["blocks"]["0"]["proj"]["kernel"], weight.T)
  np.testing.assert_array_equal(out["params"]["blocks"]["0"]["proj"]["bias"], np.arange(6.0))
  assert out["batch_stats"]["blocks"]["0"]["norm"]["var"].dtype == np.float32
  with pytest.raises(CheckpointMismatchError) as err:
    convert_state_dict(state, target)  # without the rules nothing fits: every key is listed
  message = str(err.value)
  assert "layers.0.fc.weight" in message and "layers.0.attn.relative_position_index" in message
  assert "params/blocks/0/proj/kernel" in message and "num_batches_tracked" not in message


def test_rules_apply_only_under_their_prefix():
  target = shapes({"params": {"backbone": {"w": (2,)}, "decode_head": {"fc": {"bias": (3,)}}}})
  state = {"backbone.w": np.ones(2), "backbone.fc.bias": np.ones(5), "decode_head.fc.bias": np.ones(3)}
  out = convert_state_dict(state, target, {"backbone.": CheckpointRules(skip=(r"^fc\.",))})
  assert out["params"]["decode_head"]["fc"]["bias"].shape == (3,)
  with pytest.raises(CheckpointMismatchError, match="decode_head.fc.bias"):
    convert_state_dict({**state, "decode_head.fc.bias": np.ones(4)}, target,
                       {"backbone.": CheckpointRules(skip=(r"fc\.",))})


def test_conv1d_kernel_matches_pytorch():
  torch = pytest.importorskip("torch")
  conv = torch.nn.Conv1d(5, 7, kernel_size=3)
  x = RNG.normal(size=(2, 5, 11)).astype(np.float32)  # (N, C, L)
  expected = conv(torch.from_numpy(x)).detach().numpy()
  state = {k: v.detach().numpy() for k, v in conv.state_dict().items()}
  module = nn.Conv(7, kernel_size=(3,), padding="VALID")
  target = jax.eval_shape(module.init, jax.random.PRNGKey(0), x.transpose(0, 2, 1))
  variables = convert_state_dict(state, target)
  assert variables["params"]["kernel"].shape == (3, 5, 7)  # (K, I, O)
  got = module.apply(variables, x.transpose(0, 2, 1))
  np.testing.assert_allclose(np.asarray(got).transpose(0, 2, 1), expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(to_state_dict(variables)["weight"], state["weight"])


def test_fused_qkv_split_into_separate_projections_or_kept():
  c = 4
  weight = RNG.normal(size=(3 * c, c)).astype(np.float32)  # nn.Linear(C, 3C): (out, in)
  bias = RNG.normal(size=(3 * c,)).astype(np.float32)
  x = RNG.normal(size=(2, c)).astype(np.float32)
  fused = x @ weight.T + bias  # PyTorch's qkv output, q | k | v along the last axis
  state = {"layers.0.attn.qkv.weight": weight, "layers.0.attn.qkv.bias": bias}
  separate = shapes({"params": {"layers": {"0": {"attn": {
      name: {"kernel": (c, c), "bias": (c,)} for name in ("q", "k", "v")}}}}})
  rules = {"": CheckpointRules(transforms=((r"\.qkv\.(weight|bias)$", split_qkv()),))}
  out = convert_state_dict(state, separate, rules)["params"]["layers"]["0"]["attn"]
  for i, name in enumerate(("q", "k", "v")):
    np.testing.assert_allclose(x @ out[name]["kernel"] + out[name]["bias"], fused[:, i * c:(i + 1) * c],
                               rtol=1e-6)
  kept = shapes({"params": {"layers": {"0": {"attn": {"qkv": {"kernel": (c, 3 * c), "bias": (3 * c,)}}}}}})
  out = convert_state_dict(state, kept)["params"]["layers"]["0"]["attn"]["qkv"]
  np.testing.assert_allclose(x @ out["kernel"] + out["bias"], fused, rtol=1e-6)
  with pytest.raises(CheckpointMismatchError, match="equal projections"):
    convert_state_dict({"attn.qkv.weight": np.ones((10, c))}, separate, rules)


def _mmseg_resize_pos_embed(torch, pos_embed, input_shape, pos_shape):
  """mmseg's VisionTransformer.resize_pos_embed (mode='bicubic'), as in mmseg/models/backbones/vit.py."""
  pos_h, pos_w = pos_shape
  cls_token_weight = pos_embed[:, 0:1]
  weight = pos_embed[:, (-1 * pos_h * pos_w):]
  weight = weight.reshape(1, pos_h, pos_w, pos_embed.shape[2]).permute(0, 3, 1, 2)
  weight = torch.nn.functional.interpolate(weight, size=input_shape, mode="bicubic", align_corners=False)
  weight = torch.flatten(weight, 2).transpose(1, 2)
  return torch.cat((cls_token_weight, weight), dim=1)


@pytest.mark.parametrize("side,grid", [(14, (32, 32)), (14, (7, 7)), (24, (32, 64)), (5, (5, 5))])
def test_pos_embed_resize_matches_pytorch_bicubic(side, grid):
  torch = pytest.importorskip("torch")
  pos_embed = RNG.normal(size=(1, 1 + side * side, 8)).astype(np.float32)
  expected = _mmseg_resize_pos_embed(torch, torch.from_numpy(pos_embed), grid, (side, side)).numpy()
  got = np.asarray(resize_pos_embed(pos_embed, grid))
  assert got.shape == expected.shape == (1, 1 + grid[0] * grid[1], 8)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(got[:, 0], pos_embed[:, 0])  # the cls token is kept


def test_pos_embed_resized_to_the_model_grid_also_when_only_shapes_are_checked():
  pos_embed = RNG.normal(size=(1, 1 + 14 * 14, 8)).astype(np.float32)
  target = shapes({"params": {"backbone": {"pos_embed": (1, 1 + 32 * 32, 8)}}})
  rules = {"backbone.": CheckpointRules(transforms=((r"^pos_embed$", resize_pos_embed_to_target()),))}
  out = convert_state_dict({"backbone.pos_embed": pos_embed}, target, rules)
  np.testing.assert_allclose(out["params"]["backbone"]["pos_embed"], resize_pos_embed(pos_embed, (32, 32)))
  checked = check_state_dict({"backbone.pos_embed": (1, 197, 8)}, target, rules)
  assert checked["params"]["backbone"]["pos_embed"].shape == (1, 1025, 8)
  with pytest.raises(CheckpointMismatchError, match="square"):
    convert_state_dict({"backbone.pos_embed": pos_embed},
                       shapes({"params": {"backbone": {"pos_embed": (1, 1 + 32 * 64, 8)}}}), rules)


def test_shape_check_reports_what_conversion_reports():
  target = shapes({"params": {"conv": {"kernel": (3, 3, 2, 4)}, "head": {"bias": (5,)}}})
  key_shapes = {"conv.weight": (4, 2, 3, 3), "head.bias": (6,), "extra.weight": (1,)}
  with pytest.raises(CheckpointMismatchError) as by_shape:
    check_state_dict(key_shapes, target)
  with pytest.raises(CheckpointMismatchError) as by_value:
    convert_state_dict({k: np.zeros(s, np.float32) for k, s in key_shapes.items()}, target)
  assert str(by_shape.value) == str(by_value.value)
  assert "head.bias: checkpoint (6,) (in Flax layout) vs model params/head/bias (5,)" in str(by_shape.value)
  assert "extra.weight" in str(by_shape.value)
  checked = check_state_dict({"conv.weight": (4, 2, 3, 3), "head.bias": (5,)}, target)
  assert checked["params"]["conv"]["kernel"].shape == (3, 3, 2, 4)


def test_resnet_release_sources(tmp_path):
  torch = pytest.importorskip("torch")
  backbone = ResNetV1c(depth=18, stem_channels=8, base_channels=8)
  target = jax.eval_shape(backbone.init, jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3), np.float32))
  variables = jax.tree.map(lambda s: RNG.normal(size=s.shape).astype(np.float32), target)
  weights = to_state_dict(variables)
  save = lambda name, state: (torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()},
                                         str(tmp_path / name)), str(tmp_path / name))[1]
  imagenet = save("imagenet.pth", {**weights, "fc.weight": np.zeros((10, 64)), "fc.bias": np.zeros(10)})
  segmentor = save("segmentor.pth", {**{f"backbone.{k}": v for k, v in weights.items()},
                                     "decode_head.conv_seg.weight": np.zeros((2, 8, 1, 1))})
  mmcls = save("mmcls.pth", {**{f"backbone.{k}": v for k, v in weights.items()},
                             "head.fc.weight": np.zeros((10, 64))})
  for path, source in ((imagenet, "imagenet"), (segmentor, "mmseg"), (mmcls, "mmcls"),
                       (imagenet, None), (segmentor, None)):  # None: model.pretrained's default
    out = convert_backbone_checkpoint(path, target, "ResNetV1c", source)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(variables)):
      np.testing.assert_array_equal(a, b)
  with pytest.raises(CheckpointMismatchError, match="with no checkpoint key"):
    convert_backbone_checkpoint(imagenet, target, ResNetV1c, "mmseg")  # it has no backbone.* keys
  with pytest.raises(CheckpointMismatchError, match=r"ResNetV1c has checkpoint rules for source\(s\) \['imagenet', 'mmcls', 'mmseg'\], not 'timm'"):
    convert_backbone_checkpoint(imagenet, target, ResNetV1c, "timm")
