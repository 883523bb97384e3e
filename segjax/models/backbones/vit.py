"""VisionTransformer (mmseg ``backbones/vit.py``, also its DeiT configs) and the transformer
pieces the plain-ViT family shares (SETR, Segmenter, DPT): mmcv's ``MultiheadAttention`` wrapper,
``TransformerEncoderLayer`` (with ``layers.FFN``), the position table's resize.

Parameter names are mmseg's state_dict paths: ``patch_embed/projection``, ``cls_token``,
``pos_embed``, ``layers/<i>/ln1``, ``layers/<i>/attn/attn/{in_proj_weight,in_proj_bias,out_proj}``
(PyTorch's ``nn.MultiheadAttention``, ``layers.MultiheadAttention``: the fused q/k/v projection
kept as PyTorch stores it, so checkpoints need no rule), ``layers/<i>/ffn/layers/0/0``,
``layers/<i>/ffn/layers/1``, ``layers/<i>/ln2``, the final ``ln1``.
"""
from __future__ import annotations

import math
import re
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from segjax import layers
from segjax.convert import (CheckpointMismatchError, CheckpointRules, cubic_resize_matrix,
                            resize_pos_embed_to_target)

def dense(features: int, name: str, use_bias: bool = True):
  return nn.Dense(features, use_bias=use_bias, kernel_init=layers.linear_init, name=name)


class MultiheadAttention(nn.Module):
  """mmcv ``MultiheadAttention``: ``identity + dropout_layer(proj_drop(attn(x)))``; the PyTorch
  attention is the child ``attn``. ``drop_path_rate`` is mmcv's ``dropout_layer=DropPath``."""
  embed_dims: int
  num_heads: int
  attn_drop: float = 0.0
  proj_drop: float = 0.0
  drop_path_rate: float = 0.0
  bias: bool = True

  @nn.compact
  def __call__(self, x, identity, train: bool = False):
    out = layers.MultiheadAttention(self.embed_dims, self.num_heads, self.attn_drop, self.bias,
                                    name="attn")(x, x, x, train)
    out = layers.dropout(self, out, self.proj_drop, train)
    return identity + layers.drop_path(self, out, self.drop_path_rate, train)


class LayerStack(nn.Module):
  """An ``nn.ModuleList`` of layers applied in turn (children ``0``, ``1``, ...); returns every
  layer's output, for backbones that read several depths."""
  count: int
  build: Any  # (index, name=...) -> callable(x, train)

  @nn.compact
  def __call__(self, x, train: bool = False):
    outs = []
    for i in range(self.count):
      x = self.build(i, name=str(i))(x, train)
      outs.append(x)
    return outs


class TransformerEncoderLayer(nn.Module):
  """mmseg ViT's ``TransformerEncoderLayer``: pre-norm attention (``ln1``, ``attn``) and FFN
  (``ln2``, ``ffn``); drop path on the FFN branch only, as mmseg builds it."""
  embed_dims: int
  num_heads: int
  feedforward_channels: int
  drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  num_fcs: int = 2
  qkv_bias: bool = True
  act_cfg: dict | None = None
  norm_cfg: dict | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = MultiheadAttention(self.embed_dims, self.num_heads, self.attn_drop_rate, self.drop_rate,
                           bias=self.qkv_bias, name="attn")(
                               layers.layer_norm(self.norm_cfg, "ln1")(x), x, train)
    return layers.FFN(self.embed_dims, self.feedforward_channels, self.num_fcs, self.act_cfg,
               self.drop_rate, self.drop_path_rate, name="ffn")(
                   layers.layer_norm(self.norm_cfg, "ln2")(x), x, train)


def linear_resize_matrix(in_size: int, out_size: int, dtype) -> np.ndarray:
  """(out, in) weights of PyTorch's linear interpolation with ``align_corners=False``, the taps
  computed in ``dtype`` as PyTorch computes them (float32 for float32 input, double for float64;
  ``layers.resize``'s taps are always float32's, 1e-7 away from double's at a 32 -> 3 resize)."""
  real = np.float64 if dtype == jnp.float64 else np.float32
  src = np.maximum(real(in_size) / real(out_size) * (np.arange(out_size, dtype=real) + real(0.5)) - real(0.5), real(0))
  low = np.minimum(src.astype(np.int64), in_size - 1)
  high = np.minimum(low + 1, in_size - 1)
  frac = np.clip(src - low.astype(real), 0, 1).astype(real)
  matrix = np.zeros((out_size, in_size), real)
  np.add.at(matrix, (np.arange(out_size), low), 1 - frac)
  np.add.at(matrix, (np.arange(out_size), high), frac)
  return matrix


def resize_pos_grid(grid, size: tuple[int, int], mode: str):
  """mmseg's ``resize_pos_embed`` on the (B, h, w, C) patch grid of a position table:
  ``F.interpolate(mode, align_corners=False)``, bicubic with PyTorch's kernel (a = -0.75, edge
  taps clamped; ``segjax.convert.cubic_resize_matrix``) or bilinear (``linear_resize_matrix``)."""
  if mode == "bicubic":
    rows = jnp.asarray(cubic_resize_matrix(grid.shape[1], size[0]), grid.dtype)
    cols = jnp.asarray(cubic_resize_matrix(grid.shape[2], size[1]), grid.dtype)
    return jnp.einsum("hy,wx,byxc->bhwc", rows, cols, grid, precision=jax.lax.Precision.HIGHEST)
  if mode == "bilinear":
    rows, cols = (jnp.asarray(linear_resize_matrix(n, m, grid.dtype)) for n, m in zip(grid.shape[1:3], size))
    return jnp.einsum("hy,wx,byxc->bhwc", rows, cols, grid, precision=jax.lax.Precision.HIGHEST)
  raise ValueError(f"interpolate_mode={mode!r}; expected 'bicubic' or 'bilinear'")


def pair(size) -> tuple[int, int]:
  if isinstance(size, int):
    return (size, size)
  size = tuple(size)
  if len(size) == 1:
    return (size[0], size[0])
  if len(size) != 2:
    raise ValueError(f"img_size={size}: expected an int or (height, width)")
  return size


def out_index_list(out_indices, num_layers: int) -> tuple[int, ...]:
  if isinstance(out_indices, int):
    return (num_layers - 1 if out_indices == -1 else out_indices,)
  if isinstance(out_indices, (list, tuple)):
    return tuple(out_indices)
  raise TypeError(f"out_indices={out_indices!r} must be an int, list or tuple")


def vit_pos_embed(interpolate_mode: str):
  """Transform: mmseg ``VisionTransformer.init_weights`` on a checkpoint ``pos_embed`` of another
  shape than the model's: the cls position and the last ``pos_size**2`` (``pos_size =
  int(sqrt(L - 1))``, which drops a distilled DeiT's ``dist_token`` position), the grid resized
  with the model's ``interpolate_mode`` to its (square) grid."""
  def resize(key, value, target_shape):
    want = target_shape(key)
    if want is None or tuple(value.shape) == tuple(want):
      return {key: value}
    side, new_side = math.isqrt(value.shape[1] - 1), math.isqrt(want[1] - 1)
    if new_side * new_side != want[1] - 1:
      raise CheckpointMismatchError(f"{key}: the model's {want[1] - 1} patch positions are not a "
                                    "square grid; resize this checkpoint's pos_embed explicitly")
    grid = value[:, value.shape[1] - side * side:].reshape(1, side, side, value.shape[2])
    grid = resize_pos_grid(grid, (new_side, new_side), interpolate_mode)
    return {key: jnp.concatenate([value[:, :1], grid.reshape(1, new_side * new_side, -1)], axis=1)}
  return resize


def if_in_model(key, value, target_shape):
  """The key as it is if the model has its parameter, else dropped: mmseg's ``strict=False`` load
  ignores a release's final norm when the model is built with ``final_norm=False``."""
  return {} if target_shape(key) is None else {key: value}


def jax_fused_qkv(state):
  """vitjax2mmseg.py's in-projection: a block's ``query``/``key``/``value`` kernels (C, heads,
  head_dim) side by side, (C, 3C), transposed to PyTorch's (3C, C); their biases (heads,
  head_dim) flattened and concatenated, (3C,)."""
  out = dict(state)
  for key in state:
    match = re.fullmatch(r"(Transformer/encoderblock_\d+/MultiHeadDotProductAttention_1/)query/(kernel|bias)", key)
    if not match:
      continue
    block, leaf = match.groups()
    names = [f"{block}{part}/{leaf}" for part in ("query", "key", "value")]
    if any(name not in out for name in names):
      raise CheckpointMismatchError(f"{key}: the checkpoint lacks {[n for n in names if n not in out]}")
    parts = [out.pop(name) for name in names]
    if leaf == "kernel":
      out[f"{block}in_proj_weight"] = jnp.concatenate([p.reshape(p.shape[0], -1) for p in parts], axis=1).T
    else:
      out[f"{block}in_proj_bias"] = jnp.concatenate([p.reshape(-1) for p in parts])
  return out


# What a released ImageNet ViT holds beyond mmseg's backbone, which mmseg's strict=False load
# ignores: the classifier (DeiT's distillation head too), timm's pre-logits layer, a pooled-output
# norm, DeiT's distillation token.
VIT_CLASSIFIER_KEYS = (r"^head", r"^pre_logits\.", r"^fc_norm\.", r"^dist_token$")


def release_rules(interpolate_mode: str = "bicubic") -> dict[str, CheckpointRules]:
  """How each release names a VisionTransformer's weights; a pretrained position table of another
  grid is resized with ``interpolate_mode``, as the model's own mmseg init_weights does."""
  transforms = ((r"^pos_embed$", vit_pos_embed(interpolate_mode)), (r"^ln1\.", if_in_model))
  return {
    # mmseg's checkpoints; a position table of another image size is resized bicubically to the
    # model's grid, as mmseg's init_weights does for its ``pretrained`` checkpoints.
    "mmseg": CheckpointRules(transforms=((r"^pos_embed$", resize_pos_embed_to_target(1)),)),
    # mmseg's backbone files (tools/model_converters/vit2mmseg.py, vitjax2mmseg.py output).
    "mmseg_pretrain": CheckpointRules(skip=VIT_CLASSIFIER_KEYS, transforms=transforms),
    # timm's and DeiT's .pth, renamed as vit2mmseg.py renames them.
    "timm": CheckpointRules(
        skip=VIT_CLASSIFIER_KEYS,
        renames=((r"^blocks\.(\d+)\.norm(\d)\.", r"layers.\1.ln\2."),
                 (r"^blocks\.(\d+)\.mlp\.fc1\.", r"layers.\1.ffn.layers.0.0."),
                 (r"^blocks\.(\d+)\.mlp\.fc2\.", r"layers.\1.ffn.layers.1."),
                 (r"^blocks\.(\d+)\.attn\.qkv\.", r"layers.\1.attn.attn.in_proj_"),
                 (r"^blocks\.(\d+)\.attn\.proj\.", r"layers.\1.attn.attn.out_proj."),
                 (r"^norm\.", "ln1."),
                 (r"^patch_embed\.proj\.", "patch_embed.projection.")),
        transforms=transforms),
    # The original JAX ViT / AugReg .npz (Flax names, (in, out) kernels), as vitjax2mmseg.py maps it.
    "jax": CheckpointRules(
        combine=jax_fused_qkv,
        skip=(r"^head/", r"^pre_logits/"),
        renames=((r"^Transformer/encoderblock_(\d+)/", r"layers.\1."),
                 (r"^Transformer/encoder_norm/", "ln1."),
                 (r"^Transformer/posembed_input/pos_embedding$", "pos_embed"),
                 (r"^embedding/", "patch_embed.projection."),
                 (r"^cls$", "cls_token"),
                 (r"LayerNorm_0/", "ln1."),
                 (r"LayerNorm_2/", "ln2."),
                 (r"MlpBlock_3/Dense_0/", "ffn.layers.0.0."),
                 (r"MlpBlock_3/Dense_1/", "ffn.layers.1."),
                 (r"MultiHeadDotProductAttention_1/out/", "attn.attn.out_proj."),
                 (r"MultiHeadDotProductAttention_1/in_proj_", "attn.attn.in_proj_"),
                 (r"\.(scale|kernel)$", ".weight")),
        transforms=((r"^patch_embed\.projection\.weight$", lambda k, v, _: {k: v.transpose(3, 2, 0, 1)}),
                    (r"\.out_proj\.weight$", lambda k, v, _: {k: v.reshape(-1, v.shape[-1]).T}),
                    (r"\.ffn\.layers\.(0\.0|1)\.weight$", lambda k, v, _: {k: v.T}),
                    *transforms)),
  }


CHECKPOINT_RULES = release_rules()


class VisionTransformer(nn.Module):
  """mmseg ``VisionTransformer``: NHWC maps (B, H/p, W/p, C) of the layers in ``out_indices``
  (each ``[map, cls_token]`` with ``output_cls_token``). An input whose patch grid differs from
  ``img_size``'s has the position table resized with ``interpolate_mode`` (mmseg's rule)."""
  TINY: ClassVar[dict] = dict(img_size=32, patch_size=8, embed_dims=16, num_layers=3, num_heads=2,
                              out_indices=(0, 2), drop_path_rate=0.1, final_norm=True)
  CHECKPOINT_RULES: ClassVar[dict[str, CheckpointRules]] = CHECKPOINT_RULES
  img_size: Any = 224
  patch_size: int = 16
  in_channels: int = 3
  embed_dims: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_ratio: float = 4
  out_indices: Any = -1
  qkv_bias: bool = True
  drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  with_cls_token: bool = True
  output_cls_token: bool = False
  norm_cfg: dict | None = None
  act_cfg: dict | None = None
  patch_norm: bool = False
  final_norm: bool = False
  interpolate_mode: str = "bicubic"
  num_fcs: int = 2
  norm_eval: bool = False  # only BatchNorm is affected in mmseg; a ViT has none
  # mmcv's gradient checkpointing: each layer is recomputed in the backward pass.
  with_cp: bool = False
  pretrained: Any = None
  init_cfg: Any = None

  @classmethod
  def checkpoint_rules(cls, cfg) -> dict[str, CheckpointRules]:
    """The rules for the backbone config ``cfg``: its ``interpolate_mode`` resizes position tables."""
    return release_rules(cfg.get("interpolate_mode", cls.interpolate_mode))

  def position_embedding(self, tokens, hw, pos_embed):
    """mmseg ``_pos_embeding``: add the table, resized when the patch grid is not img_size's."""
    img_h, img_w = pair(self.img_size)
    pos_h, pos_w = img_h // self.patch_size, img_w // self.patch_size
    if tokens.shape[1] != pos_embed.shape[1]:
      grid = pos_embed[:, 1:].reshape(1, pos_h, pos_w, -1)
      grid = resize_pos_grid(grid, hw, self.interpolate_mode).reshape(1, hw[0] * hw[1], -1)
      pos_embed = jnp.concatenate([pos_embed[:, :1], grid], axis=1)
    return tokens + pos_embed

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.output_cls_token and not self.with_cls_token:
      raise ValueError("VisionTransformer: output_cls_token=True needs with_cls_token=True")
    layers.check_in_channels(x, self.in_channels, "VisionTransformer backbone")
    out_indices = out_index_list(self.out_indices, self.num_layers)
    img_h, img_w = pair(self.img_size)
    c = self.embed_dims
    patch_eps = layers.layer_norm_epsilon(self.norm_cfg) if self.patch_norm else None
    patches = layers.PatchEmbed(c, self.patch_size, norm_eps=patch_eps, name="patch_embed")(x)
    batch, hw = patches.shape[0], patches.shape[1:3]
    tokens = patches.reshape(batch, hw[0] * hw[1], c)
    num_patches = (img_h // self.patch_size) * (img_w // self.patch_size)
    cls_token = self.param("cls_token", layers.linear_init, (1, 1, c), jnp.float32)
    pos_embed = self.param("pos_embed", layers.linear_init, (1, num_patches + 1, c), jnp.float32)
    tokens = jnp.concatenate([jnp.broadcast_to(cls_token.astype(tokens.dtype), (batch, 1, c)), tokens], 1)
    tokens = self.position_embedding(tokens, hw, pos_embed.astype(tokens.dtype))
    tokens = layers.dropout(self, tokens, self.drop_rate, train)
    if not self.with_cls_token:
      tokens = tokens[:, 1:]

    layer_cls = nn.remat(TransformerEncoderLayer, static_argnums=(2,)) if self.with_cp else TransformerEncoderLayer
    rates = layers.drop_path_rates(self.drop_path_rate, self.num_layers)
    build = lambda i, name: layer_cls(c, self.num_heads, int(self.mlp_ratio * c), self.drop_rate,
                                      self.attn_drop_rate, rates[i], self.num_fcs, self.qkv_bias,
                                      self.act_cfg, self.norm_cfg, name=name)
    per_layer = LayerStack(self.num_layers, build, name="layers")(tokens, train)
    if self.final_norm:
      per_layer[-1] = layers.layer_norm(self.norm_cfg, "ln1")(per_layer[-1])
    outs = []
    for i in range(self.num_layers):  # mmseg's order: by depth, whatever out_indices' order
      if i not in out_indices:
        continue
      tokens = per_layer[i]
      patches = tokens[:, 1:] if self.with_cls_token else tokens
      out = patches.reshape(batch, hw[0], hw[1], c)
      outs.append([out, tokens[:, 0]] if self.output_cls_token else out)
    return outs
