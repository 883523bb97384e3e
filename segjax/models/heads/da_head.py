"""DAHead (mmseg ``da_head.py``): position (PAM) and channel (CAM) attention, three outputs, three
losses (``pam_cam``, ``pam``, ``cam``); inference uses ``pam_cam``."""
from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from segjax import layers, losses
from segjax.models.heads.decode_head import BaseDecodeHead


class PAM(nn.Module):
  """Position attention: mmseg's SelfAttentionBlock with plain 1x1 convs ``query_project``,
  ``key_project`` (``channels`` out) and ``value_project`` (``in_channels`` out), no scaling, no
  out projection; output ``gamma`` * context + x."""
  in_channels: int
  channels: int

  @nn.compact
  def __call__(self, x):
    n, h, w, c = x.shape
    query = layers.conv2d(self.channels, 1, name="query_project")(x).reshape(n, h * w, self.channels)
    key = layers.conv2d(self.channels, 1, name="key_project")(x).reshape(n, h * w, self.channels)
    value = layers.conv2d(self.in_channels, 1, name="value_project")(x).reshape(n, h * w, c)
    context = layers.softmax_attention(query, key, value).reshape(n, h, w, c)
    return layers.Scale(0.0, name="gamma")(context) + x


class CAM(nn.Module):
  """Channel attention: softmax over channels of (max energy - energy), energy = X X^T for X the
  (C, HW) feature; output ``gamma`` * attention X + x."""

  @nn.compact
  def __call__(self, x):
    n, h, w, c = x.shape
    flat = x.reshape(n, h * w, c)
    energy = jnp.einsum("nlc,nld->ncd", flat, flat)
    attention = nn.softmax(energy.max(axis=-1, keepdims=True) - energy, axis=-1)
    out = jnp.einsum("ncd,nld->nlc", attention, flat).reshape(n, h, w, c)
    return layers.Scale(0.0, name="gamma")(out) + x


class DAHead(BaseDecodeHead):
  """Dual Attention Network: ``pam_in_conv`` -> ``pam`` -> ``pam_out_conv`` -> ``pam_conv_seg``,
  the same for ``cam``, and ``conv_seg`` on the sum of both features. One Dropout2d (``dropout``)
  before each of the three classifiers, as mmseg shares ``self.dropout``."""
  TINY: ClassVar[dict] = dict(in_channels=64, in_index=3, channels=8, pam_channels=4, num_classes=3,
                              norm_cfg=dict(type="BN", requires_grad=True))
  pam_channels: int = 64

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    """(pam_cam, pam, cam) logits, as mmseg's forward."""
    x = self.transform_inputs(inputs)
    dropout = (lambda f: f) if self.dropout_ratio <= 0 else nn.Dropout(
        self.dropout_ratio, broadcast_dims=(1, 2), deterministic=not self.stochastic(train), name="dropout")
    pam_feat = self.conv(self.channels, 3, 1)(name="pam_in_conv")(x, train)
    pam_feat = PAM(self.channels, self.pam_channels, name="pam")(pam_feat)
    pam_feat = self.conv(self.channels, 3, 1)(name="pam_out_conv")(pam_feat, train)
    pam_out = layers.conv2d(self.num_classes, 1, name="pam_conv_seg")(dropout(pam_feat))

    cam_feat = self.conv(self.channels, 3, 1)(name="cam_in_conv")(x, train)
    cam_feat = CAM(name="cam")(cam_feat)
    cam_feat = self.conv(self.channels, 3, 1)(name="cam_out_conv")(cam_feat, train)
    cam_out = layers.conv2d(self.num_classes, 1, name="cam_conv_seg")(dropout(cam_feat))

    pam_cam_out = self.classifier()(dropout(pam_feat + cam_feat))
    return pam_cam_out, pam_out, cam_out

  def forward_test(self, inputs, test_cfg=None, prev_output=None, train: bool = False):
    """Only ``pam_cam`` is used at test time."""
    del test_cfg, prev_output
    return self(inputs, train=train)[0]

  def losses(self, seg_logit, labels) -> dict:
    """mmseg's losses of each output, prefixed ``pam_cam.``, ``pam.``, ``cam.``."""
    out = {}
    for prefix, logit in zip(("pam_cam", "pam", "cam"), seg_logit):
      out.update(losses.add_prefix(super().losses(logit, labels), prefix))
    return out
