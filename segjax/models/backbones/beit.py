"""BEiT and MAE (mmseg ``backbones/beit.py``, ``backbones/mae.py``; mmseg's MAE subclasses BEiT):
a plain ViT whose attention adds a learned relative position bias per layer, with layer scales
(``gamma_1``/``gamma_2``, initialised to ``init_values``) on both residual branches. BEiT has no
absolute position table and, with ``qv_bias``, learns biases for q and v only; MAE adds an
absolute ``pos_embed`` and a full qkv bias. Then the layer ids of mmseg's layer-wise lr decay.

Parameter names are mmseg's state_dict paths: ``patch_embed/projection``, ``cls_token``,
(MAE) ``pos_embed``, ``layers/<i>/{gamma_1,gamma_2}``, ``layers/<i>/ln1``,
``layers/<i>/attn/{q_bias,v_bias,relative_position_bias_table,qkv,proj}``, ``layers/<i>/ln2``,
``layers/<i>/ffn/layers/0/0``, ``layers/<i>/ffn/layers/1``, the final ``ln1``. mmseg's
``relative_position_index`` buffers are constants here, computed from the window.

Both need the input's patch grid to equal ``img_size // patch_size`` (the window the relative
position tables are built for; MAE's ``pos_embed`` is not resized either), as in mmseg.
"""
from __future__ import annotations

import math
from typing import Any, Callable, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from segjax import layers
from segjax.convert import CheckpointMismatchError, CheckpointRules, resize_pos_embed_to_target
from segjax.models.backbones.vit import LayerStack, out_index_list, pair


def relative_position_index(window: tuple[int, int]) -> np.ndarray:
  """mmseg ``BEiTAttention``'s ``relative_position_index`` ((Wh*Ww + 1) squared, the cls token
  first): patch pairs index the (2Wh-1)(2Ww-1) offsets row-major; the last three entries of the
  table are cls->token, token->cls and cls->cls."""
  wh, ww = window
  coords = np.stack(np.meshgrid(np.arange(wh), np.arange(ww), indexing="ij")).reshape(2, -1)
  relative = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0)
  relative[:, :, 0] += wh - 1
  relative[:, :, 1] += ww - 1
  relative[:, :, 0] *= 2 * ww - 1
  num_relative_distance = (2 * wh - 1) * (2 * ww - 1) + 3
  index = np.zeros((wh * ww + 1,) * 2, np.int32)
  index[1:, 1:] = relative.sum(-1)
  index[0, 0:] = num_relative_distance - 3
  index[0:, 0] = num_relative_distance - 2
  index[0, 0] = num_relative_distance - 1
  return index


class BEiTAttention(nn.Module):
  """mmseg ``BEiTAttention``: fused ``qkv`` Linear (``bias='qv_bias'``: no Linear bias, learned
  ``q_bias``/``v_bias`` with k's bias zero), scaled dot-product attention plus the relative
  position bias of ``relative_position_bias_table`` over the window (the cls token included),
  ``proj``. mmseg's encoder layer hands its attention dropout rate over under a name
  ``BEiTAttention`` does not read, so attention weights and the projection are never dropped."""
  embed_dims: int
  num_heads: int
  window_size: tuple[int, int]
  bias: Any = "qv_bias"  # 'qv_bias', True or False
  table_init: Callable = layers.linear_init  # mmseg: trunc_normal(0.02); MAEAttention: zeros

  @nn.compact
  def __call__(self, x):
    batch, tokens, c = x.shape
    heads = self.num_heads
    wh, ww = self.window_size
    if tokens != wh * ww + 1:
      raise ValueError(f"BEiTAttention: {tokens} tokens, but window_size={tuple(self.window_size)} "
                       f"holds {wh * ww} patches plus the cls token")
    qv_bias = self.bias == "qv_bias"
    qkv = nn.Dense(3 * c, use_bias=bool(self.bias) and not qv_bias, kernel_init=layers.linear_init,
                   name="qkv")(x)
    if qv_bias:
      q_bias = self.param("q_bias", nn.initializers.zeros, (c,), jnp.float32)
      v_bias = self.param("v_bias", nn.initializers.zeros, (c,), jnp.float32)
      qkv = qkv + jnp.concatenate([q_bias, jnp.zeros_like(v_bias), v_bias]).astype(x.dtype)
    qkv = qkv.reshape(batch, tokens, 3, heads, c // heads)
    num_relative = (2 * wh - 1) * (2 * ww - 1) + 3
    table = self.param("relative_position_bias_table", self.table_init, (num_relative, heads), jnp.float32)
    index = relative_position_index(self.window_size)
    bias = table.astype(x.dtype)[index.reshape(-1)].reshape(tokens, tokens, heads).transpose(2, 0, 1)
    out = layers.multi_head_attention(self, qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], bias=bias[None])
    return nn.Dense(c, kernel_init=layers.linear_init, name="proj")(out.reshape(batch, tokens, c))


class BEiTTransformerEncoderLayer(nn.Module):
  """mmseg ``BEiTTransformerEncoderLayer``: ``x + drop_path(gamma_1 * attn(ln1(x)))`` then
  ``x + drop_path(gamma_2 * ffn(ln2(x)))`` (mmcv FFN without its own identity or dropout)."""
  embed_dims: int
  num_heads: int
  feedforward_channels: int
  drop_path_rate: float = 0.0
  num_fcs: int = 2
  bias: Any = "qv_bias"
  act_cfg: dict | None = None
  norm_cfg: dict | None = None
  window_size: tuple[int, int] = (14, 14)
  init_values: float = 0.1
  table_init: Callable = layers.linear_init

  @nn.compact
  def __call__(self, x, train: bool = False):
    c = self.embed_dims
    gamma_1 = self.param("gamma_1", nn.initializers.constant(self.init_values), (c,), jnp.float32)
    gamma_2 = self.param("gamma_2", nn.initializers.constant(self.init_values), (c,), jnp.float32)
    attn = BEiTAttention(c, self.num_heads, self.window_size, self.bias, self.table_init, name="attn")
    x = x + layers.drop_path(self, gamma_1.astype(x.dtype) * attn(layers.layer_norm(self.norm_cfg, "ln1")(x)),
                             self.drop_path_rate, train)
    ffn = layers.FFN(c, self.feedforward_channels, self.num_fcs, self.act_cfg, add_identity=False, name="ffn")
    return x + layers.drop_path(self, gamma_2.astype(x.dtype) * ffn(layers.layer_norm(self.norm_cfg, "ln2")(x), train=train),
                                self.drop_path_rate, train)


def geometric_sequence_interpolation(table: np.ndarray, src_size: int, dst_size: int) -> np.ndarray:
  """mmseg ``BEiT._geometric_sequence_interpolation``: each head's (src, src) table of relative
  offsets, sampled at offsets spaced in a geometric progression (ratio q found by bisection so the
  src/2 steps span dst/2), is interpolated with scipy's bicubic spline (``interp2d(kind='cubic')``,
  i.e. ``RectBivariateSpline`` of the transposed table, s=0) at the integer offsets -dst/2..dst/2."""
  from scipy.interpolate import RectBivariateSpline

  left, right = 1.01, 1.5
  while right - left > 1e-6:
    q = (left + right) / 2.0
    if (1.0 - q ** (src_size // 2)) / (1.0 - q) > dst_size // 2:
      right = q
    else:
      left = q
  distances = np.cumsum([q ** i for i in range(src_size // 2)])  # 1, 1 + q, 1 + q + q^2, ...
  offsets = np.concatenate([-distances[::-1], [0.0], distances])
  half = dst_size // 2.0
  new_offsets = np.arange(-half, half + 0.1, 1.0)
  heads = [RectBivariateSpline(offsets, offsets, table[:, i].reshape(src_size, src_size).astype(np.float32).T)(
      new_offsets, new_offsets).T.reshape(-1) for i in range(table.shape[1])]
  return np.stack(heads, axis=-1).astype(table.dtype)


def resize_relative_table(key, value, target_shape):
  """mmseg ``BEiT.resize_rel_pos_embed``: a ``relative_position_bias_table`` of another window
  (the last 3 rows, the cls token's, kept as they are) is resampled to the model's square window
  by ``geometric_sequence_interpolation``."""
  want = target_shape(key)
  if want is None or tuple(value.shape) == tuple(want):
    return {key: value}
  src_size, dst_size = math.isqrt(value.shape[0] - 3), math.isqrt(want[0] - 3)
  if dst_size * dst_size != want[0] - 3:
    raise CheckpointMismatchError(f"{key}: the model's window is not square; mmseg resizes relative "
                                  "position tables for square windows only")
  if src_size == dst_size:  # the same window, another head count: the shape check reports it
    return {key: value}
  resized = jax.pure_callback(
      lambda table: geometric_sequence_interpolation(np.asarray(table), src_size, dst_size),
      jax.ShapeDtypeStruct((dst_size * dst_size, value.shape[1]), value.dtype), value[:-3])
  return {key: jnp.concatenate([resized, value[-3:]])}


# A released BEiT/MAE classifier's parts mmseg's strict=False load ignores: the classifier, the
# pooled-output norm and the final ``norm`` (beit2mmseg.py keeps its name, so the model's final
# ``ln1`` keeps its initialisation).
CLASSIFIER_KEYS = (r"^head\.", r"^fc_norm\.", r"^norm\.", r"relative_position_index$")
# tools/model_converters/beit2mmseg.py's renames (BEiT's and MAE's original releases).
BEIT2MMSEG = ((r"^blocks\.(\d+)\.norm(\d)\.", r"layers.\1.ln\2."),
              (r"^blocks\.(\d+)\.mlp\.fc1\.", r"layers.\1.ffn.layers.0.0."),
              (r"^blocks\.(\d+)\.mlp\.fc2\.", r"layers.\1.ffn.layers.1."),
              (r"^blocks\.", "layers."),
              (r"^patch_embed\.proj\.", "patch_embed.projection."))

# How each release names BEiT's weights: mmseg keeps each layer's relative_position_index buffer
# in the state_dict; segjax computes it from the window.
CHECKPOINT_RULES = {
    "mmseg": CheckpointRules(skip=(r"relative_position_index$",)),
    # beit2mmseg.py's output (mmseg's pretrain/beit_*.pth) and the original BEiT releases
    # (microsoft/unilm, fine-tuned: per-layer relative position tables), with mmseg's table resize.
    "mmseg_pretrain": CheckpointRules(skip=CLASSIFIER_KEYS, keep_initial=(r"^ln1$",),
                                      transforms=((r"relative_position_bias_table$", resize_relative_table),)),
    "beit": CheckpointRules(skip=CLASSIFIER_KEYS, renames=BEIT2MMSEG, keep_initial=(r"^ln1$",),
                            transforms=((r"relative_position_bias_table$", resize_relative_table),)),
}
# MAE's: its original releases (facebookresearch/mae) hold no layer scales and no relative position
# tables, which keep their initialisation as in mmseg; the absolute table is resized bicubically.
MAE_TRANSFORMS = ((r"relative_position_bias_table$", resize_relative_table),
                  (r"^pos_embed$", resize_pos_embed_to_target(1)))
MAE_ABSENT = (r"^layers\.\d+$", r"^layers\.\d+\.attn$", r"^ln1$")
MAE_CHECKPOINT_RULES = {
    "mmseg": CHECKPOINT_RULES["mmseg"],
    "mmseg_pretrain": CheckpointRules(skip=CLASSIFIER_KEYS, keep_initial=MAE_ABSENT, transforms=MAE_TRANSFORMS),
    "mae": CheckpointRules(skip=CLASSIFIER_KEYS, renames=BEIT2MMSEG, keep_initial=MAE_ABSENT,
                           transforms=MAE_TRANSFORMS),
}


class BEiTBase(nn.Module):
  """What mmseg's BEiT and MAE share: patch embedding (no padding), cls token, the encoder
  layers, ``final_norm`` after the last one; NHWC maps (B, H/p, W/p, C) of the layers in
  ``out_indices``, by depth. Subclasses set the qkv bias and whether an absolute table is added."""
  CHECKPOINT_RULES: ClassVar[dict[str, CheckpointRules]] = CHECKPOINT_RULES
  ABSOLUTE_POSITIONS: ClassVar[bool] = False
  ZERO_TABLES: ClassVar[bool] = False  # relative position tables initialised to zeros
  img_size: Any = 224
  patch_size: int = 16
  in_channels: int = 3
  embed_dims: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_ratio: float = 4
  out_indices: Any = -1
  # Accepted as mmseg accepts it, and as there without effect: see BEiTAttention.
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  norm_cfg: dict | None = None
  act_cfg: dict | None = None
  patch_norm: bool = False
  final_norm: bool = False
  num_fcs: int = 2
  norm_eval: bool = False  # only BatchNorm is affected in mmseg; these backbones have none
  pretrained: Any = None
  init_values: float = 0.1
  init_cfg: Any = None

  def qkv_bias(self):
    raise NotImplementedError

  @nn.compact
  def __call__(self, x, train: bool = False):
    kind = type(self).__name__
    layers.check_in_channels(x, self.in_channels, f"{kind} backbone")
    out_indices = out_index_list(self.out_indices, self.num_layers)
    img_h, img_w = pair(self.img_size)
    window = (img_h // self.patch_size, img_w // self.patch_size)
    c = self.embed_dims
    if c % self.num_heads:
      raise ValueError(f"{kind}: embed_dims={c} is not divisible by num_heads={self.num_heads}")
    patch_eps = layers.layer_norm_epsilon(self.norm_cfg) if self.patch_norm else None
    patches = layers.PatchEmbed(c, self.patch_size, padding=0, norm_eps=patch_eps, name="patch_embed")(x)
    batch, hw = patches.shape[0], tuple(patches.shape[1:3])
    if hw != window:
      raise ValueError(f"{kind}: input {tuple(x.shape[1:3])} gives a {hw} patch grid, but img_size="
                       f"{(img_h, img_w)} with patch_size={self.patch_size} builds the relative position "
                       f"tables for {window}; mmseg's {kind} takes only inputs of img_size (set img_size "
                       "to the input size, or use slide inference with crop_size = img_size)")
    cls_token = self.param("cls_token", layers.linear_init, (1, 1, c), jnp.float32)
    tokens = jnp.concatenate([jnp.broadcast_to(cls_token.astype(patches.dtype), (batch, 1, c)),
                              patches.reshape(batch, hw[0] * hw[1], c)], 1)
    if self.ABSOLUTE_POSITIONS:
      # mmseg's MAE leaves its pos_embed at zeros unless weights are loaded.
      pos_embed = self.param("pos_embed", nn.initializers.zeros, (1, hw[0] * hw[1] + 1, c), jnp.float32)
      tokens = tokens + pos_embed.astype(tokens.dtype)

    table_init = nn.initializers.zeros if self.ZERO_TABLES else layers.linear_init
    rates = layers.drop_path_rates(self.drop_path_rate, self.num_layers)
    build = lambda i, name: BEiTTransformerEncoderLayer(
        c, self.num_heads, int(self.mlp_ratio * c), rates[i], self.num_fcs, self.qkv_bias(),
        self.act_cfg, self.norm_cfg, window, self.init_values, table_init, name=name)
    per_layer = LayerStack(self.num_layers, build, name="layers")(tokens, train)
    if self.final_norm:
      per_layer[-1] = layers.layer_norm(self.norm_cfg, "ln1")(per_layer[-1])
    return [per_layer[i][:, 1:].reshape(batch, hw[0], hw[1], c)
            for i in range(self.num_layers) if i in out_indices]


class BEiT(BEiTBase):
  """mmseg ``BEiT``: ``qv_bias`` learns biases for q and v (none for k); without it qkv has no bias."""
  TINY: ClassVar[dict] = dict(img_size=64, patch_size=16, embed_dims=16, num_layers=3, num_heads=2,
                              out_indices=(0, 2), drop_path_rate=0.1, final_norm=True,
                              norm_cfg=dict(type="LN", eps=1e-6))
  qv_bias: bool = True

  def qkv_bias(self):
    return "qv_bias" if self.qv_bias else False


class MAE(BEiTBase):
  """mmseg ``MAE``: BEiT with a full qkv bias, an absolute ``pos_embed`` added after the cls
  token is prepended, and relative position tables initialised to zeros (MAEAttention)."""
  TINY: ClassVar[dict] = dict(img_size=64, patch_size=16, embed_dims=16, num_layers=3, num_heads=2,
                              out_indices=(1, 2), drop_path_rate=0.1, init_values=1.0)
  CHECKPOINT_RULES: ClassVar[dict[str, CheckpointRules]] = MAE_CHECKPOINT_RULES
  ABSOLUTE_POSITIONS: ClassVar[bool] = True
  ZERO_TABLES: ClassVar[bool] = True

  def qkv_bias(self):
    return True


def layer_id(name: str, num_layers: int) -> int:
  """mmseg's ``get_layer_id_for_vit(name, num_layers + 2)`` ('layer_wise' decay) of the
  parameter ``name`` (mmseg's dotted form); ``num_layers`` is ``paramwise_cfg.num_layers``."""
  if name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed"):
    return 0
  if name.startswith("backbone.patch_embed"):
    return 0
  if name.startswith("backbone.layers"):
    return int(name.split(".")[2]) + 1
  return num_layers + 1
