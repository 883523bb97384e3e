"""EMAHead (mmseg ``ema_head.py``): expectation-maximisation attention over ``num_bases`` bases."""
from __future__ import annotations

import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax import layers
from segjax.models.heads.decode_head import BaseDecodeHead


def normalize(x, p: int, axis: int, eps: float = 1e-12):
  """``F.normalize``: x / max(||x||_p, eps) along ``axis``."""
  norm = jnp.abs(x).sum(axis, keepdims=True) if p == 1 else jnp.sqrt((x * x).sum(axis, keepdims=True))
  return x / jnp.maximum(norm, eps)


class EMAModule(nn.Module):
  """mmseg ``EMAModule``. The ``bases`` buffer (1, channels, num_bases), as mmseg stores it, lives
  in the ``batch_stats`` collection: initialised N(0, 2 / num_bases) and L2-normalised over the
  channels; in training, after the forward, it moves towards the batch's L2-normalised mean bases
  with ``momentum`` (mmseg averages over GPUs too: here the batch is the global batch).

  The EM iterations run without gradient, as mmseg's ``torch.no_grad()``: the reconstruction
  gives no gradient to its input.
  """
  channels: int
  num_bases: int
  num_stages: int
  momentum: float

  @nn.compact
  def __call__(self, feats, train: bool = False):
    if self.num_stages < 1:
      raise ValueError(f"EMAModule: num_stages={self.num_stages}; it must be at least 1")
    layers.check_in_channels(feats, self.channels, "EMAModule")

    def init_bases():
      bases = jax.random.normal(self.make_rng("params"), (1, self.channels, self.num_bases))
      return normalize(bases * math.sqrt(2.0 / self.num_bases), p=2, axis=1)

    stored = self.variable("batch_stats", "bases", init_bases)
    n, h, w, c = feats.shape
    flat = jax.lax.stop_gradient(feats.reshape(n, h * w, c))
    bases = jnp.broadcast_to(stored.value.astype(feats.dtype), (n, c, self.num_bases))
    for _ in range(self.num_stages):
      attention = nn.softmax(jnp.einsum("nlc,nck->nlk", flat, bases), axis=2)
      attention_normed = normalize(attention, p=1, axis=1)
      bases = normalize(jnp.einsum("nlc,nlk->nck", flat, attention_normed), p=2, axis=1)
    recon = jnp.einsum("nck,nlk->nlc", bases, attention).reshape(n, h, w, c)

    if train and not self.is_initializing():
      mean_bases = normalize(bases.mean(axis=0, keepdims=True), p=2, axis=1)
      stored.value = (1 - self.momentum) * stored.value + self.momentum * mean_bases.astype(stored.value.dtype)
    return recon


class EMAHead(BaseDecodeHead):
  """EMANet: ``ema_in_conv`` (3x3) -> ``ema_mid_conv`` (1x1 conv with bias, no norm/activation;
  frozen in mmseg) -> ``ema_module`` -> ReLU -> ``ema_out_conv`` (1x1, norm) -> ReLU(+ identity)
  -> ``bottleneck`` (3x3) -> [``conv_cat`` over input and output] -> ``cls_seg``."""
  TINY: ClassVar[dict] = dict(in_channels=64, in_index=3, channels=8, ema_channels=8, num_bases=4,
                              num_stages=2, num_classes=3, norm_cfg=dict(type="BN", requires_grad=True))
  # Parameters mmseg creates with requires_grad=False: they get no gradient (nothing
  # differentiable depends on them, since the EM iterations run without gradient).
  FROZEN: ClassVar[tuple] = ("ema_mid_conv",)
  ema_channels: int = 512
  num_bases: int = 64
  num_stages: int = 3
  concat_input: bool = True
  momentum: float = 0.1

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    x = self.transform_inputs(inputs)
    feats = self.conv(self.ema_channels, 3, 1)(name="ema_in_conv")(x, train)
    identity = feats
    feats = layers.conv_module(self.ema_channels, 1, act_cfg=None, name="ema_mid_conv")(feats, train)
    recon = EMAModule(self.ema_channels, self.num_bases, self.num_stages, self.momentum,
                      name="ema_module")(feats, train)
    recon = layers.conv_module(self.ema_channels, 1, norm_cfg=self.norm_cfg, act_cfg=None,
                               name="ema_out_conv")(nn.relu(recon), train)
    out = self.conv(self.channels, 3, 1)(name="bottleneck")(nn.relu(identity + recon), train)
    if self.concat_input:
      out = self.conv(self.channels, 3, 1)(name="conv_cat")(jnp.concatenate([x, out], -1), train)
    return self.cls_seg(out, train)
