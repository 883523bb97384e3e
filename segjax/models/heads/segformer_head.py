"""SegformerHead (mmseg ``segformer_head.py``): the all-MLP decoder."""
from __future__ import annotations

from typing import ClassVar

import flax.linen as nn

from segjax import layers
from segjax.models.heads.decode_head import BaseDecodeHead


class SegformerHead(BaseDecodeHead):
  """Each input through a 1x1 ConvModule with the head's norm and activation (``convs.i``),
  resized to the first input's size, concatenated and fused by a 1x1 ConvModule
  (``fusion_conv``: mmseg gives it the head's norm but ConvModule's default ReLU), then
  ``cls_seg``."""
  TINY: ClassVar[dict] = dict(in_channels=(8, 16, 32, 64), in_index=(0, 1, 2, 3), channels=8,
                              num_classes=3, norm_cfg=dict(type="BN", requires_grad=True))
  interpolate_mode: str = "bilinear"
  input_transform: str | None = "multiple_select"

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    if self.interpolate_mode != "bilinear":
      raise ValueError(f"SegformerHead: interpolate_mode={self.interpolate_mode!r}; segjax has 'bilinear'")
    if self.input_transform != "multiple_select":
      raise ValueError("SegformerHead always selects several inputs (mmseg forces "
                       f"input_transform='multiple_select'), got {self.input_transform!r}")
    if len(self.in_channels) != len(self.in_index):
      raise ValueError(f"SegformerHead: in_channels={tuple(self.in_channels)} and in_index="
                       f"{tuple(self.in_index)} must have the same length")
    feats = self.transform_inputs(inputs)
    conv = self.conv(self.channels, 1)
    outs = layers.ModuleList(len(feats), lambda i, name: conv(name=name), name="convs")(feats, train)
    size = feats[0].shape[1:3]
    outs = [layers.Resized(o, size, self.align_corners) for o in outs]
    fusion = layers.conv_module(self.channels, 1, norm_cfg=self.norm_cfg, name="fusion_conv")
    out = fusion(outs, train)  # their concatenation, never made (layers.PointwiseConv)
    return self.cls_seg(out, train)
