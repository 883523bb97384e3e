"""SegmenterMaskTransformerHead (mmseg ``segmenter_mask_head.py``): Segmenter's mask transformer.
Patch tokens (``dec_proj``) and one learned embedding per class (``cls_emb``) go through ViT
encoder layers (``layers/<i>``) and ``decoder_norm``; the masks are the cosine similarities of
the projected patches (``patch_proj``) with the projected class tokens (``classes_proj``),
normalised over classes (``mask_norm``). No ``conv_seg``: the masks are the logits."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from segjax import layers
from segjax.models.backbones import vit
from segjax.models.heads.decode_head import BaseDecodeHead


def l2_normalize(x, eps: float = 1e-12):
  """``F.normalize(x, p=2, dim=-1)``: x / max(||x||, eps)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class SegmenterMaskTransformerHead(BaseDecodeHead):
  TINY: ClassVar[dict] = dict(in_channels=64, in_index=3, channels=64, num_layers=2, num_heads=2,
                              embed_dims=16, num_classes=3, dropout_ratio=0.0)
  num_layers: int = 2
  num_heads: int = 8
  embed_dims: int = 768
  mlp_ratio: float = 4
  drop_path_rate: float = 0.1
  drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  num_fcs: int = 2
  qkv_bias: bool = True
  act_cfg: dict = dataclasses.field(default_factory=lambda: {"type": "GELU"})
  norm_cfg: dict = dataclasses.field(default_factory=lambda: {"type": "LN"})
  init_std: float = 0.02

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    x = self.transform_inputs(inputs)
    batch, h, w, c = x.shape
    e, k = self.embed_dims, self.num_classes
    tokens = vit.dense(e, "dec_proj")(x.reshape(batch, h * w, c))
    cls_emb = self.param("cls_emb", nn.initializers.truncated_normal(self.init_std), (1, k, e), jnp.float32)
    tokens = jnp.concatenate([tokens, jnp.broadcast_to(cls_emb.astype(tokens.dtype), (batch, k, e))], 1)
    rates = layers.drop_path_rates(self.drop_path_rate, self.num_layers)
    build = lambda i, name: vit.TransformerEncoderLayer(
        e, self.num_heads, int(self.mlp_ratio * e), self.drop_rate, self.attn_drop_rate, rates[i],
        self.num_fcs, self.qkv_bias, self.act_cfg, self.norm_cfg, name=name)
    tokens = vit.LayerStack(self.num_layers, build, name="layers")(tokens, train)[-1]
    tokens = layers.layer_norm(self.norm_cfg, "decoder_norm")(tokens)
    patches = l2_normalize(vit.dense(e, "patch_proj", use_bias=False)(tokens[:, :-k]))
    classes = l2_normalize(vit.dense(e, "classes_proj", use_bias=False)(tokens[:, -k:]))
    masks = jnp.einsum("bpe,bke->bpk", patches, classes)
    masks = layers.layer_norm(self.norm_cfg, "mask_norm")(masks)
    return masks.reshape(batch, h, w, k)
