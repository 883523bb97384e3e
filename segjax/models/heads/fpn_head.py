"""FPNHead (mmseg ``fpn_head.py``): Semantic FPN, each level's ``scale_heads`` branch upsampled
by 2 per conv to the first level's stride, then summed."""
from __future__ import annotations

from typing import ClassVar, Sequence

import flax.linen as nn
import numpy as np

from segjax import layers
from segjax.models.heads.decode_head import BaseDecodeHead


class FPNHead(BaseDecodeHead):
  TINY: ClassVar[dict] = dict(in_channels=(8, 16, 32, 64), in_index=(0, 1, 2, 3),
                              feature_strides=(4, 8, 16, 32), channels=8, num_classes=3,
                              norm_cfg=dict(type="BN", requires_grad=True))
  feature_strides: Sequence[int] = None
  input_transform: str | None = "multiple_select"

  def upsample(self, name):
    """mmseg ``Upsample(scale_factor=2, mode='bilinear')``: a parameter-free Sequential entry."""
    del name
    return lambda x, train: layers.resize(x, (2 * x.shape[1], 2 * x.shape[2]), self.align_corners)

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    strides = tuple(self.feature_strides or ())
    if not strides or len(strides) != len(self.in_channels) or min(strides) != strides[0]:
      raise ValueError(f"FPNHead: feature_strides={self.feature_strides} must have one stride per "
                       f"in_channels entry ({len(self.in_channels)}), the first the smallest")

    def scale_head(i, name):
      head_length = max(1, int(np.log2(strides[i]) - np.log2(strides[0])))
      builders = []
      for _ in range(head_length):
        builders.append(self.conv(self.channels, 3, 1))
        if strides[i] != strides[0]:
          builders.append(self.upsample)
      return layers.Indexed(tuple(builders), name=name)

    outs = layers.ModuleList(len(strides), scale_head, name="scale_heads")(self.transform_inputs(inputs), train)
    output = outs[0]
    for out in outs[1:]:
      output = output + layers.resize(out, output.shape[1:3], self.align_corners)
    return self.cls_seg(output, train)
