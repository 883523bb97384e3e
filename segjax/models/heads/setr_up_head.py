"""SETRUPHead (mmseg ``setr_up_head.py``): SETR's naive (one conv, x4) and progressive (PUP: four
conv + x2 stages) upsampling heads over one ViT level."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn

from segjax import layers
from segjax.models.heads.decode_head import BaseDecodeHead

SETR_LN = {"type": "LN", "eps": 1e-6, "requires_grad": True}


class SETRUPHead(BaseDecodeHead):
  """LayerNorm ``norm`` over the input's channels, then ``up_convs/<i>``: ConvModule (child
  ``0``) and a bilinear x``up_scale`` Upsample (``F.interpolate(scale_factor)``), then
  ``cls_seg``."""
  TINY: ClassVar[dict] = dict(in_channels=64, in_index=3, channels=8, num_convs=2, up_scale=2,
                              kernel_size=3, num_classes=3, norm_cfg=dict(type="BN", requires_grad=True))
  norm_layer: dict = dataclasses.field(default_factory=lambda: dict(SETR_LN))
  num_convs: int = 1
  up_scale: int = 4
  kernel_size: int = 3

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    if self.kernel_size not in (1, 3):
      raise ValueError(f"SETRUPHead: kernel_size={self.kernel_size}; expected 1 or 3")
    if not isinstance(self.in_channels, int):
      raise ValueError(f"SETRUPHead: in_channels={self.in_channels} must be one int (one input level)")
    x = self.transform_inputs(inputs)
    x = layers.LayerNorm(layers.layer_norm_epsilon(self.norm_layer), name="norm")(x)
    conv = self.conv(self.channels, self.kernel_size, (self.kernel_size - 1) // 2)
    upsample = lambda name: lambda x, train: layers.resize_by_scale(x, self.up_scale, self.align_corners)
    stage = lambda name: layers.Indexed((conv, upsample), name=name)
    x = layers.Indexed((stage,) * self.num_convs, name="up_convs")(x, train)
    return self.cls_seg(x, train)
