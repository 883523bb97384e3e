"""PSPHead (mmseg ``psp_head.py``) and its Pyramid Pooling Module, shared with UPerHead."""
from __future__ import annotations

from typing import ClassVar, Sequence

import flax.linen as nn

from segjax import layers
from segjax.models.heads.decode_head import BaseDecodeHead


class PPM(nn.Module):
  """``psp_modules``: branch ``i`` = AdaptiveAvgPool2d(scale) (``i.0``) + 1x1 ConvModule (``i.1``),
  each upsampled back to the input size, as ``layers.Resized`` for the bottleneck conv that
  follows in every user (its product with the pooled maps is taken before the upsampling)."""
  pool_scales: Sequence[int]
  channels: int
  norm_cfg: dict | None
  act_cfg: dict
  align_corners: bool

  @nn.compact
  def __call__(self, x, train: bool = False):
    outs = []
    for i, scale in enumerate(self.pool_scales):
      branch = layers.Indexed((layers.pool_builder(scale),
                               lambda name: layers.conv_module(self.channels, 1, norm_cfg=self.norm_cfg,
                                                               act_cfg=self.act_cfg, name=name)),
                              name=str(i))
      outs.append(layers.Resized(branch(x, train), x.shape[1:3], self.align_corners))
    return outs


class PSPHead(BaseDecodeHead):
  TINY: ClassVar[dict] = dict(in_channels=32, in_index=2, channels=8, pool_scales=(1, 2, 3, 6),
                              num_classes=3, norm_cfg=dict(type="BN", requires_grad=True))
  pool_scales: Sequence[int] = (1, 2, 3, 6)

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    x = self.transform_inputs(inputs)
    outs = [x] + PPM(tuple(self.pool_scales), self.channels, self.norm_cfg, self.act,
                     self.align_corners, name="psp_modules")(x, train)
    out = self.conv(self.channels, 3, 1)(name="bottleneck")(outs, train)  # the concatenation
    return self.cls_seg(out, train)
