"""UPerHead (mmseg ``uper_head.py``): PPM on the last level, FPN over the rest."""
from __future__ import annotations

from typing import ClassVar, Sequence

import flax.linen as nn

from segjax import layers
from segjax.models.heads.decode_head import BaseDecodeHead
from segjax.models.heads.psp import PPM


class UPerHead(BaseDecodeHead):
  TINY: ClassVar[dict] = dict(in_channels=(8, 16, 32, 64), in_index=(0, 1, 2, 3), channels=8,
                              num_classes=3, norm_cfg=dict(type="BN", requires_grad=True))
  pool_scales: Sequence[int] = (1, 2, 3, 6)
  input_transform: str | None = "multiple_select"

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    feats = self.transform_inputs(inputs)
    top = feats[-1]
    psp = [top] + PPM(tuple(self.pool_scales), self.channels, self.norm_cfg, self.act,
                      self.align_corners, name="psp_modules")(top, train)
    psp_out = self.conv(self.channels, 3, 1)(name="bottleneck")(psp, train)  # the concatenation

    lateral, fpn = self.conv(self.channels, 1), self.conv(self.channels, 3, 1)
    lateral_convs = layers.ModuleList(
        len(feats) - 1, lambda i, name: lateral(name=name), name="lateral_convs")
    laterals = lateral_convs(feats[:-1], train) + [psp_out]
    for i in range(len(laterals) - 1, 0, -1):
      laterals[i - 1] = laterals[i - 1] + layers.resize(laterals[i], laterals[i - 1].shape[1:3],
                                                        self.align_corners)
    fpn_convs = layers.ModuleList(
        len(feats) - 1, lambda i, name: fpn(name=name), name="fpn_convs")
    fpn_outs = fpn_convs(laterals[:-1], train) + [laterals[-1]]
    size = fpn_outs[0].shape[1:3]
    fpn_outs = [fpn_outs[0]] + [layers.Resized(f, size, self.align_corners) for f in fpn_outs[1:]]
    out = self.conv(self.channels, 3, 1)(name="fpn_bottleneck")(fpn_outs, train)  # the concatenation
    return self.cls_seg(out, train)
