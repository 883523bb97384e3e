"""SETRMLAHead (mmseg ``setr_mla_head.py``): SETR's multi-level aggregation head over the MLANeck's
levels: two 3x3 ConvModules and a bilinear x``up_scale`` per level, concatenated, ``cls_seg``."""
from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from segjax import layers
from segjax.models.heads.decode_head import BaseDecodeHead


class SETRMLAHead(BaseDecodeHead):
  """``up_convs/<i>`` = Sequential(ConvModule ``0``, ConvModule ``1``, Upsample); ``channels`` must
  be ``len(in_channels) * mla_channels``, the concatenation's width."""
  # mmseg's levels share one resolution (the MLANeck's): the pyramid's last level four times.
  TINY: ClassVar[dict] = dict(in_channels=(64, 64, 64, 64), in_index=(3, 3, 3, 3), channels=16,
                              mla_channels=4, up_scale=2, num_classes=3,
                              norm_cfg=dict(type="BN", requires_grad=True))
  mla_channels: int = 128
  up_scale: int = 4
  input_transform: str | None = "multiple_select"

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    if self.channels != len(self.in_channels) * self.mla_channels:
      raise ValueError(f"SETRMLAHead: channels={self.channels} must equal len(in_channels) * "
                       f"mla_channels = {len(self.in_channels)} * {self.mla_channels}")
    feats = self.transform_inputs(inputs)
    conv = self.conv(self.mla_channels, 3, 1)
    upsample = lambda name: lambda x, train: layers.resize_by_scale(x, self.up_scale, self.align_corners)
    up_convs = layers.ModuleList(
        len(feats), lambda i, name: layers.Indexed((conv, conv, upsample), name=name), name="up_convs")
    return self.cls_seg(jnp.concatenate(up_convs(feats, train), axis=-1), train)
