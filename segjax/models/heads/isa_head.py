"""ISAHead (mmseg ``isa_head.py``): interlaced sparse self-attention, a global relation between
pixels at the same offset of every ``down_factor`` group, then a local relation inside each group."""
from __future__ import annotations

import math
from typing import ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax import layers
from segjax.models.heads.decode_head import BaseDecodeHead


class SelfAttentionBlock(nn.Module):
  """mmseg's ``SelfAttentionBlock`` as ISAHead configures it: query and key each two 1x1
  ConvModules (``query_project.0/1``, ``key_project.0/1``), the value one plain 1x1 conv
  (``value_project``, ``in_channels`` out), softmax(q k^T / sqrt(channels)), no out projection,
  then the ``output_project`` ConvModule."""
  channels: int
  norm_cfg: dict | None
  act_cfg: dict

  @nn.compact
  def __call__(self, x, train: bool = False):
    n, h, w, in_channels = x.shape
    conv = lambda features: (lambda name: layers.conv_module(features, 1, norm_cfg=self.norm_cfg,
                                                             act_cfg=self.act_cfg, name=name))
    project = lambda name: layers.Indexed((conv(self.channels), conv(self.channels)), name=name)
    query = project("query_project")(x, train).reshape(n, h * w, self.channels)
    key = project("key_project")(x, train).reshape(n, h * w, self.channels)
    value = layers.conv2d(in_channels, 1, name="value_project")(x).reshape(n, h * w, in_channels)
    sim_map = jnp.einsum("nqc,nkc->nqk", query, key) * self.channels**-0.5
    context = jnp.matmul(nn.softmax(sim_map, axis=-1), value).reshape(n, h, w, in_channels)
    return conv(in_channels)("output_project")(context, train)


class ISAHead(BaseDecodeHead):
  TINY: ClassVar[dict] = dict(in_channels=32, in_index=2, channels=8, isa_channels=4,
                              down_factor=(3, 3), num_classes=3,
                              norm_cfg=dict(type="BN", requires_grad=True))
  isa_channels: int = None
  down_factor: Sequence[int] = (8, 8)

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    if self.isa_channels is None:
      raise ValueError("ISAHead: isa_channels (the channels of the attention's query/key) is required")
    x = self.conv(self.channels, 3, 1)(name="in_conv")(self.transform_inputs(inputs), train)
    residual = x
    n, h, w, c = x.shape
    loc_h, loc_w = self.down_factor  # size of a local group
    glb_h, glb_w = math.ceil(h / loc_h), math.ceil(w / loc_w)
    pad_h, pad_w = glb_h * loc_h - h, glb_w * loc_w - w
    x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    # Row gh * loc_h + lh, column gw * loc_w + lw.
    x = x.reshape(n, glb_h, loc_h, glb_w, loc_w, c)
    # Global relation: the glb_h x glb_w pixels sharing an offset (lh, lw) attend to each other.
    x = x.transpose(0, 2, 4, 1, 3, 5).reshape(-1, glb_h, glb_w, c)
    x = SelfAttentionBlock(self.isa_channels, self.norm_cfg, self.act, name="global_relation")(x, train)
    # Local relation: the loc_h x loc_w pixels of one group attend to each other.
    x = x.reshape(n, loc_h, loc_w, glb_h, glb_w, c).transpose(0, 3, 4, 1, 2, 5).reshape(-1, loc_h, loc_w, c)
    x = SelfAttentionBlock(self.isa_channels, self.norm_cfg, self.act, name="local_relation")(x, train)
    x = x.reshape(n, glb_h, glb_w, loc_h, loc_w, c).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(n, glb_h * loc_h, glb_w * loc_w, c)[:, pad_h // 2:pad_h // 2 + h, pad_w // 2:pad_w // 2 + w]
    x = self.conv(self.channels, 1)(name="out_conv")(jnp.concatenate([x, residual], -1), train)
    return self.cls_seg(x, train)
