"""JPU (mmseg ``necks/jpu.py``): FastFCN's Joint Pyramid Upsampling. Each level's 3x3 conv,
upsampled to the finest level and concatenated, goes through dilated depthwise-separable convs
whose outputs are concatenated; the levels below the last are passed through for auxiliary heads."""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax import layers


class JPU(nn.Module):
  """Children ``conv_layers/<i>/0`` (ConvModule) and ``dilation_layers/<i>/0``
  (DepthwiseSeparableConvModule: depthwise conv + norm without activation, pointwise conv +
  norm + activation), as mmseg's state_dict names them. Out: ``inputs[start_level:end - 1]`` and
  the JPU feature (len(dilations) * mid_channels channels at the finest level's size)."""
  TINY: ClassVar[dict] = dict(in_channels=(8, 16, 32, 64), mid_channels=4, start_level=1,
                              dilations=(1, 2), norm_cfg=dict(type="BN", requires_grad=True))
  in_channels: Sequence[int] = (512, 1024, 2048)
  mid_channels: int = 512
  start_level: int = 0
  end_level: int = -1
  dilations: Sequence[int] = (1, 2, 4, 8)
  align_corners: bool = False
  conv_cfg: dict | None = None
  norm_cfg: dict | None = None  # None means mmseg's default BN
  act_cfg: dict | None = None  # None means mmseg's default ReLU
  init_cfg: Any = None

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    if self.conv_cfg is not None:
      raise ValueError(f"JPU: conv_cfg={dict(self.conv_cfg)} is not supported; only plain convs (None)")
    if len(inputs) != len(self.in_channels):
      raise ValueError(f"JPU: {len(inputs)} inputs but in_channels={tuple(self.in_channels)} "
                       f"names {len(self.in_channels)}")
    end = len(self.in_channels) if self.end_level == -1 else self.end_level
    if not 0 <= self.start_level < end <= len(self.in_channels):
      raise ValueError(f"JPU: start_level={self.start_level}, end_level={self.end_level} do not "
                       f"select levels of in_channels={tuple(self.in_channels)}")
    norm_cfg = dict(self.norm_cfg) if self.norm_cfg is not None else {"type": "BN"}
    act_cfg = dict(self.act_cfg) if self.act_cfg is not None else layers.RELU
    for i in range(self.start_level, end):
      layers.check_in_channels(inputs[i], self.in_channels[i], f"JPU level {i}")

    def conv_layer(i, name):
      conv = lambda name: layers.conv_module(self.mid_channels, 3, padding=1, norm_cfg=norm_cfg,
                                             act_cfg=act_cfg, name=name)
      return layers.Indexed((conv,), name=name)

    feats = layers.ModuleList(end - self.start_level, conv_layer, name="conv_layers")(
        list(inputs[self.start_level:end]), train)
    size = feats[0].shape[1:3]
    feat = jnp.concatenate([feats[0]] + [layers.resize(f, size, self.align_corners) for f in feats[1:]], -1)

    def dilation_layer(i, name):
      d = self.dilations[i]
      separable = lambda name: layers.DepthwiseSeparableConvModule(
          self.mid_channels, 3, 1, d, d, norm_cfg=norm_cfg, act_cfg=act_cfg, dw_act_cfg=None, name=name)
      return layers.Indexed((separable,), name=name)

    concat_feat = jnp.concatenate(
        layers.ModuleList(len(self.dilations), dilation_layer, name="dilation_layers")(feat, train), -1)
    return (*inputs[self.start_level:end - 1], concat_feat)
