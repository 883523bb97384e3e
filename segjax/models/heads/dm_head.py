"""DMHead (mmseg ``dm_head.py``): Dynamic Convolutional Modules, one per filter size."""
from __future__ import annotations

from typing import ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax import layers
from segjax.models.heads.decode_head import BaseDecodeHead


def dynamic_depthwise_conv(x, filters):
  """Each sample's channels convolved with their own generated filter, as mmseg's grouped
  ``F.conv2d`` over (1, n*c, h, w) computes it: ``filters`` (n, k, k, c); zero padding
  (k-1)//2 each side for odd k, one more at the top/left for even k; output size = input size."""
  k = filters.shape[1]
  pad = (k - 1) // 2
  before = pad if (k - 1) % 2 == 0 else pad + 1
  h, w = x.shape[1:3]
  padded = jnp.pad(x, ((0, 0), (before, pad), (before, pad), (0, 0)))
  out = 0
  for i in range(k):
    for j in range(k):
      out = out + padded[:, i:i + h, j:j + w] * filters[:, i:i + 1, j:j + 1]
  return out


class DCM(nn.Module):
  """Dynamic Convolutional Module: a ``filter_size`` x ``filter_size`` depthwise filter per sample
  and channel, generated (``filter_gen_conv``) from the adaptively pooled input, applied to the
  reduced input, then ``norm``, activation and ``fusion_conv`` when ``fusion``."""
  filter_size: int
  fusion: bool
  channels: int
  norm_cfg: dict | None
  act_cfg: dict

  @nn.compact
  def __call__(self, x, train: bool = False):
    filters = layers.conv2d(self.channels, 1, name="filter_gen_conv")(
        layers.adaptive_avg_pool(x, self.filter_size))
    x = layers.conv_module(self.channels, 1, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg,
                           name="input_redu_conv")(x, train)
    out = dynamic_depthwise_conv(x, filters)
    if self.norm_cfg is not None:
      out = layers.norm_layer(self.norm_cfg, name="norm")(out, train)
    out = layers.activation(self.act_cfg)(out)
    if self.fusion:
      out = layers.conv_module(self.channels, 1, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg,
                               name="fusion_conv")(out, train)
    return out


class DMHead(BaseDecodeHead):
  TINY: ClassVar[dict] = dict(in_channels=32, in_index=2, channels=8, filter_sizes=(1, 2, 3),
                              fusion=True, num_classes=3, norm_cfg=dict(type="BN", requires_grad=True))
  filter_sizes: Sequence[int] = (1, 3, 5, 7)
  fusion: bool = False

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    x = self.transform_inputs(inputs)
    dcm = layers.ModuleList(
        len(self.filter_sizes),
        lambda i, name: DCM(self.filter_sizes[i], self.fusion, self.channels, self.norm_cfg,
                            self.act, name=name),
        name="dcm_modules")
    outs = [x, *dcm(x, train)]
    out = self.conv(self.channels, 3, 1)(name="bottleneck")(jnp.concatenate(outs, -1), train)
    return self.cls_seg(out, train)
