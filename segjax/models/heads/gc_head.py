"""GCHead (mmseg ``gc_head.py``) and mmcv's ``ContextBlock`` (GCNet)."""
from __future__ import annotations

from typing import ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax import layers
from segjax.models.heads.nl_head import BlockFCNHead

POOLING_TYPES = ("att", "avg")
FUSION_TYPES = ("channel_add", "channel_mul")
KAIMING_FAN_IN = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # mmcv's conv_mask init


class ContextLayerNorm(nn.Module):
  """``nn.LayerNorm([planes, 1, 1])`` on the (N, 1, 1, planes) context: over the channels, with
  PyTorch's variance, ``weight``/``bias`` of shape (planes, 1, 1) as mmcv stores them."""
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x):
    planes = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (planes, 1, 1), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (planes, 1, 1), jnp.float32)
    centered = x - x.mean(-1, keepdims=True)
    var = (centered * centered).mean(-1, keepdims=True)
    y = centered * jax.lax.rsqrt(var + self.epsilon)
    return y * scale.reshape(planes).astype(x.dtype) + bias.reshape(planes).astype(x.dtype)


class ContextBlock(nn.Module):
  """mmcv ``ContextBlock``, NHWC: a (N, 1, 1, C) context pooled by attention (``conv_mask``, softmax
  over positions) or by averaging, transformed by ``channel_add_conv`` / ``channel_mul_conv``
  (1x1 conv ``0``, LayerNorm over the ``planes`` channels ``1``, ReLU, 1x1 conv ``3``) and added to
  / multiplied (sigmoid) into the input."""
  in_channels: int
  ratio: float
  pooling_type: str = "att"
  fusion_types: Sequence[str] = ("channel_add",)

  def transform(self, context, name: str):
    planes = int(self.in_channels * self.ratio)
    return layers.Indexed((
        lambda name: (lambda x, train: layers.conv2d(planes, 1, name=name)(x)),
        lambda name: (lambda x, train: ContextLayerNorm(name=name)(x)),
        lambda name: (lambda x, train: nn.relu(x)),
        # mmcv zero-initialises the last conv: the block starts as the identity.
        lambda name: (lambda x, train: layers.conv2d(self.in_channels, 1, name=name,
                                                     kernel_init=nn.initializers.zeros)(x)),
    ), name=name)(context)

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.pooling_type not in POOLING_TYPES:
      raise ValueError(f"ContextBlock: pooling_type={self.pooling_type!r}; expected one of {POOLING_TYPES}")
    unknown = [f for f in self.fusion_types if f not in FUSION_TYPES]
    if unknown or not self.fusion_types:
      raise ValueError(f"ContextBlock: fusion_types={tuple(self.fusion_types)}; expected a non-empty "
                       f"sequence of {FUSION_TYPES}")
    layers.check_in_channels(x, self.in_channels, "ContextBlock")
    n, h, w, c = x.shape
    if self.pooling_type == "att":
      mask = layers.conv2d(1, 1, name="conv_mask", kernel_init=KAIMING_FAN_IN)(x).reshape(n, h * w)
      mask = nn.softmax(mask, axis=-1)
      context = jnp.einsum("nl,nlc->nc", mask, x.reshape(n, h * w, c))[:, None, None]
    else:
      context = layers.adaptive_avg_pool(x, 1)
    out = x
    if "channel_mul" in self.fusion_types:
      out = out * nn.sigmoid(self.transform(context, "channel_mul_conv"))
    if "channel_add" in self.fusion_types:
      out = out + self.transform(context, "channel_add_conv")
    return out


class GCHead(BlockFCNHead):
  """GCNet: ``gc_block`` (ContextBlock over ``channels``)."""
  TINY: ClassVar[dict] = dict(in_channels=64, in_index=3, channels=8, num_classes=3,
                              norm_cfg=dict(type="BN", requires_grad=True))
  ratio: float = 1 / 4.
  pooling_type: str = "att"
  fusion_types: Sequence[str] = ("channel_add",)

  def block(self, x, train: bool):
    return ContextBlock(self.channels, self.ratio, self.pooling_type, tuple(self.fusion_types),
                        name="gc_block")(x, train)
