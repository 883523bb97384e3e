"""ASPPHead (DeepLabV3) and DepthwiseSeparableASPPHead (DeepLabV3+), mmseg ``aspp_head.py`` /
``sep_aspp_head.py``."""
from __future__ import annotations

import functools
from typing import ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax import layers
from segjax.models.heads.decode_head import BaseDecodeHead


class ASPPHead(BaseDecodeHead):
  """``image_pool`` (pool ``0`` + conv ``1``), ``aspp_modules.i`` per dilation, ``bottleneck``."""
  TINY: ClassVar[dict] = dict(in_channels=32, in_index=2, channels=8, dilations=(1, 2, 3),
                              num_classes=3, norm_cfg=dict(type="BN", requires_grad=True))
  dilations: Sequence[int] = (1, 6, 12, 18)

  def aspp_branch(self, dilation):
    """Constructor of the ``aspp_modules`` branch for ``dilation``."""
    if dilation == 1:
      return self.conv(self.channels, 1)
    return self.conv(self.channels, 3, dilation, dilation)

  def aspp(self, x, train):
    pool = layers.Indexed((layers.pool_builder(1), self.conv(self.channels, 1)),
                          name="image_pool")(x, train)
    outs = [layers.resize(pool, x.shape[1:3], self.align_corners)]
    branches = [self.aspp_branch(d) for d in self.dilations]
    outs += layers.ModuleList(len(branches), lambda i, name: branches[i](name=name),
                              name="aspp_modules")(x, train)
    return self.conv(self.channels, 3, 1)(name="bottleneck")(jnp.concatenate(outs, -1), train)

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    x = self.transform_inputs(inputs)
    return self.cls_seg(self.aspp(x, train), train)


class DepthwiseSeparableASPPHead(ASPPHead):
  """DeepLabV3+: separable ASPP branches, ``c1_bottleneck`` on ``inputs[0]`` and ``sep_bottleneck``."""
  TINY: ClassVar[dict] = dict(ASPPHead.TINY, c1_in_channels=8, c1_channels=4)
  c1_in_channels: int = 256
  c1_channels: int = 48

  def aspp_branch(self, dilation):
    if dilation == 1:
      return self.conv(self.channels, 1)
    return functools.partial(layers.DepthwiseSeparableConvModule, self.channels, 3,
                             padding=dilation, dilation=dilation, norm_cfg=self.norm_cfg,
                             act_cfg=self.act)

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    x = self.transform_inputs(inputs)
    out = self.aspp(x, train)
    if self.c1_in_channels > 0:
      layers.check_in_channels(inputs[0], self.c1_in_channels, "DepthwiseSeparableASPPHead c1")
      c1 = self.conv(self.c1_channels, 1)(name="c1_bottleneck")(inputs[0], train)
      out = layers.resize(out, c1.shape[1:3], self.align_corners)
      out = jnp.concatenate([out, c1], axis=-1)
    sep = functools.partial(layers.DepthwiseSeparableConvModule, self.channels, 3, padding=1,
                            norm_cfg=self.norm_cfg, act_cfg=self.act)
    out = layers.Indexed((sep, sep), name="sep_bottleneck")(out, train)
    return self.cls_seg(out, train)
