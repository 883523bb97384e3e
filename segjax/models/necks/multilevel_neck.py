"""MultiLevelNeck (mmseg ``necks/multilevel_neck.py``): turns a plain ViT's same-resolution maps
into a pyramid: a 1x1 ``lateral_convs/<i>`` per input, a bilinear resize by ``scales[i]``
(``F.interpolate(scale_factor=...)``'s sampling), a 3x3 ``convs/<i>``."""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import flax.linen as nn

from segjax import layers


class MultiLevelNeck(nn.Module):
  TINY: ClassVar[dict] = dict(in_channels=(8, 16, 32, 64), out_channels=8, scales=(4, 2, 1, 0.5),
                              norm_cfg=dict(type="BN", requires_grad=True), act_cfg=dict(type="ReLU"))
  in_channels: Sequence[int]
  out_channels: int
  scales: Sequence[float] = (0.5, 1, 2, 4)
  norm_cfg: dict | None = None
  act_cfg: dict | None = None
  init_cfg: Any = None

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    if len(inputs) != len(self.in_channels):
      raise ValueError(f"MultiLevelNeck: {len(inputs)} inputs, but in_channels={list(self.in_channels)} "
                       f"lists {len(self.in_channels)}")
    for i, (x, c) in enumerate(zip(inputs, self.in_channels)):
      layers.check_in_channels(x, c, f"MultiLevelNeck input {i}")
    num_outs = len(self.scales)
    if len(inputs) not in (1, num_outs):
      raise ValueError(f"MultiLevelNeck: {len(inputs)} inputs for {num_outs} scales {list(self.scales)}; "
                       "expected one input or one per scale")
    conv = lambda kernel, padding: lambda i, name: layers.conv_module(
        self.out_channels, kernel, padding=padding, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg, name=name)
    laterals = layers.ModuleList(len(inputs), conv(1, 0), name="lateral_convs")(list(inputs), train)
    if len(laterals) == 1:
      laterals = laterals * num_outs
    resized = [layers.resize_by_scale(x, s) for x, s in zip(laterals, self.scales)]
    return tuple(layers.ModuleList(num_outs, conv(3, 1), name="convs")(resized, train))
