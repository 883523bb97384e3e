"""ICNeck (mmseg ``necks/ic_neck.py``): ICNet's cascade feature fusion of its three branches."""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import flax.linen as nn

from segjax import layers

BN = {"type": "BN"}


class CascadeFeatureFusion(nn.Module):
  """Upsample the low-resolution feature to the high one, ``conv_low`` (3x3, dilation 2) and
  ``conv_high`` (1x1), ReLU of their sum. Returns (fused, conv_low's output); the latter feeds an
  auxiliary head (mmseg's replacement for the paper's separate classifier)."""
  out_channels: int
  norm_cfg: dict
  act_cfg: dict
  align_corners: bool = False

  @nn.compact
  def __call__(self, x_low, x_high, train: bool = False):
    x_low = layers.resize(x_low, x_high.shape[1:3], self.align_corners)
    x_low = layers.conv_module(self.out_channels, 3, 1, 2, 2, norm_cfg=self.norm_cfg,
                               act_cfg=self.act_cfg, name="conv_low")(x_low, train)
    x_high = layers.conv_module(self.out_channels, 1, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg,
                                name="conv_high")(x_high, train)
    return nn.relu(x_low + x_high), x_low


class ICNeck(nn.Module):
  """mmseg ``ICNeck``: inputs (sub1 1/8, sub2 1/16, sub4 1/32) -> (x_24 at 1/16, x_12 at 1/8,
  fused at 1/8): the first two for auxiliary heads, the last for the decode head."""
  # mmseg's ICNeck takes exactly three levels: the registry test feeds it strides 8, 16, 32.
  TINY: ClassVar[dict] = dict(in_channels=(16, 32, 64), out_channels=8)
  TINY_PYRAMID: ClassVar[tuple] = ((16, 8), (32, 16), (64, 32))
  in_channels: Sequence[int] = (64, 256, 256)
  out_channels: int = 128
  conv_cfg: Any = None
  norm_cfg: dict = None
  act_cfg: dict = None
  align_corners: bool = False
  init_cfg: Any = None

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    if len(self.in_channels) != 3:
      raise ValueError(f"ICNeck: in_channels={tuple(self.in_channels)} needs 3 entries")
    if len(inputs) != 3:
      raise ValueError(f"ICNeck: expects the 3 feature maps of ICNet (sub1, sub2, sub4), got {len(inputs)}")
    for x, c, what in zip(inputs, self.in_channels, ("sub1", "sub2", "sub4")):
      layers.check_in_channels(x, c, f"ICNeck {what}")
    norm_cfg = dict(self.norm_cfg or BN)
    act_cfg = dict(self.act_cfg or layers.RELU)
    x_sub1, x_sub2, x_sub4 = inputs
    x_cff_24, x_24 = CascadeFeatureFusion(self.out_channels, norm_cfg, act_cfg, self.align_corners,
                                          name="cff_24")(x_sub4, x_sub2, train)
    x_cff_12, x_12 = CascadeFeatureFusion(self.out_channels, norm_cfg, act_cfg, self.align_corners,
                                          name="cff_12")(x_cff_24, x_sub1, train)
    return [x_24, x_12, x_cff_12]
