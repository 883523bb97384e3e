"""MixVisionTransformer (mmseg ``mit.py``), SegFormer's backbone, NHWC.

Each stage ``layers.i`` is mmseg's ModuleList ``[PatchEmbed, blocks, LayerNorm]``: an overlapping
patch embedding (``layers.i.0``: conv ``projection`` of kernel ``patch_sizes[i]``, padding
``patch_sizes[i] // 2``, then ``norm``), ``num_layers[i]`` encoder layers (``layers.i.1.j``:
efficient self-attention whose keys and values come from a ``sr_ratio``-strided conv ``sr`` +
``norm``, then the Mix-FFN: 1x1 conv, 3x3 depthwise conv, GELU, 1x1 conv as ``ffn.layers.0/1/4``)
and a final LayerNorm (``layers.i.2``). mmseg's attention is ``torch.nn.MultiheadAttention``
(``attn.attn.in_proj_weight`` fused), kept as PyTorch stores it, so checkpoints convert by name.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar, Sequence

import flax.linen as nn

from segjax import layers
from segjax.convert import CheckpointRules

GELU = {"type": "GELU"}


class EfficientMultiheadAttention(nn.Module):
  """Self-attention whose keys/values are the input shrunk by a ``sr_ratio``-strided conv."""
  embed_dims: int
  num_heads: int
  attn_drop: float = 0.0
  proj_drop: float = 0.0
  drop_path_rate: float = 0.0
  qkv_bias: bool = True
  norm_eps: float = 1e-6
  sr_ratio: int = 1

  @nn.compact
  def __call__(self, x, identity, train: bool = False):
    n, h, w, c = x.shape
    kv = x
    if self.sr_ratio > 1:
      kv = layers.conv2d(c, self.sr_ratio, self.sr_ratio, name="sr")(kv)
      kv = layers.LayerNorm(self.norm_eps, name="norm")(kv)
    kv = kv.reshape(n, -1, c)
    out = layers.MultiheadAttention(c, self.num_heads, self.attn_drop, self.qkv_bias, name="attn")(
        x.reshape(n, h * w, c), kv, kv, train)
    out = layers.dropout(self, out, self.proj_drop, train)
    return identity + layers.drop_path(self, out.reshape(x.shape), self.drop_path_rate, train)


class MixFFN(nn.Module):
  """1x1 conv -> 3x3 depthwise conv (position encoding) -> activation -> 1x1 conv
  (``layers.0``, ``layers.1``, ``layers.4``: mmseg's Sequential with activation and dropout at 2, 3)."""
  embed_dims: int
  feedforward_channels: int
  act_cfg: dict = None
  ffn_drop: float = 0.0
  drop_path_rate: float = 0.0

  @nn.compact
  def __call__(self, x, identity, train: bool = False):
    hidden = self.feedforward_channels
    seq = layers.NamedChildren(name="layers")
    out = seq(0, functools.partial(layers.conv2d, hidden, 1), x)
    out = seq(1, functools.partial(layers.conv2d, hidden, 3, 1, 1, groups=hidden), out)
    out = layers.dropout(self, layers.activation(self.act_cfg or GELU)(out), self.ffn_drop, train)
    out = seq(4, functools.partial(layers.conv2d, self.embed_dims, 1), out)
    out = layers.dropout(self, out, self.ffn_drop, train)
    return identity + layers.drop_path(self, out, self.drop_path_rate, train)


class TransformerEncoderLayer(nn.Module):
  """``x + attn(norm1(x))`` then ``x + ffn(norm2(x))``."""
  embed_dims: int
  num_heads: int
  feedforward_channels: int
  drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  qkv_bias: bool = True
  act_cfg: dict = None
  norm_eps: float = 1e-6
  sr_ratio: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = EfficientMultiheadAttention(
        self.embed_dims, self.num_heads, self.attn_drop_rate, self.drop_rate, self.drop_path_rate,
        self.qkv_bias, self.norm_eps, self.sr_ratio, name="attn")(
            layers.LayerNorm(self.norm_eps, name="norm1")(x), x, train)
    return MixFFN(self.embed_dims, self.feedforward_channels, self.act_cfg, self.drop_rate,
                  self.drop_path_rate, name="ffn")(layers.LayerNorm(self.norm_eps, name="norm2")(x), x, train)


class MiTStage(nn.Module):
  """``layers.i``: ``0`` PatchEmbed, ``1`` the encoder layers, ``2`` LayerNorm."""
  embed_dims: int
  patch_size: int
  stride: int
  layer_kwargs: dict  # TransformerEncoderLayer's arguments but the drop path rate
  drop_path_rates: Sequence[float]
  norm_eps: float
  with_cp: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = layers.PatchEmbed(self.embed_dims, self.patch_size, self.stride, self.patch_size // 2,
                          self.norm_eps, name="0")(x)
    block_cls = nn.remat(TransformerEncoderLayer, static_argnums=(2,)) if self.with_cp else TransformerEncoderLayer
    builders = tuple(functools.partial(block_cls, drop_path_rate=rate, **self.layer_kwargs)
                     for rate in self.drop_path_rates)
    x = layers.Indexed(builders, name="1")(x, train)
    return layers.LayerNorm(self.norm_eps, name="2")(x)


def linear_to_1x1_conv(key, value, target_shape):
  """A Linear's (out, in) weight as the (out, in, 1, 1) kernel of the 1x1 conv that replaces it."""
  return {key: value.reshape(*value.shape, 1, 1)}


# How releases of MiT weights name them (segjax.convert: CHECKPOINT_RULES[source]).
CHECKPOINT_RULES = {
    "mmseg": CheckpointRules(),
    # mit2mmseg.py's output (mmseg's configs' pretrain/mit_b*.pth): the backbone's own names.
    "mmseg_pretrain": CheckpointRules(),
    # NVlabs SegFormer's ImageNet checkpoints (mit_b0.pth ... mit_b5.pth), renamed as mmseg's
    # tools/model_converters/mit2mmseg.py does: stage i's ``patch_embed{i}``, ``block{i}`` and
    # ``norm{i}`` are ``layers.{i-1}.0/1/2``; separate ``attn.q`` and ``attn.kv`` are one
    # MultiheadAttention in-projection; the Mix-FFN's Linears are 1x1 convs.
    "imagenet": CheckpointRules(
        skip=(r"^head\.",),
        concat=((r"\.attn\.q\.(weight|bias)$", r".attn.kv.\1"),),
        renames=(
            (r"^(patch_embed\d+)\.proj\.", r"\1.projection."),
            *((rf"^{kind}{i + 1}\.", f"layers.{i}.{child}.")
              for i in range(4) for child, kind in enumerate(("patch_embed", "block", "norm"))),
            (r"\.attn\.q\.", ".attn.attn.in_proj_"),
            (r"\.attn\.proj\.", ".attn.attn.out_proj."),
            (r"\.mlp\.fc1\.", ".ffn.layers.0."),
            (r"\.mlp\.dwconv\.dwconv\.", ".ffn.layers.1."),
            (r"\.mlp\.fc2\.", ".ffn.layers.4."),
        ),
        transforms=((r"\.ffn\.layers\.[04]\.weight$", linear_to_1x1_conv),)),
}


class MixVisionTransformer(nn.Module):
  """mmseg ``MixVisionTransformer``; returns the NHWC outputs of the stages in ``out_indices``.
  Stage i has ``embed_dims * num_heads[i]`` channels at stride ``prod(strides[:i + 1])``."""
  TINY: ClassVar[dict] = dict(embed_dims=4, num_layers=(1, 1, 1, 1), num_heads=(1, 2, 4, 8),
                              drop_path_rate=0.1)
  CHECKPOINT_RULES: ClassVar[dict[str, CheckpointRules]] = CHECKPOINT_RULES
  in_channels: int = 3
  embed_dims: int = 64
  num_stages: int = 4
  num_layers: Sequence[int] = (3, 4, 6, 3)
  num_heads: Sequence[int] = (1, 2, 4, 8)
  patch_sizes: Sequence[int] = (7, 3, 3, 3)
  strides: Sequence[int] = (4, 2, 2, 2)
  sr_ratios: Sequence[int] = (8, 4, 2, 1)
  out_indices: Sequence[int] = (0, 1, 2, 3)
  mlp_ratio: int = 4
  qkv_bias: bool = True
  drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  act_cfg: dict = None
  norm_cfg: dict = None
  pretrained: Any = None
  init_cfg: Any = None
  with_cp: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    per_stage = {"num_layers": self.num_layers, "num_heads": self.num_heads,
                 "patch_sizes": self.patch_sizes, "strides": self.strides, "sr_ratios": self.sr_ratios}
    for arg, value in per_stage.items():
      if len(value) != self.num_stages:
        raise ValueError(f"MixVisionTransformer: {arg}={tuple(value)} must have num_stages="
                         f"{self.num_stages} entries")
    if max(self.out_indices) >= self.num_stages:
      raise ValueError(f"MixVisionTransformer: out_indices={tuple(self.out_indices)} must be < "
                       f"num_stages={self.num_stages}")
    layers.check_in_channels(x, self.in_channels, "MixVisionTransformer backbone")
    norm_eps = layers.layer_norm_epsilon(self.norm_cfg or {"type": "LN", "eps": 1e-6})
    rates = layers.drop_path_rates(self.drop_path_rate, sum(self.num_layers))
    stages = layers.NamedChildren(name="layers")
    outs, first = [], 0
    for i, depth in enumerate(self.num_layers):
      dims = self.embed_dims * self.num_heads[i]
      layer_kwargs = dict(embed_dims=dims, num_heads=self.num_heads[i],
                          feedforward_channels=self.mlp_ratio * dims, drop_rate=self.drop_rate,
                          attn_drop_rate=self.attn_drop_rate, qkv_bias=self.qkv_bias,
                          act_cfg=self.act_cfg, norm_eps=norm_eps, sr_ratio=self.sr_ratios[i])
      build = functools.partial(MiTStage, dims, self.patch_sizes[i], self.strides[i], layer_kwargs,
                                tuple(rates[first:first + depth]), norm_eps, self.with_cp)
      x = stages(i, build, x, train)
      first += depth
      if i in self.out_indices:
        outs.append(x)
    return outs
