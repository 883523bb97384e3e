"""OCRHead (mmseg ``ocr_head.py``): object-contextual representations, the second stage of a
CascadeEncoderDecoder whose first stage (an FCNHead) gives the soft object regions."""
from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from segjax import layers
from segjax.models.heads.decode_head import BaseCascadeDecodeHead


def spatial_gather(feats, probs, scale: float):
  """mmseg ``SpatialGatherModule``: each class's context, the features averaged with
  softmax(scale * class logit) over all positions. (N, H, W, C), (N, H, W, K) -> (N, K, 1, C),
  mmseg's (N, C, K, 1) in NHWC."""
  n, h, w, c = feats.shape
  k = probs.shape[-1]
  weights = nn.softmax(scale * probs.reshape(n, h * w, k), axis=1)
  context = jnp.einsum("npk,npc->nkc", weights, feats.reshape(n, h * w, c))
  return context[:, :, None, :]


class ObjectAttentionBlock(nn.Module):
  """mmseg ``ObjectAttentionBlock``: its SelfAttentionBlock (``query_project`` / ``key_project``
  two 1x1 ConvModules each, ``value_project`` / ``out_project`` one, softmax(q k^T / sqrt(channels)))
  of the pixels over the class contexts, then ``bottleneck`` over [context, pixels]."""
  in_channels: int
  channels: int
  scale: int
  norm_cfg: dict | None
  act_cfg: dict

  @nn.compact
  def __call__(self, query_feats, key_feats, train: bool = False):
    if self.scale > 1:
      # mmseg max-pools the query by ``scale`` and then reshapes its context to the unpooled
      # size, which leaves channels / scale^2 channels for ``out_project``: its forward fails.
      raise ValueError(f"OCRHead: scale={self.scale} > 1 is not supported; mmseg's ObjectAttentionBlock "
                       "cannot reshape a pooled query's context back (only scale=1 runs)")
    conv = lambda features: (lambda name: layers.conv_module(features, 1, norm_cfg=self.norm_cfg,
                                                             act_cfg=self.act_cfg, name=name))
    two_convs = lambda name: layers.Indexed((conv(self.channels), conv(self.channels)), name=name)
    n, h, w, _ = query_feats.shape
    query = two_convs("query_project")(query_feats, train).reshape(n, h * w, self.channels)
    key = two_convs("key_project")(key_feats, train)
    value = conv(self.channels)("value_project")(key_feats, train)
    key = key.reshape(n, -1, self.channels)
    value = value.reshape(n, -1, self.channels)
    sim_map = nn.softmax(self.channels**-0.5 * jnp.einsum("nqc,nkc->nqk", query, key), axis=-1)
    context = jnp.matmul(sim_map, value).reshape(n, h, w, self.channels)
    context = conv(self.in_channels)("out_project")(context, train)
    return conv(self.in_channels)("bottleneck")(jnp.concatenate([context, query_feats], -1), train)


class OCRHead(BaseCascadeDecodeHead):
  """``bottleneck`` (3x3 ConvModule to ``channels``), the class contexts from the previous
  stage's logits (``scale`` sharpens their softmax), ``object_context_block``, ``conv_seg``."""
  TINY: ClassVar[dict] = dict(in_channels=8, in_index=0, channels=8, ocr_channels=4, num_classes=3,
                              norm_cfg=dict(type="BN", requires_grad=True))
  ocr_channels: int = None
  scale: int = 1

  @nn.compact
  def __call__(self, inputs, prev_output, train: bool = False):
    if self.ocr_channels is None:
      raise ValueError("OCRHead: ocr_channels (the channels of the object attention) is required")
    x = self.transform_inputs(inputs)
    if prev_output.shape[:3] != x.shape[:3]:
      raise ValueError(f"OCRHead: the previous stage's logits {tuple(prev_output.shape)} must have the "
                       f"feature's batch and size {tuple(x.shape[:3])} (mmseg reshapes them together)")
    feats = self.conv(self.channels, 3, 1)(name="bottleneck")(x, train)
    context = spatial_gather(feats, prev_output, self.scale)
    object_context = ObjectAttentionBlock(self.channels, self.ocr_channels, self.scale, self.norm_cfg,
                                          self.act, name="object_context_block")(feats, context, train)
    return self.cls_seg(object_context, train)
