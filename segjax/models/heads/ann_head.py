"""ANNHead (mmseg ``ann_head.py``): asymmetric non-local attention whose keys and values are
pooled to a small pyramid (``key_pool_scales``): AFNB fuses two levels, APNB adds context."""
from __future__ import annotations

from typing import ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax import layers
from segjax.convert import CheckpointRules
from segjax.models.heads.decode_head import BaseDecodeHead


def ppm_concat(x, pool_scales: Sequence[int]):
  """mmseg ``PPMConcat``: (N, H, W, C) -> (N, sum s^2, C), each AdaptiveAvgPool2d(s) flattened
  row by row, in ``pool_scales`` order."""
  n, c = x.shape[0], x.shape[-1]
  return jnp.concatenate([layers.adaptive_avg_pool(x, s).reshape(n, s * s, c) for s in pool_scales], 1)


class SelfAttentionBlock(nn.Module):
  """mmseg's SelfAttentionBlock as ANN configures it: ``query_project`` / ``key_project`` one 1x1
  ConvModule each (with norm and activation; with ``share_key_query`` the query uses
  ``key_project``, as mmseg's shared module), ``value_project`` and ``out_project`` plain 1x1
  convs; keys and values pooled by ``ppm_concat``; softmax(q k^T / sqrt(channels)) v."""
  channels: int
  out_channels: int
  share_key_query: bool
  key_pool_scales: Sequence[int]
  norm_cfg: dict | None
  act_cfg: dict

  @nn.compact
  def __call__(self, query_feats, key_feats, train: bool = False):
    n, h, w, _ = query_feats.shape
    project = lambda name: layers.conv_module(self.channels, 1, norm_cfg=self.norm_cfg,
                                              act_cfg=self.act_cfg, name=name)
    key_project = project("key_project")
    query_project = key_project if self.share_key_query else project("query_project")
    query = query_project(query_feats, train).reshape(n, h * w, self.channels)
    key = ppm_concat(key_project(key_feats, train), self.key_pool_scales)
    value = ppm_concat(layers.conv2d(self.channels, 1, name="value_project")(key_feats), self.key_pool_scales)
    sim_map = nn.softmax(jnp.einsum("nqc,nkc->nqk", query, key) * self.channels**-0.5, axis=-1)
    context = (sim_map @ value).reshape(n, h, w, self.channels)
    # mmseg zero-initialises a plain-conv out projection.
    return layers.conv2d(self.out_channels, 1, name="out_project", kernel_init=nn.initializers.zeros)(context)


class Stages(nn.Module):
  """``stages``: one SelfAttentionBlock per query scale (``0``, ``1``, ...), outputs summed."""
  query_scales: Sequence[int]
  channels: int
  out_channels: int
  share_key_query: bool
  key_pool_scales: Sequence[int]
  norm_cfg: dict | None
  act_cfg: dict

  @nn.compact
  def __call__(self, query_feats, key_feats, train: bool = False):
    if any(s != 1 for s in self.query_scales):
      # mmseg max-pools the query by the scale, then reshapes the context to the unpooled size,
      # which leaves the wrong number of channels for the bottleneck: it fails there.
      raise ValueError(f"query_scales={tuple(self.query_scales)}: only 1 is supported; mmseg's "
                       "SelfAttentionBlock cannot reshape a pooled query's context back")
    outs = [SelfAttentionBlock(self.channels, self.out_channels, self.share_key_query,
                               tuple(self.key_pool_scales), self.norm_cfg, self.act_cfg,
                               name=str(i))(query_feats, key_feats, train)
            for i in range(len(self.query_scales))]
    return sum(outs[1:], outs[0])


class AFNB(nn.Module):
  """Asymmetric Fusion Non-local Block: queries from the high level, keys/values from the low
  level; ``bottleneck`` (1x1 ConvModule, no activation) over [context, high]."""
  channels: int
  out_channels: int
  query_scales: Sequence[int]
  key_pool_scales: Sequence[int]
  norm_cfg: dict | None
  act_cfg: dict

  @nn.compact
  def __call__(self, low_feats, high_feats, train: bool = False):
    context = Stages(tuple(self.query_scales), self.channels, self.out_channels, False,
                     tuple(self.key_pool_scales), self.norm_cfg, self.act_cfg,
                     name="stages")(high_feats, low_feats, train)
    return layers.conv_module(self.out_channels, 1, norm_cfg=self.norm_cfg, act_cfg=None,
                              name="bottleneck")(jnp.concatenate([context, high_feats], -1), train)


class APNB(nn.Module):
  """Asymmetric Pyramid Non-local Block: self-attention with shared key/query projection;
  ``bottleneck`` (1x1 ConvModule) over [context, feats]."""
  channels: int
  out_channels: int
  query_scales: Sequence[int]
  key_pool_scales: Sequence[int]
  norm_cfg: dict | None
  act_cfg: dict

  @nn.compact
  def __call__(self, feats, train: bool = False):
    context = Stages(tuple(self.query_scales), self.channels, self.out_channels, True,
                     tuple(self.key_pool_scales), self.norm_cfg, self.act_cfg,
                     name="stages")(feats, feats, train)
    return layers.conv_module(self.out_channels, 1, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg,
                              name="bottleneck")(jnp.concatenate([context, feats], -1), train)


class ANNHead(BaseDecodeHead):
  """ANNNet over two levels (``in_channels`` = (low, high), ``multiple_select``): ``fusion``
  (AFNB, out = high channels) -> Dropout2d -> ``bottleneck`` (3x3) -> ``context`` (APNB) ->
  ``cls_seg`` (with the same Dropout2d)."""
  TINY: ClassVar[dict] = dict(in_channels=(32, 64), in_index=(2, 3), channels=8, project_channels=4,
                              num_classes=3, norm_cfg=dict(type="BN", requires_grad=True))
  # APNB shares its key and query projection; mmseg's state_dict holds the shared module twice.
  CHECKPOINT_RULES: ClassVar[dict] = {"mmseg": CheckpointRules(
      skip=(r"^context\.stages\.\d+\.query_project\.",))}
  project_channels: int = 256
  query_scales: Sequence[int] = (1,)
  key_pool_scales: Sequence[int] = (1, 3, 6, 8)
  input_transform: str | None = "multiple_select"

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    if self.input_transform != "multiple_select" or len(self.in_channels) != 2:
      raise ValueError(f"ANNHead: in_channels={self.in_channels} with input_transform="
                       f"{self.input_transform!r}; expected two levels (low, high) and 'multiple_select'")
    low_feats, high_feats = self.transform_inputs(inputs)
    high_channels = self.in_channels[1]
    out = AFNB(self.project_channels, high_channels, tuple(self.query_scales), tuple(self.key_pool_scales),
               self.norm_cfg, self.act, name="fusion")(low_feats, high_feats, train)
    dropout = nn.Dropout(self.dropout_ratio, broadcast_dims=(1, 2),
                         deterministic=not self.stochastic(train), name="dropout")
    out = self.conv(self.channels, 3, 1)(name="bottleneck")(dropout(out), train)
    out = APNB(self.project_channels, self.channels, tuple(self.query_scales), tuple(self.key_pool_scales),
               self.norm_cfg, self.act, name="context")(out, train)
    return self.classifier()(dropout(out))
