"""APCHead (mmseg ``apc_head.py``): Adaptive Context Modules, one per pooling scale."""
from __future__ import annotations

from typing import ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax import layers
from segjax.models.heads.decode_head import BaseDecodeHead


class ACM(nn.Module):
  """Adaptive Context Module: each pixel's affinity (``gla``, sigmoid) to the ``pool_scale`` x
  ``pool_scale`` pooled regions weights their features; a residual conv, and ``fusion_conv``
  when ``fusion``."""
  pool_scale: int
  fusion: bool
  channels: int
  norm_cfg: dict | None
  act_cfg: dict

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = lambda name: layers.conv_module(self.channels, 1, norm_cfg=self.norm_cfg,
                                           act_cfg=self.act_cfg, name=name)
    n, h, w = x.shape[:3]
    pooled_x = layers.adaptive_avg_pool(x, self.pool_scale)
    x = conv("input_redu_conv")(x, train)
    # (n, pool_scale**2, channels), regions in row-major order as torch's view flattens them.
    pooled_x = conv("pooled_redu_conv")(pooled_x, train).reshape(n, -1, self.channels)
    global_info = conv("global_info")(layers.adaptive_avg_pool(x, 1), train)
    affinity = layers.conv2d(self.pool_scale**2, 1, name="gla")(x + global_info)  # 1x1 -> (h, w): broadcast
    affinity = nn.sigmoid(affinity.reshape(n, h * w, self.pool_scale**2))
    z_out = jnp.matmul(affinity, pooled_x).reshape(n, h, w, self.channels)
    z_out = nn.relu(conv("residual_conv")(z_out, train) + x)
    if self.fusion:
      z_out = conv("fusion_conv")(z_out, train)
    return z_out


class APCHead(BaseDecodeHead):
  TINY: ClassVar[dict] = dict(in_channels=32, in_index=2, channels=8, pool_scales=(1, 2, 3),
                              num_classes=3, norm_cfg=dict(type="BN", requires_grad=True))
  pool_scales: Sequence[int] = (1, 2, 3, 6)
  fusion: bool = True

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    x = self.transform_inputs(inputs)
    acm = layers.ModuleList(
        len(self.pool_scales),
        lambda i, name: ACM(self.pool_scales[i], self.fusion, self.channels, self.norm_cfg,
                            self.act, name=name),
        name="acm_modules")
    outs = [x, *acm(x, train)]
    out = self.conv(self.channels, 3, 1)(name="bottleneck")(jnp.concatenate(outs, -1), train)
    return self.cls_seg(out, train)
