"""MobileNetV3 as MMSegmentation defines it (mmseg ``backbones/mobilenet_v3.py``, with the
``InvertedResidualV3`` and ``SELayer`` blocks of ``models/utils``).

Parameter names follow mmseg's state_dict: ``layer0/conv``, ``layer0/bn``, ``layer<i>/expand_conv``,
``layer<i>/depthwise_conv``, ``layer<i>/se/conv1``, ``layer<i>/se/conv2``, ``layer<i>/linear_conv``
and the last 1x1 ``layer12`` (small) / ``layer16`` (large).
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax import layers
from segjax.convert import CheckpointRules
from segjax.models.backbones.mobilenet_v2 import make_divisible

BN = {"type": "BN"}


def hswish(x):
  """mmcv ``HSwish`` / ``nn.Hardswish``: x * relu6(x + 3) / 6, in PyTorch's order."""
  return x * jnp.clip(x + 3, 0, 6) / 6


def hsigmoid(x, bias=3.0, divisor=6.0):
  """mmcv ``HSigmoid(bias, divisor)``: clamp((x + bias) / divisor, 0, 1)."""
  return jnp.clip((x + bias) / divisor, 0, 1)


ACTIVATIONS = {"ReLU": nn.relu, "HSwish": hswish}


def adaptive_padding(x, kernel_size, stride, dilation):
  """mmcv ``Conv2dAdaptivePadding``'s input padding (TensorFlow's 'SAME'): the total
  max((ceil(n / s) - 1) s + (k - 1) d + 1 - n, 0), the extra pixel at the bottom / right."""
  pads = []
  for n in x.shape[1:3]:
    total = max((-(-n // stride) - 1) * stride + (kernel_size - 1) * dilation + 1 - n, 0)
    pads.append((total // 2, total - total // 2))
  return jnp.pad(x, ((0, 0), *pads, (0, 0)))


class ConvModule(nn.Module):
  """mmcv ``ConvModule`` (``conv``, ``bn``, activation) with MobileNetV3's activations (PyTorch
  order HSwish) and mmcv's ``Conv2dAdaptivePadding`` when ``adaptive_padding``."""
  features: int
  kernel_size: int = 1
  stride: int = 1
  padding: int = 0
  dilation: int = 1
  groups: int = 1
  norm_cfg: dict | None = None
  act: Any = None  # a function, or None
  adaptive_padding: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    padding = self.padding
    if self.adaptive_padding:
      x = adaptive_padding(x, self.kernel_size, self.stride, self.dilation)
      padding = 0
    x = layers.conv2d(self.features, self.kernel_size, self.stride, padding, self.dilation,
                      self.groups, use_bias=self.norm_cfg is None, name="conv")(x)
    if self.norm_cfg is not None:
      x = layers.norm_layer(self.norm_cfg, name="bn")(x, train)
    return x if self.act is None else self.act(x)


class SELayer(nn.Module):
  """mmseg ``SELayer`` as MobileNetV3 configures it: global average, 1x1 conv (ReLU) to
  make_divisible(C / ratio, 8), 1x1 conv (HSigmoid(3, 6)), scale the input."""
  ratio: int = 4

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    out = jnp.mean(x, axis=(1, 2), keepdims=True)
    out = ConvModule(make_divisible(channels // self.ratio, 8), act=nn.relu, name="conv1")(out)
    out = ConvModule(channels, act=hsigmoid, name="conv2")(out)
    return x * out


class InvertedResidualV3(nn.Module):
  """mmseg ``InvertedResidualV3``: [expand_conv] -> depthwise_conv -> [se] -> linear_conv, plus
  the identity when the stride is 1 and the widths agree (stride and dilation as the backbone's
  segmentation surgery leaves them)."""
  out_channels: int
  mid_channels: int
  kernel_size: int
  stride: int
  dilation: int
  with_se: bool
  act: Any
  adaptive_padding: bool  # the block was built with stride 2 (mmcv's Conv2dAdaptivePadding)
  norm_cfg: dict

  @nn.compact
  def __call__(self, x, train: bool = False):
    in_channels = x.shape[-1]
    out = x
    if in_channels != self.mid_channels:
      out = ConvModule(self.mid_channels, norm_cfg=self.norm_cfg, act=self.act,
                       name="expand_conv")(out, train)
    out = ConvModule(self.mid_channels, self.kernel_size, self.stride,
                     self.dilation * (self.kernel_size // 2), self.dilation, self.mid_channels,
                     self.norm_cfg, self.act, self.adaptive_padding, name="depthwise_conv")(out, train)
    if self.with_se:
      out = SELayer(4, name="se")(out)
    out = ConvModule(self.out_channels, norm_cfg=self.norm_cfg, name="linear_conv")(out, train)
    if self.stride == 1 and in_channels == self.out_channels:
      return x + out
    return out


# [kernel size, mid channels, out channels, with_se, act type, stride], mmseg's arch_settings.
ARCH_SETTINGS = {
    "small": ((3, 16, 16, True, "ReLU", 2), (3, 72, 24, False, "ReLU", 2),
              (3, 88, 24, False, "ReLU", 1), (5, 96, 40, True, "HSwish", 2),
              (5, 240, 40, True, "HSwish", 1), (5, 240, 40, True, "HSwish", 1),
              (5, 120, 48, True, "HSwish", 1), (5, 144, 48, True, "HSwish", 1),
              (5, 288, 96, True, "HSwish", 2), (5, 576, 96, True, "HSwish", 1),
              (5, 576, 96, True, "HSwish", 1)),
    "large": ((3, 16, 16, False, "ReLU", 1), (3, 64, 24, False, "ReLU", 2),
              (3, 72, 24, False, "ReLU", 1), (5, 72, 40, True, "ReLU", 2),
              (5, 120, 40, True, "ReLU", 1), (5, 120, 40, True, "ReLU", 1),
              (3, 240, 80, False, "HSwish", 2), (3, 200, 80, False, "HSwish", 1),
              (3, 184, 80, False, "HSwish", 1), (3, 184, 80, False, "HSwish", 1),
              (3, 480, 112, True, "HSwish", 1), (3, 672, 112, True, "HSwish", 1),
              (5, 672, 160, True, "HSwish", 2), (5, 960, 160, True, "HSwish", 1),
              (5, 960, 160, True, "HSwish", 1)),
}
# mmseg's segmentation surgery: (first layer with dilation 2, first with dilation 4, the layers
# whose stride 2 becomes 1); reduction_factor divides the widths of blocks from ``reduced`` on.
SURGERY = {"small": dict(dilate2=4, dilate4=9, unstrided=(4, 9), reduced=8),
           "large": dict(dilate2=7, dilate4=13, unstrided=(7, 13), reduced=12)}
LAST_CHANNELS = {"small": 576, "large": 960}


def torchvision_rules(arch: str) -> CheckpointRules:
  """torchvision's ImageNet MobileNetV3 of ``arch`` (mobilenet_v3_large-8738ca79.pth,
  mobilenet_v3_small-047dcff4.pth): ``features.i`` is ``layer{i}``; a block's ``block`` holds
  its parts in order, [expand], depthwise, [SqueezeExcitation ``fc1``/``fc2``], projection, each
  conv part a (Conv, BN) Sequential; the ``classifier`` is not in mmseg's backbone."""
  renames = [(r"^features\.0\.0\.", "layer0.conv."), (r"^features\.0\.1\.", "layer0.bn.")]
  in_channels = 16
  settings = ARCH_SETTINGS[arch]
  for i, (_, mid, out, with_se, _, _) in enumerate(settings, 1):
    parts = ["expand_conv"] * (mid != in_channels) + ["depthwise_conv"] + ["se"] * with_se + ["linear_conv"]
    for n, part in enumerate(parts):
      source = rf"^features\.{i}\.block\.{n}\."
      if part == "se":
        renames += [(source + r"fc1\.", f"layer{i}.se.conv1.conv."), (source + r"fc2\.", f"layer{i}.se.conv2.conv.")]
      else:
        renames += [(source + r"0\.", f"layer{i}.{part}.conv."), (source + r"1\.", f"layer{i}.{part}.bn.")]
    in_channels = out
  last = len(settings) + 1
  renames += [(rf"^features\.{last}\.0\.", f"layer{last}.conv."), (rf"^features\.{last}\.1\.", f"layer{last}.bn.")]
  return CheckpointRules(skip=(r"^classifier\.",), renames=tuple(renames))


# How releases of MobileNetV3 weights name them (segjax.convert: CHECKPOINT_RULES[source]).
CHECKPOINT_RULES = {"mmseg": CheckpointRules(),
                    "torchvision_large": torchvision_rules("large"),
                    "torchvision_small": torchvision_rules("small")}


class MobileNetV3(nn.Module):
  """mmseg ``MobileNetV3`` (its segmentation version: output stride 8, dilated later layers).
  Returns the outputs of the layers in ``out_indices`` (layer0 ... layer12/16)."""
  TINY: ClassVar[dict] = dict(arch="small", out_indices=(0, 1, 12), reduction_factor=2,
                              norm_cfg=dict(type="BN", eps=0.001, requires_grad=True))
  CHECKPOINT_RULES: ClassVar[dict[str, CheckpointRules]] = CHECKPOINT_RULES
  arch: str = "small"
  conv_cfg: Any = None
  norm_cfg: dict = None
  out_indices: Sequence[int] = (0, 1, 12)
  frozen_stages: int = -1
  reduction_factor: int = 1
  norm_eval: bool = False
  with_cp: bool = False
  pretrained: Any = None
  init_cfg: Any = None

  def check_config(self):
    if self.arch not in ARCH_SETTINGS:
      raise ValueError(f"MobileNetV3 arch={self.arch!r}; expected one of {sorted(ARCH_SETTINGS)}")
    if not isinstance(self.reduction_factor, int) or self.reduction_factor <= 0:
      raise ValueError(f"MobileNetV3 reduction_factor={self.reduction_factor!r}; expected a positive int")
    n = len(ARCH_SETTINGS[self.arch]) + 2
    for index in self.out_indices:
      if index not in range(n):
        raise ValueError(f"MobileNetV3: out_indices items must be in range(0, {n}), got {index}")
    if self.frozen_stages not in range(-1, n):
      raise ValueError(f"MobileNetV3: frozen_stages must be in range(-1, {n}), got {self.frozen_stages}")
    if self.conv_cfg is not None:
      raise ValueError(f"MobileNetV3: conv_cfg={self.conv_cfg} is not supported (only None, Conv2d)")

  def frozen_parameters(self) -> tuple[str, ...]:
    """What mmseg's ``_freeze_stages`` sets ``requires_grad=False`` on: ``layer0`` ..
    ``layer{frozen_stages}``."""
    return tuple(f"layer{i}" for i in range(self.frozen_stages + 1))

  @nn.compact
  def __call__(self, x, train: bool = False):
    self.check_config()
    layers.check_in_channels(x, 3, "MobileNetV3 backbone")
    norm_cfg = dict(self.norm_cfg or BN)
    surgery = SURGERY[self.arch]
    bn_train = train and not self.norm_eval

    def run(i, module, x):
      """Layer i, frozen (BN statistics, no gradient) when i <= frozen_stages."""
      frozen = i <= self.frozen_stages
      out = module(x, bn_train and not frozen)
      return jax.lax.stop_gradient(out) if frozen else out

    outs = []
    x = run(0, ConvModule(16, 3, 2, 1, norm_cfg=norm_cfg, act=hswish, adaptive_padding=True,
                          name="layer0"), x)
    if 0 in self.out_indices:
      outs.append(x)
    block_cls = nn.remat(InvertedResidualV3, static_argnums=(2,)) if self.with_cp else InvertedResidualV3
    settings = ARCH_SETTINGS[self.arch]
    for i, (kernel, mid, out, with_se, act, stride) in enumerate(settings):
      index = i + 1
      if i >= surgery["reduced"]:
        mid, out = mid // self.reduction_factor, out // self.reduction_factor
      dilation = 1 if index < surgery["dilate2"] else (2 if index < surgery["dilate4"] else 4)
      block = block_cls(out, mid, kernel, 1 if index in surgery["unstrided"] else stride, dilation,
                        with_se, ACTIVATIONS[act], stride == 2, norm_cfg, name=f"layer{index}")
      x = run(index, block, x)
      if index in self.out_indices:
        outs.append(x)
    # The last 1x1 conv (its dilation 4 changes nothing).
    index = len(settings) + 1
    x = run(index, ConvModule(LAST_CHANNELS[self.arch], norm_cfg=norm_cfg, act=hswish,
                              name=f"layer{index}"), x)
    if index in self.out_indices:
      outs.append(x)
    return outs
