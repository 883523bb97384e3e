"""CCHead (mmseg ``cc_head.py``) and mmcv's ``CrissCrossAttention`` in plain JAX."""
from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax import layers
from segjax.models.heads.nl_head import BlockFCNHead


def criss_cross_attention(query, key, value):
  """Each pixel attends to the pixels of its column and its row, one softmax over both, itself
  counted once (mmcv >= 1.3.13's formula: the column's diagonal is masked with -inf, so the
  pixel enters through its row). ``query``/``key`` (N, H, W, C'), ``value`` (N, H, W, C) ->
  (N, H, W, C)."""
  height = query.shape[1]
  # energy_h[n, h, w, i] = q[n, h, w] . k[n, i, w] (column), energy_w[n, h, w, j] = q[n, h, w] . k[n, h, j] (row)
  energy_h = jnp.einsum("nhwc,niwc->nhwi", query, key)
  energy_h = jnp.where(jnp.eye(height, dtype=bool)[:, None, :], -jnp.inf, energy_h)
  energy_w = jnp.einsum("nhwc,nhjc->nhwj", query, key)
  attention = jax.nn.softmax(jnp.concatenate([energy_h, energy_w], axis=-1), axis=-1)
  out = jnp.einsum("niwc,nhwi->nhwc", value, attention[..., :height])
  return out + jnp.einsum("nhjc,nhwj->nhwc", value, attention[..., height:])


class CrissCrossAttention(nn.Module):
  """mmcv ``CrissCrossAttention``: 1x1 ``query_conv``/``key_conv`` (in_channels // 8) and
  ``value_conv``, output ``gamma`` * attention + x."""
  in_channels: int

  @nn.compact
  def __call__(self, x):
    layers.check_in_channels(x, self.in_channels, "CrissCrossAttention")
    if self.in_channels // 8 < 1:
      raise ValueError(f"CrissCrossAttention: in_channels={self.in_channels}; query/key have "
                       "in_channels // 8 channels, so at least 8 are needed")
    query = layers.conv2d(self.in_channels // 8, 1, name="query_conv")(x)
    key = layers.conv2d(self.in_channels // 8, 1, name="key_conv")(x)
    value = layers.conv2d(self.in_channels, 1, name="value_conv")(x)
    out = criss_cross_attention(query, key, value)
    return layers.Scale(0.0, name="gamma")(out) + x


class CCHead(BlockFCNHead):
  """CCNet: ``cca`` (one CrissCrossAttention over ``channels``) applied ``recurrence`` times."""
  TINY: ClassVar[dict] = dict(in_channels=64, in_index=3, channels=16, num_classes=3,
                              norm_cfg=dict(type="BN", requires_grad=True))
  recurrence: int = 2

  def block(self, x, train: bool):
    cca = CrissCrossAttention(self.channels, name="cca")
    for _ in range(self.recurrence):
      x = cca(x)
    return x
