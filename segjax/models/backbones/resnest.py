"""ResNeSt (mmseg ``backbones/resnest.py``): ResNetV1d whose bottlenecks' 3x3 conv is a
Split-Attention conv (``radix`` splits weighted by a softmax over a squeezed context), with the
stride taken by a 3x3 average pool after it (``avg_down_stride``).

Reuses resnet.py's deep stem, stage (ResLayer) and average-pool shortcut; parameter names follow
mmseg's state_dict: ``layer1/0/conv2/conv``, ``.../conv2/bn0``, ``fc1``, ``bn1``, ``fc2``.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import flax.linen as nn

from segjax import layers
from segjax.models.backbones.resnet import Downsample, ResNetV1d


class SplitAttentionConv2d(nn.Module):
  """``conv`` (channels * radix outputs, groups * radix groups) -> ``bn0`` -> ReLU; the radix
  splits' sum, globally pooled, -> ``fc1`` -> ``bn1`` -> ReLU -> ``fc2`` -> radix softmax (sigmoid
  for radix 1) weights the splits per channel, summed."""
  channels: int
  stride: int = 1
  dilation: int = 1
  groups: int = 1
  radix: int = 2
  reduction_factor: int = 4
  norm_cfg: dict = None
  frozen: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = lambda postfix: layers.norm_layer(
        self.norm_cfg, name=f"{layers.NORM_NAMES[self.norm_cfg['type']]}{postfix}", frozen=self.frozen)
    inter_channels = max(x.shape[-1] * self.radix // self.reduction_factor, 32)
    batch, c = x.shape[0], self.channels
    x = layers.conv2d(c * self.radix, 3, self.stride, self.dilation, self.dilation,
                      self.groups * self.radix, use_bias=False, name="conv")(x)
    x = nn.relu(norm(0)(x, train))
    splits = x.reshape(*x.shape[:3], self.radix, c)  # channel r * C + c is split r's channel c
    gap = splits.sum(axis=3).mean(axis=(1, 2), keepdims=True)
    gap = layers.conv2d(inter_channels, 1, groups=self.groups, name="fc1")(gap)
    gap = nn.relu(norm(1)(gap, train))
    atten = layers.conv2d(c * self.radix, 1, groups=self.groups, name="fc2")(gap).reshape(batch, -1)
    if self.radix == 1:
      return x * nn.sigmoid(atten)[:, None, None, :]
    # RSoftmax: fc2's channels are grouped (group, radix, channel in group); softmax over radix.
    atten = nn.softmax(atten.reshape(batch, self.groups, self.radix, c // self.groups), axis=2)
    atten = atten.transpose(0, 2, 1, 3).reshape(batch, 1, 1, self.radix, c)
    return (atten * splits).sum(axis=3)


class Bottleneck(nn.Module):
  """ResNeSt's Bottleneck: conv1/bn1, ``conv2`` a SplitAttentionConv2d, ``avd_layer``
  (AvgPool2d(3, stride, padding=1)) when ``avg_down_stride`` and strided, conv3/bn3."""
  planes: int
  stride: int = 1
  dilation: int = 1
  downsample: Any = None
  norm_cfg: dict = None
  frozen: bool = False
  style: str = "pytorch"
  groups: int = 1
  base_width: int = 4
  base_channels: int = 64
  radix: int = 2
  reduction_factor: int = 4
  avg_down_stride: bool = True
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = lambda i: layers.norm_layer(self.norm_cfg, name=f"{layers.NORM_NAMES[self.norm_cfg['type']]}{i}",
                                       frozen=self.frozen)
    conv1_stride, conv2_stride = (1, self.stride) if self.style == "pytorch" else (self.stride, 1)
    width = self.planes if self.groups == 1 else math.floor(
        self.planes * (self.base_width / self.base_channels)) * self.groups
    avd = self.avg_down_stride and conv2_stride > 1
    out = layers.conv2d(width, 1, conv1_stride, use_bias=False, name="conv1")(x)
    out = nn.relu(norm(1)(out, train))
    out = SplitAttentionConv2d(width, 1 if avd else conv2_stride, self.dilation, self.groups, self.radix,
                               self.reduction_factor, self.norm_cfg, self.frozen, name="conv2")(out, train)
    if avd:
      out = nn.avg_pool(out, (3, 3), (conv2_stride, conv2_stride), ((1, 1), (1, 1)), count_include_pad=True)
    out = layers.conv2d(self.planes * self.expansion, 1, use_bias=False, name="conv3")(out)
    out = norm(3)(out, train)
    identity = x
    if self.downsample is not None:
      identity = Downsample(self.planes * self.expansion, *self.downsample, norm_cfg=self.norm_cfg,
                            frozen=self.frozen, name="downsample")(x, train)
    return nn.relu(out + identity)


STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}


class ResNeSt(ResNetV1d):
  """mmseg ``ResNeSt`` (a ResNetV1d: deep stem, average-pool shortcuts) with ResNeSt's Bottleneck.
  Checkpoint rules are ResNet's (ImageNet weights carry ``fc``)."""
  TINY: ClassVar[dict] = dict(depth=50, stem_channels=8, base_channels=4, strides=(1, 2, 2, 1),
                              dilations=(1, 1, 1, 2), contract_dilation=True,
                              norm_cfg=dict(type="BN", requires_grad=True))
  radix: int = 2
  reduction_factor: int = 4
  avg_down_stride: bool = True

  def arch(self):
    if self.depth not in STAGE_BLOCKS:
      raise ValueError(f"ResNeSt depth={self.depth} is not one of {sorted(STAGE_BLOCKS)}")
    return Bottleneck, STAGE_BLOCKS[self.depth]

  def block_kwargs(self, block_cls, planes):
    return dict(style=self.style, groups=self.groups, base_width=self.base_width,
                base_channels=self.base_channels, radix=self.radix,
                reduction_factor=self.reduction_factor, avg_down_stride=self.avg_down_stride)
