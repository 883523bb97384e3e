"""MobileNetV2 as MMSegmentation defines it (mmseg ``backbones/mobilenet_v2.py`` and the
``InvertedResidual`` block of ``models/utils``).

Parameter names follow mmseg's state_dict: ``conv1/conv``, ``conv1/bn``, ``layer1/0/conv/0/conv``
(expand 1x1, depthwise 3x3, linear 1x1 as ``conv.0``, ``conv.1``, ``conv.2``; a block without
the expand conv has ``conv.0``, ``conv.1``).
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax

from segjax import layers
from segjax.convert import CheckpointRules

BN = {"type": "BN"}
RELU6 = {"type": "ReLU6"}


def make_divisible(value, divisor, min_value=None, min_ratio=0.9) -> int:
  """mmseg ``make_divisible``: round to the nearest multiple of ``divisor``, at least
  ``min_value`` (default ``divisor``) and not below ``min_ratio * value``."""
  if min_value is None:
    min_value = divisor
  new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
  if new_value < min_ratio * value:
    new_value += divisor
  return new_value


class InvertedResidual(nn.Module):
  """mmseg ``InvertedResidual``: [1x1 expand] -> 3x3 depthwise (stride, dilation) -> 1x1 linear,
  plus the identity when the stride is 1 and the widths agree."""
  out_channels: int
  stride: int
  expand_ratio: float
  dilation: int = 1
  norm_cfg: dict = None
  act_cfg: dict = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.stride not in (1, 2):
      raise ValueError(f"InvertedResidual stride={self.stride}; expected 1 or 2")
    in_channels = x.shape[-1]
    hidden = int(round(in_channels * self.expand_ratio))
    conv = functools.partial(layers.conv_module, norm_cfg=self.norm_cfg)
    convs = []
    if self.expand_ratio != 1:
      convs.append(functools.partial(conv, hidden, 1, act_cfg=self.act_cfg))
    convs.append(functools.partial(conv, hidden, 3, self.stride, self.dilation, self.dilation,
                                   hidden, act_cfg=self.act_cfg))
    convs.append(functools.partial(conv, self.out_channels, 1, act_cfg=None))
    out = layers.Indexed(tuple(convs), name="conv")(x, train)
    if self.stride == 1 and in_channels == self.out_channels:
      return x + out
    return out


class InvertedResidualLayer(nn.Module):
  """One ``layer<i>``: an ``nn.Sequential`` of blocks, stride and dilation on the first only."""
  out_channels: int
  num_blocks: int
  stride: int
  dilation: int
  expand_ratio: float
  norm_cfg: dict
  act_cfg: dict

  @nn.compact
  def __call__(self, x, train: bool = False):
    for j in range(self.num_blocks):
      x = InvertedResidual(self.out_channels, self.stride if j == 0 else 1, self.expand_ratio,
                           self.dilation if j == 0 else 1, self.norm_cfg, self.act_cfg,
                           name=str(j))(x, train)
    return x


def checkpoint_rules(arch_settings) -> dict[str, CheckpointRules]:
  """How each release names MobileNetV2's weights (segjax.convert: CHECKPOINT_RULES[source]), for
  the layers of ``arch_settings`` ((expand_ratio, channels, blocks) per layer)."""
  # torchvision's ``features``: 0 the stem (Conv, BN), then one InvertedResidual per block whose
  # ``conv`` holds [expand (Conv, BN)], depthwise (Conv, BN), then a bare Conv2d and BatchNorm2d;
  # mmseg's ``layer{i}.{j}.conv.{k}`` are ConvModules (``conv``, ``bn``).
  renames = [(r"^features\.0\.0\.", "conv1.conv."), (r"^features\.0\.1\.", "conv1.bn.")]
  feature = 1
  for i, (expand_ratio, _, num_blocks) in enumerate(arch_settings):
    last = 2 if expand_ratio != 1 else 1  # index of the linear 1x1 conv
    for j in range(num_blocks):
      source, target = rf"^features\.{feature}\.conv\.", f"layer{i + 1}.{j}.conv."
      for k in range(last):
        renames += [(source + rf"{k}\.0\.", f"{target}{k}.conv."), (source + rf"{k}\.1\.", f"{target}{k}.bn.")]
      renames += [(source + rf"{last}\.", f"{target}{last}.conv."), (source + rf"{last + 1}\.", f"{target}{last}.bn.")]
      feature += 1
  return {
      "mmseg": CheckpointRules(),
      # torchvision's ImageNet classifier (mobilenet_v2-b0353104.pth, any width_mult): its last
      # 1x1 conv (``features.{feature}``) and ``classifier`` are not in mmseg's backbone.
      "torchvision": CheckpointRules(skip=(rf"^features\.{feature}\.", r"^classifier\."),
                                     renames=tuple(renames)),
      # mmcls's (``mmcls://mobilenet_v2``): mmseg's names under ``backbone.``, as mmcv's loader of
      # mmcls:// checkpoints keeps them; its last 1x1 conv ``conv2`` and the head are dropped.
      "mmcls": CheckpointRules(skip=(r"^(?!backbone\.)", r"^backbone\.conv2\."),
                               renames=((r"^backbone\.", ""),)),
  }


class MobileNetV2(nn.Module):
  """mmseg ``MobileNetV2``: returns the outputs of the layers in ``out_indices`` (0-6)."""
  TINY: ClassVar[dict] = dict(widen_factor=0.25, strides=(1, 2, 2, 1, 1, 1, 1),
                              dilations=(1, 1, 1, 2, 2, 4, 4), out_indices=(1, 2, 4, 6),
                              norm_cfg=dict(type="BN", requires_grad=True))
  arch_settings: ClassVar[tuple] = ((1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3),
                                    (6, 160, 3), (6, 320, 1))
  CHECKPOINT_RULES: ClassVar[dict[str, CheckpointRules]] = checkpoint_rules(arch_settings)
  widen_factor: float = 1.0
  strides: Sequence[int] = (1, 2, 2, 2, 1, 2, 1)
  dilations: Sequence[int] = (1, 1, 1, 1, 1, 1, 1)
  out_indices: Sequence[int] = (1, 2, 4, 6)
  frozen_stages: int = -1
  conv_cfg: Any = None
  norm_cfg: dict = None
  act_cfg: dict = None
  norm_eval: bool = False
  with_cp: bool = False
  pretrained: Any = None
  init_cfg: Any = None

  def check_config(self):
    n = len(self.arch_settings)
    if not len(self.strides) == len(self.dilations) == n:
      raise ValueError(f"MobileNetV2: strides {tuple(self.strides)} and dilations "
                       f"{tuple(self.dilations)} need {n} entries each")
    for index in self.out_indices:
      if index not in range(n):
        raise ValueError(f"MobileNetV2: out_indices items must be in range(0, {n}), got {index}")
    if self.frozen_stages not in range(-1, n):
      raise ValueError(f"MobileNetV2: frozen_stages must be in range(-1, {n}), got {self.frozen_stages}")
    if self.conv_cfg is not None:
      raise ValueError(f"MobileNetV2: conv_cfg={self.conv_cfg} is not supported (only None, Conv2d)")

  def frozen_parameters(self) -> tuple[str, ...]:
    """What mmseg's ``_freeze_stages`` sets ``requires_grad=False`` on: ``conv1`` when
    ``frozen_stages >= 0``, and ``layer1`` .. ``layer{frozen_stages}``."""
    if self.frozen_stages < 0:
      return ()
    return ("conv1", *(f"layer{i}" for i in range(1, self.frozen_stages + 1)))

  @nn.compact
  def __call__(self, x, train: bool = False):
    self.check_config()
    layers.check_in_channels(x, 3, "MobileNetV2 backbone")
    norm_cfg = dict(self.norm_cfg or BN)
    act_cfg = dict(self.act_cfg or RELU6)
    # norm_eval keeps every BN in eval mode; frozen layers (layer1..) too; frozen parameters
    # (conv1's too) get no gradient. mmseg's _freeze_stages does not put conv1 in eval mode: its
    # BN statistics keep updating.
    bn_train = train and not self.norm_eval
    in_channels = make_divisible(32 * self.widen_factor, 8)
    x = layers.conv_module(in_channels, 3, 2, 1, norm_cfg=norm_cfg, act_cfg=act_cfg,
                           name="conv1")(x, bn_train)
    if self.frozen_stages >= 0:
      x = jax.lax.stop_gradient(x)
    layer_cls = nn.remat(InvertedResidualLayer, static_argnums=(2,)) if self.with_cp else InvertedResidualLayer
    outs = []
    for i, (expand_ratio, channel, num_blocks) in enumerate(self.arch_settings):
      frozen = i + 1 <= self.frozen_stages
      x = layer_cls(make_divisible(channel * self.widen_factor, 8), num_blocks, self.strides[i],
                    self.dilations[i], expand_ratio, norm_cfg, act_cfg,
                    name=f"layer{i + 1}")(x, bn_train and not frozen)
      if frozen:
        x = jax.lax.stop_gradient(x)
      if i in self.out_indices:
        outs.append(x)
    return outs
