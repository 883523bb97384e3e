"""Twins ``PCPVT`` and ``SVT`` (mmseg ``twins.py``), NHWC.

Stage i: ``patch_embeds.i`` (non-overlapping conv + LayerNorm, 'corner' padding), the encoder
layers ``layers.i.j`` with the conditional position encoding ``position_encodings.i`` (a 3x3
depthwise conv added to its input) after the first one, and with ``norm_after_stage`` a
LayerNorm ``norm_list.i``. PCPVT's layers are all global sub-sampled attention (GSA: MiT's
efficient attention, ``attn.attn`` a torch MultiheadAttention with ``sr`` + ``norm``); SVT's
alternate locally grouped attention in windows (LSA, even j: fused ``attn.qkv``, ``attn.proj``)
and GSA (odd j). The FFNs are mmcv's (``ffn.layers.0.0``, ``ffn.layers.1``).
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from segjax import layers
from segjax.convert import CheckpointRules
from segjax.models.backbones.mit import EfficientMultiheadAttention

# mmseg builds every encoder layer with LayerNorm(eps=1e-5) and GELU whatever the backbone's
# norm_cfg (which only reaches the patch embeddings and norm_list).
LAYER_NORM_EPS = 1e-5


class GSAEncoderLayer(nn.Module):
  """``x + drop_path(attn(norm1(x)))``, ``x + drop_path(ffn(norm2(x)))``; mmseg's attention and
  FFN each apply their own DropPath too (``identity=0`` / ``add_identity=False``), so a dropped
  path is dropped by either."""
  embed_dims: int
  num_heads: int
  feedforward_channels: int
  drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  qkv_bias: bool = True
  sr_ratio: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    attn = EfficientMultiheadAttention(self.embed_dims, self.num_heads, self.attn_drop_rate,
                                       self.drop_rate, self.drop_path_rate, self.qkv_bias,
                                       LAYER_NORM_EPS, self.sr_ratio, name="attn")
    out = attn(layers.LayerNorm(LAYER_NORM_EPS, name="norm1")(x), 0.0, train)
    x = x + layers.drop_path(self, out, self.drop_path_rate, train)
    return x + _ffn(self, x, train)


def _ffn(layer, x, train):
  """The layer's ``norm2`` then mmcv FFN (its own DropPath), then the layer's DropPath."""
  ffn = layers.FFN(layer.embed_dims, layer.feedforward_channels, 2, None, layer.drop_rate,
                   layer.drop_path_rate, add_identity=False, name="ffn")
  out = ffn(layers.LayerNorm(LAYER_NORM_EPS, name="norm2")(x), train=train)
  return layers.drop_path(layer, out, layer.drop_path_rate, train)


@functools.lru_cache(maxsize=None)
def lsa_window_mask(height: int, width: int, window: int) -> np.ndarray:
  """mmseg's mask of ``LocallyGroupedSelfAttention`` on a map padded to (height, width) from
  (height - pad_b, width - pad_r): (windows, window^2, window^2), -1000 between a padded and an
  unpadded token. mmseg marks the padding with ``mask[:, -pad_b:, :]`` and ``mask[:, :, -pad_r:]``:
  when either pad is 0 the slice is the whole map, every token is marked alike and nothing is
  masked; numpy's slicing is the same, so the same rule holds here."""
  pad_b, pad_r = (-height) % window, (-width) % window
  mask = np.zeros((height + pad_b, width + pad_r), np.float32)
  mask[-pad_b:, :] = 1
  mask[:, -pad_r:] = 1
  hw, ww = mask.shape[0] // window, mask.shape[1] // window
  windows = mask.reshape(hw, window, ww, window).transpose(0, 2, 1, 3).reshape(hw * ww, window * window)
  diff = windows[:, None, :] - windows[:, :, None]
  return np.where(diff != 0, np.float32(-1000.0), np.float32(0.0))


class LocallyGroupedSelfAttention(nn.Module):
  """Self-attention within non-overlapping windows of the map zero-padded bottom/right to window
  multiples (mask as mmseg's, see ``lsa_window_mask``)."""
  embed_dims: int
  num_heads: int = 8
  qkv_bias: bool = False
  qk_scale: float | None = None
  attn_drop_rate: float = 0.0
  proj_drop_rate: float = 0.0
  window_size: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    n, h, w, c = x.shape
    heads, window = self.num_heads, self.window_size
    if c % heads:
      raise ValueError(f"LocallyGroupedSelfAttention: embed_dims={c} is not divisible by num_heads={heads}")
    pad_b, pad_r = (-h) % window, (-w) % window
    x = jnp.pad(x, ((0, 0), (0, pad_b), (0, pad_r), (0, 0)))
    hw, ww = x.shape[1] // window, x.shape[2] // window
    tokens = window * window
    windows = x.reshape(n, hw, window, ww, window, c).transpose(0, 1, 3, 2, 4, 5)
    windows = windows.reshape(n * hw * ww, tokens, c)
    mask = jnp.asarray(lsa_window_mask(h, w, window), x.dtype)  # (windows, T, T)
    bias = jnp.broadcast_to(mask[None, :, None], (n, hw * ww, 1, tokens, tokens))
    bias = bias.reshape(n * hw * ww, 1, tokens, tokens)
    qkv = nn.Dense(3 * c, use_bias=self.qkv_bias, kernel_init=layers.linear_init, name="qkv")(windows)
    q, k, v = qkv.reshape(-1, tokens, 3, heads, c // heads).transpose(2, 0, 1, 3, 4)
    scale = self.qk_scale or (c // heads) ** -0.5
    out = layers.multi_head_attention(self, q, k, v, bias, self.attn_drop_rate, train, scale)
    out = out.reshape(n, hw, ww, window, window, c).transpose(0, 1, 3, 2, 4, 5)
    out = out.reshape(n, hw * window, ww * window, c)[:, :h, :w]
    out = nn.Dense(c, kernel_init=layers.linear_init, name="proj")(out)
    return layers.dropout(self, out, self.proj_drop_rate, train)


class LSAEncoderLayer(nn.Module):
  embed_dims: int
  num_heads: int
  feedforward_channels: int
  drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  qkv_bias: bool = True
  qk_scale: float | None = None
  window_size: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    attn = LocallyGroupedSelfAttention(self.embed_dims, self.num_heads, self.qkv_bias, self.qk_scale,
                                       self.attn_drop_rate, self.drop_rate, self.window_size, name="attn")
    out = attn(layers.LayerNorm(LAYER_NORM_EPS, name="norm1")(x), train)
    x = x + layers.drop_path(self, out, self.drop_path_rate, train)
    return x + _ffn(self, x, train)


class ConditionalPositionEncoding(nn.Module):
  """``proj``: 3x3 depthwise conv, added to its input when ``stride`` is 1."""
  embed_dims: int
  stride: int = 1

  @nn.compact
  def __call__(self, x):
    out = layers.conv2d(self.embed_dims, 3, self.stride, 1, groups=self.embed_dims, name="proj")(x)
    return out + x if self.stride == 1 else out


def official_rules(out_proj: tuple[str, str]) -> CheckpointRules:
  """Meituan-AutoML/Twins' ImageNet checkpoints (pcpvt_small.pth, alt_gvt_small.pth ...),
  renamed as mmseg's tools/model_converters/twins2mmseg.py does; ``out_proj`` renames the output
  projections of the layers whose attention is a MultiheadAttention. The classifier's final
  ``norm`` has no place in mmseg's model; SVT's ``norm_list`` the release does not hold: mmseg's
  strict=False load leaves it at its initialisation."""
  return CheckpointRules(
      skip=(r"^head\.", r"^norm\."),
      concat=((r"\.attn\.q\.(weight|bias)$", r".attn.kv.\1"),),
      renames=((r"^patch_embeds\.(\d+)\.proj\.", r"patch_embeds.\1.projection."),
               (r"\.attn\.q\.", ".attn.attn.in_proj_"),
               out_proj,
               (r"\.mlp\.fc1\.", ".ffn.layers.0.0."),
               (r"\.mlp\.fc2\.", ".ffn.layers.1."),
               (r"^blocks\.", "layers."),
               (r"^pos_block\.(\d+)\.proj\.0\.", r"position_encodings.\1.proj.")),
      keep_initial=(r"^norm_list\.\d+$",))


# twins2mmseg.py's output (mmseg's twins pretrain files): the backbone's names and the
# classifier's final ``norm``, without SVT's ``norm_list`` (see ``official_rules``).
CONVERTED_RULES = CheckpointRules(skip=(r"^norm\.",), keep_initial=(r"^norm_list\.\d+$",))


class PCPVT(nn.Module):
  """mmseg ``PCPVT``; returns the NHWC outputs of the stages in ``out_indices``."""
  TINY: ClassVar[dict] = dict(embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), mlp_ratios=(2, 2, 2, 2),
                              qkv_bias=True, drop_path_rate=0.1)
  CHECKPOINT_RULES: ClassVar[dict[str, CheckpointRules]] = {
      "mmseg": CheckpointRules(),
      "mmseg_pretrain": CONVERTED_RULES,
      "imagenet": official_rules((r"\.attn\.proj\.", ".attn.attn.out_proj.")),
  }
  in_channels: int = 3
  embed_dims: Sequence[int] = (64, 128, 256, 512)
  patch_sizes: Sequence[int] = (4, 2, 2, 2)
  strides: Sequence[int] = (4, 2, 2, 2)
  num_heads: Sequence[int] = (1, 2, 4, 8)
  mlp_ratios: Sequence[int] = (4, 4, 4, 4)
  out_indices: Sequence[int] = (0, 1, 2, 3)
  qkv_bias: bool = False
  drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  norm_cfg: dict = None
  depths: Sequence[int] = (3, 4, 6, 3)
  sr_ratios: Sequence[int] = (8, 4, 2, 1)
  norm_after_stage: bool = False
  pretrained: Any = None
  init_cfg: Any = None

  def layer_builder(self, stage: int, index: int, drop_path_rate: float):
    """Constructor of encoder layer ``layers.<stage>.<index>``."""
    return functools.partial(
        GSAEncoderLayer, self.embed_dims[stage], self.num_heads[stage],
        self.mlp_ratios[stage] * self.embed_dims[stage], self.drop_rate, self.attn_drop_rate,
        drop_path_rate, self.qkv_bias, self.sr_ratios[stage])

  @nn.compact
  def __call__(self, x, train: bool = False):
    name = type(self).__name__
    num_stages = len(self.depths)
    per_stage = {"embed_dims": self.embed_dims, "patch_sizes": self.patch_sizes, "strides": self.strides,
                 "num_heads": self.num_heads, "mlp_ratios": self.mlp_ratios, "sr_ratios": self.sr_ratios}
    short = {k: tuple(v) for k, v in per_stage.items() if len(v) < num_stages}
    if short:
      raise ValueError(f"{name}: {short} must have an entry for each of the {num_stages} stages (depths)")
    layers.check_in_channels(x, self.in_channels, f"{name} backbone")
    norm_eps = layers.layer_norm_epsilon(self.norm_cfg)
    rates = layers.drop_path_rates(self.drop_path_rate, sum(self.depths))
    patch_embeds = layers.NamedChildren(name="patch_embeds")
    position_encodings = layers.NamedChildren(name="position_encodings")
    stage_layers = layers.NamedChildren(name="layers")
    norm_list = layers.NamedChildren(name="norm_list") if self.norm_after_stage else None
    outs, first = [], 0
    for i, depth in enumerate(self.depths):
      x = patch_embeds(i, functools.partial(layers.PatchEmbed, self.embed_dims[i], self.patch_sizes[i],
                                            self.strides[i], "corner", norm_eps), x)
      x = layers.dropout(self, x, self.drop_rate, train)
      blocks = layers.NamedChildren
      for j in range(depth):
        build = self.layer_builder(i, j, rates[first + j])
        x = stage_layers(i, blocks, j, build, x, train)
        if j == 0:
          x = position_encodings(i, functools.partial(ConditionalPositionEncoding, self.embed_dims[i]), x)
      first += depth
      if norm_list is not None:
        x = norm_list(i, functools.partial(layers.LayerNorm, norm_eps), x)
      if i in self.out_indices:
        outs.append(x)
    return outs


class SVT(PCPVT):
  """mmseg ``SVT``: PCPVT whose even layers are LSA in windows of ``windiow_sizes[stage]``
  (mmseg's spelling)."""
  TINY: ClassVar[dict] = dict(embed_dims=(8, 16, 24, 32), num_heads=(1, 2, 2, 4), depths=(2, 2, 1, 1),
                              mlp_ratios=(2, 2, 2, 2), sr_ratios=(4, 2, 1, 1), windiow_sizes=(3, 3, 3, 3),
                              qkv_bias=True, drop_path_rate=0.1)
  CHECKPOINT_RULES: ClassVar[dict[str, CheckpointRules]] = {
      "mmseg": CheckpointRules(),
      "mmseg_pretrain": CONVERTED_RULES,
      # Only the odd (GSA) layers' attention is a MultiheadAttention; the even (LSA) keep ``proj``.
      "imagenet": official_rules((r"^(blocks\.\d+\.\d*[13579])\.attn\.proj\.", r"\1.attn.attn.out_proj.")),
  }
  embed_dims: Sequence[int] = (64, 128, 256)
  num_heads: Sequence[int] = (1, 2, 4)
  mlp_ratios: Sequence[int] = (4, 4, 4)
  drop_path_rate: float = 0.2
  depths: Sequence[int] = (4, 4, 4)
  sr_ratios: Sequence[int] = (4, 2, 1)
  windiow_sizes: Sequence[int] = (7, 7, 7)
  norm_after_stage: bool = True

  def layer_builder(self, stage: int, index: int, drop_path_rate: float):
    if index % 2:
      return super().layer_builder(stage, index, drop_path_rate)
    if len(self.windiow_sizes) <= stage:
      raise ValueError(f"SVT: windiow_sizes={tuple(self.windiow_sizes)} has no window for stage {stage}")
    return functools.partial(
        LSAEncoderLayer, self.embed_dims[stage], self.num_heads[stage],
        self.mlp_ratios[stage] * self.embed_dims[stage], self.drop_rate, self.attn_drop_rate,
        drop_path_rate, self.qkv_bias, window_size=self.windiow_sizes[stage])
