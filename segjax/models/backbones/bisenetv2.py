"""BiSeNetV2 as MMSegmentation defines it (mmseg ``backbones/bisenetv2.py``): a detail branch,
a semantic branch (stem, gather-and-expansion layers, context embedding) and bilateral guided
aggregation.

Parameter names follow mmseg's state_dict: ``detail/detail_branch/<i>/<j>``,
``semantic/stage1`` (StemBlock), ``semantic/stage<k>/<j>`` (GELayer: ``conv1``, ``dwconv/<j>``,
``conv2/0``, ``shortcut/0``), ``semantic/stage4_CEBlock``, ``bga/...``. mmseg builds the branches
without passing BiSeNetV2's ``norm_cfg``/``act_cfg`` (each uses its default: BatchNorm, ReLU);
so does segjax.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax import layers
from segjax.convert import CheckpointRules

# The sub-modules' own defaults (mmseg does not pass BiSeNetV2's norm_cfg / act_cfg to them).
BN = {"type": "BN"}


def conv(features, kernel_size, stride=1, padding=0, groups=1, act_cfg=layers.RELU, bias="auto",
         norm_cfg=BN):
  """A ConvModule constructor ``(name=...) -> module`` with the branches' BatchNorm."""
  return functools.partial(layers.conv_module, features, kernel_size, stride, padding, 1, groups,
                           norm_cfg=norm_cfg, act_cfg=act_cfg, bias=bias)


class DetailBranch(nn.Module):
  """``detail_branch.<i>``: a stride-2 3x3 ConvModule then one (stage 0) or two 3x3 ConvModules."""
  detail_channels: Sequence[int]

  @nn.compact
  def __call__(self, x, train: bool = False):
    stages = layers.NamedChildren(name="detail_branch")
    for i, c in enumerate(self.detail_channels):
      convs = (conv(c, 3, 2, 1),) + (conv(c, 3, 1, 1),) * (1 if i == 0 else 2)
      x = stages(i, functools.partial(layers.Indexed, convs), x, train)
    return x


class StemBlock(nn.Module):
  """``conv_first`` (stride 2); [``convs`` 1x1 halving then 3x3 stride 2, 3x3/2 max pool];
  ``fuse_last`` 3x3 of the two."""
  out_channels: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    c = self.out_channels
    x = conv(c, 3, 2, 1)(name="conv_first")(x, train)
    left = layers.Indexed((conv(c // 2, 1), conv(c, 3, 2, 1)), name="convs")(x, train)
    right = layers.max_pool_3x3_s2(x)
    return conv(c, 3, 1, 1)(name="fuse_last")(jnp.concatenate([left, right], -1), train)


class GELayer(nn.Module):
  """Gather-and-expansion layer: ``conv1`` 3x3; ``dwconv`` (stride 1: a 3x3 conv with groups=in
  expanding ``exp_ratio`` times; stride 2: that without activation then a 3x3 depthwise conv);
  ``conv2`` 1x1 projection; plus the input (stride 1) or ``shortcut`` (depthwise separable,
  stride 2); ReLU."""
  out_channels: int
  exp_ratio: int = 6
  stride: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    in_channels = x.shape[-1]
    mid = in_channels * self.exp_ratio
    out = conv(in_channels, 3, 1, 1)(name="conv1")(x, train)
    if self.stride == 1:
      dwconv = (conv(mid, 3, 1, 1, groups=in_channels),)
    else:
      dwconv = (conv(mid, 3, self.stride, 1, groups=in_channels, act_cfg=None, bias=False),
                conv(mid, 3, 1, 1, groups=mid))
    out = layers.Indexed(dwconv, name="dwconv")(out, train)
    out = layers.Indexed((conv(self.out_channels, 1, act_cfg=None, bias=False),), name="conv2")(out, train)
    if self.stride == 1:
      if in_channels != self.out_channels:
        raise ValueError(f"GELayer: stride 1 adds the input, so in_channels={in_channels} must equal "
                         f"out_channels={self.out_channels}")
      shortcut = x
    else:
      shortcut = layers.Indexed((functools.partial(layers.DepthwiseSeparableConvModule,
                                                   self.out_channels, 3, self.stride, 1,
                                                   norm_cfg=BN, act_cfg=None),),
                                name="shortcut")(x, train)
    return nn.relu(out + shortcut)


class CEBlock(nn.Module):
  """Context embedding: ``gap`` (global average ``0``, BatchNorm ``1``), ``conv_gap`` 1x1 added to
  the input, ``conv_last`` 3x3."""
  out_channels: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    gap = jnp.mean(x, axis=(1, 2), keepdims=True)
    gap = layers.Indexed((lambda name: (lambda y, train: y),
                          lambda name: layers.norm_layer(BN, name=name)), name="gap")(gap, train)
    x = x + conv(self.out_channels, 1)(name="conv_gap")(gap, train)
    return conv(self.out_channels, 3, 1, 1)(name="conv_last")(x, train)


class SemanticBranch(nn.Module):
  """``stage1`` StemBlock, ``stage2``.. GELayers (one stride-2 then 1 or, in the last stage, 3 of
  stride 1), ``stage<n>_CEBlock``; returns every stage's output."""
  semantic_channels: Sequence[int]
  exp_ratio: int = 6

  @nn.compact
  def __call__(self, x, train: bool = False):
    channels = self.semantic_channels
    outs = []
    for i, c in enumerate(channels):
      if i == 0:
        x = StemBlock(c, name="stage1")(x, train)
      else:
        repeats = 3 if i == len(channels) - 1 else 1
        blocks = (functools.partial(GELayer, c, self.exp_ratio, 2),) + \
                 (functools.partial(GELayer, c, self.exp_ratio, 1),) * repeats
        x = layers.Indexed(blocks, name=f"stage{i + 1}")(x, train)
      outs.append(x)
    outs.append(CEBlock(channels[-1], name=f"stage{len(channels)}_CEBlock")(x, train))
    return outs


class SeparableConv(nn.Module):
  """mmcv ``DepthwiseSeparableConvModule`` as BGA configures it: depthwise 3x3 with BatchNorm,
  pointwise 1x1 without norm (so with bias), no activations."""
  features: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    c = x.shape[-1]
    x = conv(c, 3, 1, 1, groups=c, act_cfg=None)(name="depthwise_conv")(x, train)
    return conv(self.features, 1, act_cfg=None, norm_cfg=None)(name="pointwise_conv")(x, train)


class BGALayer(nn.Module):
  """Bilateral guided aggregation: detail (1/8) and semantic (1/32) features gate each other
  (sigmoid), both brought to 1/8 and summed, then ``conv`` 3x3."""
  out_channels: int = 128
  align_corners: bool = False

  @nn.compact
  def __call__(self, x_d, x_s, train: bool = False):
    c = self.out_channels
    sep = lambda name: SeparableConv(c, name=name)
    detail_dwconv = layers.Indexed((sep,), name="detail_dwconv")(x_d, train)
    detail_down = layers.Indexed(
        (conv(c, 3, 2, 1, act_cfg=None, bias=False),
         lambda name: (lambda y, train: layers.avg_pool_3x3_s2(y))),
        name="detail_down")(x_d, train)
    semantic_conv = layers.Indexed((conv(c, 3, 1, 1, act_cfg=None, bias=False),),
                                   name="semantic_conv")(x_s, train)
    semantic_dwconv = layers.Indexed((sep,), name="semantic_dwconv")(x_s, train)
    semantic_conv = layers.resize(semantic_conv, detail_dwconv.shape[1:3], self.align_corners)
    fuse_1 = detail_dwconv * nn.sigmoid(semantic_conv)
    fuse_2 = detail_down * nn.sigmoid(semantic_dwconv)
    fuse_2 = layers.resize(fuse_2, fuse_1.shape[1:3], self.align_corners)
    return conv(c, 3, 1, 1)(name="conv")(fuse_1 + fuse_2, train)


CHECKPOINT_RULES = {"mmseg": CheckpointRules()}


class BiSeNetV2(nn.Module):
  """mmseg ``BiSeNetV2``: outputs [BGA (1/8), semantic stages 1..n (1/4 .. 1/32)] by ``out_indices``."""
  TINY: ClassVar[dict] = dict(detail_channels=(8, 8, 16), semantic_channels=(4, 8, 8, 16),
                              semantic_expansion_ratio=2, bga_channels=16)
  CHECKPOINT_RULES: ClassVar[dict[str, CheckpointRules]] = CHECKPOINT_RULES
  in_channels: int = 3
  detail_channels: Sequence[int] = (64, 64, 128)
  semantic_channels: Sequence[int] = (16, 32, 64, 128)
  semantic_expansion_ratio: int = 6
  bga_channels: int = 128
  out_indices: Sequence[int] = (0, 1, 2, 3, 4)
  align_corners: bool = False
  conv_cfg: Any = None
  norm_cfg: dict = None  # unused by mmseg's branches (see the module docstring)
  act_cfg: dict = None
  init_cfg: Any = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    layers.check_in_channels(x, self.in_channels, "BiSeNetV2 backbone")
    if not self.detail_channels[-1] == self.semantic_channels[-1] == self.bga_channels:
      raise ValueError(f"BiSeNetV2: detail_channels[-1]={self.detail_channels[-1]}, "
                       f"semantic_channels[-1]={self.semantic_channels[-1]} and "
                       f"bga_channels={self.bga_channels} must agree")
    x_detail = DetailBranch(tuple(self.detail_channels), name="detail")(x, train)
    semantic = SemanticBranch(tuple(self.semantic_channels), self.semantic_expansion_ratio,
                              name="semantic")(x, train)
    x_head = BGALayer(self.bga_channels, self.align_corners, name="bga")(x_detail, semantic[-1], train)
    outs = [x_head] + semantic[:-1]
    return [outs[i] for i in self.out_indices]
