"""FPN (segjax.models.necks.fpn) against MMSegmentation: the oracle's fpn_r50 neck outputs, a
PyTorch transcription of mmseg's FPN for every extra-level mode and level range, and the
parameter names of every FPN config in mmseg's zoo."""
import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from conftest import ORACLE, SHARED, require
from segjax import layers
from segjax.convert import convert_state_dict, load_torch_checkpoint
from segjax.convert.mmseg_config import load_model_dict
from segjax.models import build_module
from segjax.models.necks.fpn import FPN

BN = {"type": "BN"}
RELU = {"type": "ReLU"}


def nhwc(a):
  return np.asarray(a).transpose(0, 2, 3, 1)


def test_resize_nearest_matches_torch():
  torch = pytest.importorskip("torch")
  import torch.nn.functional as F
  # These sizes include 51 pairs where floor(dst * in/out) in float32 and in exact arithmetic
  # disagree (2 -> 82, 6 -> 74, ...); a pixel-centre rule (jax.image.resize) differs at 2 -> 3.
  for in_size in range(1, 40):
    src = torch.arange(in_size, dtype=torch.float32).reshape(1, 1, in_size, 1)
    for out_size in range(1, 130):
      want = F.interpolate(src, size=(out_size, 1), mode="nearest")[0, 0, :, 0].numpy()
      np.testing.assert_array_equal(layers._nearest_indices(in_size, out_size), want,
                                    err_msg=f"{in_size} -> {out_size}")
  x = np.random.default_rng(0).normal(size=(2, 3, 5, 7)).astype(np.float32)
  want = nhwc(F.interpolate(torch.from_numpy(x), size=(9, 4), mode="nearest").numpy())
  np.testing.assert_array_equal(layers.resize_nearest(nhwc(x), (9, 4)), want)


# --- the oracle: mmseg's sem_fpn ResNetV1c-50 + FPN at small width ----------------------------

class BackboneNeck(nn.Module):
  """The backbone and neck of a segmentor config, named as in its state_dict."""
  cfg: dict

  @nn.compact
  def __call__(self, x):
    feats = build_module(self.cfg["backbone"], "backbone")(name="backbone")(x, False)
    return build_module(self.cfg["neck"], "neck")(name="neck")(feats, False)


# As in test_oracle_models.py: float32's noise floor of each output is measured in float64 as the
# largest change that rounding the input alone (half an ulp, random signs) causes; mmseg's and
# segjax's float32 outputs each sit a few times that far from the float64 result. Here the floor
# is 2.3e-5 to 5.9e-5 per output and segjax lands 8.9e-5 to 2.2e-4 from mmseg (3.2-4.1x the
# floor); PyTorch's 'nearest' replaced by a pixel-centre rule moves them by 4.5.
NOISE_MULTIPLE = 20


@pytest.fixture(scope="module")
def fpn_r50():
  pytest.importorskip("torch")
  d = require(os.path.join(ORACLE, "fpn_r50"))
  cfg = json.load(open(os.path.join(d, "mmseg_model.json")))
  model = BackboneNeck(cfg)
  x = nhwc(np.load(os.path.join(d, "input.npy")))
  state = {k: v for k, v in load_torch_checkpoint(os.path.join(d, "model.pth")).items()
           if k.startswith(("backbone.", "neck."))}
  variables = convert_state_dict(state, jax.eval_shape(model.init, jax.random.PRNGKey(0), x))
  out = [np.asarray(o) for o in jax.jit(model.apply)(variables, x)]
  with jax.enable_x64(True):
    run = jax.jit(model.apply)  # its own cache: programs traced without x64 are not reused
    v64 = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
    x64 = x.astype(np.float64)
    exact = [np.asarray(o) for o in run(v64, x64)]
    rng = np.random.default_rng(0)
    noise = [0.0] * len(exact)
    for _ in range(2):
      rounded = run(v64, x64 * (1 + rng.choice([-1.0, 1.0], x.shape) * 2.0**-24))
      noise = [max(n, float(np.abs(np.asarray(r) - e).max())) for n, r, e in zip(noise, rounded, exact)]
  feats = np.load(os.path.join(d, "neck_feats.npz"))
  ref = [nhwc(feats[f"feat_{i}"]) for i in range(len(feats.files))]
  return out, exact, [NOISE_MULTIPLE * n for n in noise], ref


def test_fpn_r50_neck_outputs_match_mmseg(fpn_r50):
  out, _, tolerance, ref = fpn_r50
  assert [o.shape for o in out] == [r.shape for r in ref]
  for i, (o, r, tol) in enumerate(zip(out, ref, tolerance)):
    assert np.abs(o - r).max() <= tol, f"neck output {i}"


def test_fpn_r50_float64_matches_mmseg(fpn_r50):
  # Without segjax's own float32 rounding, what is left is mmseg's: the same floor holds.
  _, exact, tolerance, ref = fpn_r50
  for i, (e, r, tol) in enumerate(zip(exact, ref, tolerance)):
    assert np.abs(e - r).max() <= tol, f"neck output {i}"


# --- every extra-level mode and level range against a PyTorch transcription of mmseg's FPN -----

def torch_fpn(in_channels, out_channels, num_outs, start_level=0, end_level=-1,
              add_extra_convs=False, extra_convs_on_inputs=False, relu_before_extra_convs=False,
              no_norm_on_lateral=False, norm_cfg=None, act_cfg=None, upsample_cfg=None):
  """mmseg 0.30 ``FPN.__init__``/``forward`` line by line, with mmcv's ConvModule reduced to what
  FPN uses (conv without bias when a norm follows, BatchNorm ``bn``, ReLU)."""
  import torch.nn.functional as F
  from torch import nn as tnn
  upsample_cfg = dict(mode="nearest") if upsample_cfg is None else upsample_cfg

  class ConvModule(tnn.Module):
    def __init__(self, cin, cout, k, stride=1, padding=0, norm_cfg=None, act_cfg=None):
      super().__init__()
      self.conv = tnn.Conv2d(cin, cout, k, stride, padding, bias=norm_cfg is None)
      if norm_cfg is not None:
        self.bn = tnn.BatchNorm2d(cout)
      self.relu = act_cfg is not None

    def forward(self, x):
      x = self.conv(x)
      x = self.bn(x) if hasattr(self, "bn") else x
      return F.relu(x) if self.relu else x

  class TorchFPN(tnn.Module):
    def __init__(self):
      super().__init__()
      num_ins = len(in_channels)
      self.end = num_ins if end_level == -1 else end_level
      self.mode = add_extra_convs
      if add_extra_convs is True:
        self.mode = "on_input" if extra_convs_on_inputs else "on_output"
      self.lateral_convs, self.fpn_convs = tnn.ModuleList(), tnn.ModuleList()
      for i in range(start_level, self.end):
        self.lateral_convs.append(ConvModule(in_channels[i], out_channels, 1,
                                             norm_cfg=None if no_norm_on_lateral else norm_cfg,
                                             act_cfg=act_cfg))
        self.fpn_convs.append(ConvModule(out_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg,
                                         act_cfg=act_cfg))
      extra_levels = num_outs - self.end + start_level
      if self.mode and extra_levels >= 1:
        for i in range(extra_levels):
          cin = in_channels[self.end - 1] if i == 0 and self.mode == "on_input" else out_channels
          self.fpn_convs.append(ConvModule(cin, out_channels, 3, stride=2, padding=1,
                                           norm_cfg=norm_cfg, act_cfg=act_cfg))

    def forward(self, inputs):
      laterals = [conv(inputs[i + start_level]) for i, conv in enumerate(self.lateral_convs)]
      used = len(laterals)
      for i in range(used - 1, 0, -1):
        if "scale_factor" in upsample_cfg:
          laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], **upsample_cfg)
        else:
          laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[2:],
                                                            **upsample_cfg)
      outs = [self.fpn_convs[i](laterals[i]) for i in range(used)]
      if num_outs > len(outs):
        if not self.mode:
          for i in range(num_outs - used):
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        else:
          source = {"on_input": inputs[self.end - 1], "on_lateral": laterals[-1], "on_output": outs[-1]}
          outs.append(self.fpn_convs[used](source[self.mode]))
          for i in range(used + 1, num_outs):
            x = F.relu(outs[-1]) if relu_before_extra_convs else outs[-1]
            outs.append(self.fpn_convs[i](x))
      return tuple(outs)

  return TorchFPN()


IN_CHANNELS = [2, 3, 5, 7]
# A stride-2 pyramid with odd sizes, so nearest upsampling is not an exact doubling (3 -> 6 -> 12
# is, 12 -> 23 and 4 -> 8 -> 15 -> 30 are not) and extra levels halve odd sizes.
ODD_SIZES = [(23, 30), (12, 15), (6, 8), (3, 4)]
EVEN_SIZES = [(16, 24), (8, 12), (4, 6), (2, 3)]
CONFIGS = {
    "default": dict(num_outs=4),
    "max_pool_levels": dict(num_outs=6),
    "true_on_output": dict(num_outs=5, add_extra_convs=True),
    "true_extra_convs_on_inputs": dict(num_outs=5, add_extra_convs=True, extra_convs_on_inputs=True),
    "on_input_relu": dict(num_outs=6, add_extra_convs="on_input", relu_before_extra_convs=True),
    "on_lateral": dict(num_outs=6, add_extra_convs="on_lateral"),
    "on_output_start_level_1": dict(num_outs=5, start_level=1, add_extra_convs="on_output"),
    "max_pool_start_level_2": dict(num_outs=4, start_level=2),
    "end_level_3": dict(num_outs=2, start_level=1, end_level=3),
    "end_level_4_no_extra": dict(num_outs=3, start_level=1, end_level=4, add_extra_convs="on_input"),
    "bn_relu": dict(num_outs=5, add_extra_convs="on_input", norm_cfg=BN, act_cfg=RELU),
    "bn_no_norm_on_lateral": dict(num_outs=4, norm_cfg=BN, act_cfg=RELU, no_norm_on_lateral=True),
    "bilinear": dict(num_outs=4, upsample_cfg=dict(mode="bilinear")),
    "bilinear_align_corners": dict(num_outs=4, upsample_cfg=dict(mode="bilinear", align_corners=True)),
    "scale_factor_nearest": dict(num_outs=4, upsample_cfg=dict(scale_factor=2)),
    "scale_factor_bilinear": dict(num_outs=4, upsample_cfg=dict(mode="bilinear", scale_factor=2)),
}


def random_inputs(sizes, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=(2, c, h, w)).astype(np.float32) for c, (h, w) in zip(IN_CHANNELS, sizes)]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fpn_matches_torch_transcription(name):
  torch = pytest.importorskip("torch")
  kwargs = CONFIGS[name]
  sizes = EVEN_SIZES if "scale_factor" in name else ODD_SIZES
  reference = torch_fpn(IN_CHANNELS, 4, **kwargs).eval()
  with torch.no_grad():  # BatchNorm with statistics and affine parameters far from identity
    for m in reference.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        for t in (m.weight, m.bias, m.running_mean):
          t.normal_()
        m.running_var.uniform_(0.5, 2.0)
  inputs = random_inputs(sizes)
  with torch.no_grad():
    want = [o.numpy() for o in reference([torch.from_numpy(x) for x in inputs])]

  neck = FPN(IN_CHANNELS, 4, **kwargs)
  feats = [nhwc(x) for x in inputs]
  state = {k: v.numpy() for k, v in reference.state_dict().items()}
  # Strict: every mmseg key lands on a segjax parameter of its shape and no parameter is left over.
  variables = convert_state_dict(state, jax.eval_shape(neck.init, jax.random.PRNGKey(0), feats))
  got = neck.apply(variables, feats)
  assert [o.shape for o in got] == [nhwc(w).shape for w in want]
  # Two to four float32 convs deep on O(1) values: only summation order differs (seen: <= 7.2e-7).
  for i, (g, w) in enumerate(zip(got, want)):
    np.testing.assert_allclose(g, nhwc(w), rtol=1e-5, atol=1e-5, err_msg=f"{name}: output {i}")


def param_shapes(neck, sizes, channels=IN_CHANNELS):
  """``neck``'s parameter shapes by dotted path and its output shapes, for inputs of ``sizes``."""
  feats = [jax.ShapeDtypeStruct((1, h, w, c), np.float32) for c, (h, w) in zip(channels, sizes)]
  variables = jax.eval_shape(neck.init, jax.random.PRNGKey(0), feats)
  flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
  params = {".".join(k.key for k in path): tuple(v.shape) for path, v in flat}
  return params, [tuple(o.shape) for o in jax.eval_shape(neck.apply, variables, feats)]


def test_on_input_extra_levels_by_hand():
  # mmseg: levels 1..3 get lateral (1x1) and output (3x3) convs; the first extra conv reads the
  # last input level used (7 channels), the second the first's output; each halves the size,
  # rounding up (stride 2, padding 1).
  params, shapes = param_shapes(FPN(IN_CHANNELS, 4, num_outs=5, start_level=1, add_extra_convs="on_input"),
                                ODD_SIZES)
  assert params == {
      "lateral_convs.0.conv.kernel": (1, 1, 3, 4), "lateral_convs.0.conv.bias": (4,),
      "lateral_convs.1.conv.kernel": (1, 1, 5, 4), "lateral_convs.1.conv.bias": (4,),
      "lateral_convs.2.conv.kernel": (1, 1, 7, 4), "lateral_convs.2.conv.bias": (4,),
      "fpn_convs.0.conv.kernel": (3, 3, 4, 4), "fpn_convs.0.conv.bias": (4,),
      "fpn_convs.1.conv.kernel": (3, 3, 4, 4), "fpn_convs.1.conv.bias": (4,),
      "fpn_convs.2.conv.kernel": (3, 3, 4, 4), "fpn_convs.2.conv.bias": (4,),
      "fpn_convs.3.conv.kernel": (3, 3, 7, 4), "fpn_convs.3.conv.bias": (4,),
      "fpn_convs.4.conv.kernel": (3, 3, 4, 4), "fpn_convs.4.conv.bias": (4,),
  }
  assert shapes == [(1, 12, 15, 4), (1, 6, 8, 4), (1, 3, 4, 4), (1, 2, 2, 4), (1, 1, 1, 4)]


def test_max_pool_levels_by_hand():
  # Without extra convs the extra levels are F.max_pool2d(x, 1, stride=2) of the last output:
  # every other pixel, no parameters.
  neck = FPN(IN_CHANNELS, 4, num_outs=6)
  params, shapes = param_shapes(neck, ODD_SIZES)
  assert sorted(params) == sorted(f"{kind}.{i}.conv.{leaf}" for kind in ("lateral_convs", "fpn_convs")
                                  for i in range(4) for leaf in ("kernel", "bias"))
  assert shapes == [(1, 23, 30, 4), (1, 12, 15, 4), (1, 6, 8, 4), (1, 3, 4, 4), (1, 2, 2, 4), (1, 1, 1, 4)]
  feats = [nhwc(x) for x in random_inputs(ODD_SIZES)]
  variables = neck.init(jax.random.PRNGKey(0), feats)
  outs = neck.apply(variables, feats)
  np.testing.assert_array_equal(outs[4], outs[3][:, ::2, ::2])
  np.testing.assert_array_equal(outs[5], outs[4][:, ::2, ::2])


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_outs=4, add_extra_convs="on_top"), "add_extra_convs='on_top'"),
    (dict(num_outs=3), "num_outs=3 is fewer than the 4 input levels"),
    (dict(num_outs=4, end_level=3), "num_outs == end_level - start_level = 3; got num_outs=4"),
    (dict(num_outs=4, upsample_cfg=dict(mode="nearest", align_corners=False)), "align_corners"),
    (dict(num_outs=4, upsample_cfg=dict(mode="bicubic")), "mode='bicubic'"),
    (dict(num_outs=4, upsample_cfg=dict(size=3)), "keys ['size']"),
    (dict(num_outs=4, upsample_cfg=dict(scale_factor=2)), "scale_factor=2 takes a level of size (6, 8) to (12, 16), but the level below is (12, 15)"),
    (dict(num_outs=4, conv_cfg=dict(type="DCN")), "conv_cfg={'type': 'DCN'}"),
])
def test_fpn_config_errors_name_the_setting(kwargs, message):
  with pytest.raises(ValueError) as e:
    param_shapes(FPN(IN_CHANNELS, 4, **kwargs), ODD_SIZES)
  assert message in str(e.value)


def test_fpn_input_errors_name_the_level():
  with pytest.raises(ValueError) as e:
    param_shapes(FPN(IN_CHANNELS, 4, num_outs=4), ODD_SIZES, channels=[2, 3, 6, 7])
  assert "FPN input level 2: in_channels=5" in str(e.value)
  with pytest.raises(ValueError) as e:
    param_shapes(FPN(IN_CHANNELS, 4, num_outs=3), ODD_SIZES[:3])
  assert "3 input levels, but in_channels=[2, 3, 5, 7] lists 4" in str(e.value)


# --- parameter names of every FPN config in mmseg's zoo ---------------------------------------

def zoo_fpn_configs():
  index = os.path.join(SHARED, "reference", "mmseg_zoo", "index.json")
  if not os.path.exists(index):
    return []
  return sorted(name for name, entry in json.load(open(index)).items() if entry.get("neck") == "FPN")


@pytest.mark.parametrize("config", zoo_fpn_configs() or ["(mmseg zoo listing absent)"])
def test_zoo_fpn_keys(config):
  zoo = require(os.path.join(SHARED, "reference", "mmseg_zoo"))
  entry = json.load(open(os.path.join(zoo, "index.json")))[config]
  neck_cfg = load_model_dict(os.path.join(SHARED, "reference", "mmseg_configs", config))["neck"]
  keys = {}
  for line in open(os.path.join(zoo, entry["keys"])):
    key, shape = line.rstrip("\n").split("\t")
    if key.startswith("neck."):
      keys[key[len("neck."):]] = np.zeros([int(n) for n in shape.split(",")], np.float32)
  neck = build_module(neck_cfg, "neck")(None)
  sizes = [(256 // 2**i, 256 // 2**i) for i in range(len(neck_cfg["in_channels"]))]
  feats = [jax.ShapeDtypeStruct((1, h, w, c), np.float32) for c, (h, w) in zip(neck_cfg["in_channels"], sizes)]
  # Strict: every neck key of the released checkpoints maps to a parameter of its shape, and
  # every parameter has a key.
  convert_state_dict(keys, jax.eval_shape(neck.init, jax.random.PRNGKey(0), feats))
