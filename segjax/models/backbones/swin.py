"""SwinTransformer (mmseg ``swin.py``), NHWC.

``patch_embed`` (non-overlapping conv + LayerNorm), then ``stages.i``: ``blocks.j`` alternating
window attention and shifted-window attention (``attn.w_msa``: fused ``qkv``, ``proj`` and the
``relative_position_bias_table``), an mmcv FFN (``ffn.layers.0.0``, ``ffn.layers.1``) and, but for
the last stage, ``downsample`` (PatchMerging: 2x2 neighbourhoods in ``nn.Unfold``'s channel
order, ``norm``, ``reduction``); each output stage ``i`` has its LayerNorm ``norm{i}``. Inputs
whose size is not a multiple of the patch or window are zero-padded bottom/right as mmseg pads
them (the padded tokens take part in attention, as in mmseg).
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from segjax import layers
from segjax.convert import CheckpointRules


@functools.lru_cache(maxsize=None)
def relative_position_index(window: int) -> np.ndarray:
  """mmseg ``WindowMSA.relative_position_index``: for tokens p, q of a window (row-major), the row
  of the bias table for their offset, (dy + window - 1) * (2 * window - 1) + (dx + window - 1)."""
  coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
  rel = coords[:, :, None] - coords[:, None, :] + window - 1
  return rel[0] * (2 * window - 1) + rel[1]


@functools.lru_cache(maxsize=None)
def shifted_window_mask(height: int, width: int, window: int, shift: int) -> np.ndarray:
  """mmseg's attention mask of the shifted windows of a (height, width) padded map:
  (num_windows, window^2, window^2), 0 between tokens of the same region before the cyclic
  shift, -100 between tokens from different regions."""
  img = np.zeros((height, width), np.float32)
  count = 0
  for h in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
    for w in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
      img[h, w] = count
      count += 1
  regions = window_partition(img[None, :, :, None], window).reshape(-1, window * window)
  diff = regions[:, None, :] - regions[:, :, None]
  return np.where(diff != 0, np.float32(-100.0), np.float32(0.0))


def window_partition(x, window: int):
  """(N, H, W, C) -> (N * H/window * W/window, window^2, C), windows in row-major order."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // window, window, w // window, window, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, window * window, c)


def window_reverse(windows, n: int, h: int, w: int, window: int):
  """Inverse of ``window_partition``."""
  x = windows.reshape(n, h // window, w // window, window, window, -1).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h, w, -1)


class WindowMSA(nn.Module):
  """Multi-head self-attention within windows, with a learnt relative position bias."""
  embed_dims: int
  num_heads: int
  window_size: int
  qkv_bias: bool = True
  qk_scale: float | None = None
  attn_drop_rate: float = 0.0
  proj_drop_rate: float = 0.0

  @nn.compact
  def __call__(self, x, mask=None, train: bool = False):
    b, tokens, c = x.shape
    heads, window = self.num_heads, self.window_size
    table = self.param("relative_position_bias_table", nn.initializers.truncated_normal(0.02),
                       ((2 * window - 1) ** 2, heads), jnp.float32)
    bias = table.astype(x.dtype)[relative_position_index(window).reshape(-1)]
    bias = bias.reshape(tokens, tokens, heads).transpose(2, 0, 1)[None]  # (1, heads, T, T)
    if mask is not None:  # (num_windows, T, T): windows of one image are consecutive
      num_windows = mask.shape[0]
      bias = (bias + jnp.asarray(mask, x.dtype)[:, None]).reshape(1, num_windows, heads, tokens, tokens)
      bias = jnp.broadcast_to(bias, (b // num_windows,) + bias.shape[1:]).reshape(b, heads, tokens, tokens)
    qkv = nn.Dense(3 * c, use_bias=self.qkv_bias, kernel_init=layers.linear_init, name="qkv")(x)
    q, k, v = qkv.reshape(b, tokens, 3, heads, c // heads).transpose(2, 0, 1, 3, 4)
    scale = self.qk_scale or (c // heads) ** -0.5
    out = layers.multi_head_attention(self, q, k, v, bias, self.attn_drop_rate, train, scale)
    out = nn.Dense(c, kernel_init=layers.linear_init, name="proj")(out.reshape(b, tokens, c))
    return layers.dropout(self, out, self.proj_drop_rate, train)


class ShiftWindowMSA(nn.Module):
  """Window attention on the map padded to window multiples, cyclically shifted by
  ``shift_size`` (with the mask of the shifted regions) when it is not 0."""
  embed_dims: int
  num_heads: int
  window_size: int
  shift_size: int = 0
  qkv_bias: bool = True
  qk_scale: float | None = None
  attn_drop_rate: float = 0.0
  proj_drop_rate: float = 0.0
  drop_path_rate: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    n, h, w, c = x.shape
    window, shift = self.window_size, self.shift_size
    pad_b, pad_r = (-h) % window, (-w) % window
    x = jnp.pad(x, ((0, 0), (0, pad_b), (0, pad_r), (0, 0)))
    hp, wp = h + pad_b, w + pad_r
    mask = None
    if shift > 0:
      x = jnp.roll(x, (-shift, -shift), axis=(1, 2))
      mask = shifted_window_mask(hp, wp, window, shift)
    out = WindowMSA(self.embed_dims, self.num_heads, window, self.qkv_bias, self.qk_scale,
                    self.attn_drop_rate, self.proj_drop_rate, name="w_msa")(
                        window_partition(x, window), mask, train)
    out = window_reverse(out, n, hp, wp, window)
    if shift > 0:
      out = jnp.roll(out, (shift, shift), axis=(1, 2))
    return layers.drop_path(self, out[:, :h, :w], self.drop_path_rate, train)


class SwinBlock(nn.Module):
  embed_dims: int
  num_heads: int
  feedforward_channels: int
  window_size: int = 7
  shift: bool = False
  qkv_bias: bool = True
  qk_scale: float | None = None
  drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  act_cfg: dict = None
  norm_eps: float = 1e-5

  @nn.compact
  def __call__(self, x, train: bool = False):
    attn = ShiftWindowMSA(self.embed_dims, self.num_heads, self.window_size,
                          self.window_size // 2 if self.shift else 0, self.qkv_bias, self.qk_scale,
                          self.attn_drop_rate, self.drop_rate, self.drop_path_rate, name="attn")
    x = x + attn(layers.LayerNorm(self.norm_eps, name="norm1")(x), train)
    ffn = layers.FFN(self.embed_dims, self.feedforward_channels, 2, self.act_cfg, self.drop_rate,
                     self.drop_path_rate, name="ffn")
    return ffn(layers.LayerNorm(self.norm_eps, name="norm2")(x), x, train)


class PatchMerging(nn.Module):
  """mmseg ``PatchMerging``: adaptive 'corner' padding, ``nn.Unfold(kernel_size, stride)``
  (channel-major: feature c * k^2 + i * k + j), optional LayerNorm ``norm``, bias-free Linear
  ``reduction``."""
  out_channels: int
  kernel_size: int = 2
  stride: int | None = None
  norm_eps: float | None = 1e-5
  bias: bool = False

  @nn.compact
  def __call__(self, x):
    k, s = self.kernel_size, self.stride or self.kernel_size
    x = layers.adaptive_padding(x, k, s, "corner")
    n, h, w, c = x.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    taps = [x[:, i:i + s * (oh - 1) + 1:s, j:j + s * (ow - 1) + 1:s] for i in range(k) for j in range(k)]
    x = jnp.stack(taps, axis=-1).reshape(n, oh, ow, c * k * k)
    if self.norm_eps is not None:
      x = layers.LayerNorm(self.norm_eps, name="norm")(x)
    return nn.Dense(self.out_channels, use_bias=self.bias, kernel_init=layers.linear_init,
                    name="reduction")(x)


class SwinBlockSequence(nn.Module):
  """``stages.i``: ``blocks.j`` (odd ones shifted), then ``downsample`` if given; returns
  (input of the next stage, this stage's output)."""
  block_kwargs: dict
  drop_path_rates: Sequence[float]
  downsample: Any = None  # PatchMerging's arguments, or None in the last stage

  @nn.compact
  def __call__(self, x, train: bool = False):
    blocks = layers.NamedChildren(name="blocks")
    for j, rate in enumerate(self.drop_path_rates):
      x = blocks(j, functools.partial(SwinBlock, shift=j % 2 == 1, drop_path_rate=rate, **self.block_kwargs),
                 x, train)
    if self.downsample is None:
      return x, x
    return PatchMerging(**self.downsample, name="downsample")(x), x


# Microsoft's PatchMerging concatenates the 2x2 neighbours as (0,0), (1,0), (0,1), (1,1) blocks
# of C channels; mmseg's (nn.Unfold) interleaves them per channel in (0,0), (0,1), (1,0), (1,1).
UNFOLD_FROM_MICROSOFT = np.array([0, 2, 1, 3])


def merging_reduction_to_unfold(key, value, target_shape):
  """A Microsoft PatchMerging ``reduction`` weight (2C, 4C) with its input channels in mmseg's
  unfold order (swin2mmseg.py's ``correct_unfold_reduction_order``)."""
  out_channels, in_channels = value.shape
  value = value.reshape(out_channels, 4, in_channels // 4)[:, UNFOLD_FROM_MICROSOFT]
  return {key: value.transpose(0, 2, 1).reshape(out_channels, in_channels)}


def merging_norm_to_unfold(key, value, target_shape):
  """A Microsoft PatchMerging ``norm`` weight or bias (4C,) in mmseg's unfold order."""
  return {key: value.reshape(4, -1)[UNFOLD_FROM_MICROSOFT].transpose(1, 0).reshape(-1)}


# How releases of Swin weights name them (segjax.convert: CHECKPOINT_RULES[source]).
CHECKPOINT_RULES = {
    # mmseg's own: ``relative_position_index`` is a buffer segjax computes, not a parameter.
    "mmseg": CheckpointRules(skip=(r"relative_position_index$",)),
    # swin2mmseg.py's output (mmseg's swin_*_20220317 pretrain files): the backbone's names and the
    # classifier's final ``norm``, without the per-stage output norms (see "imagenet").
    "mmseg_pretrain": CheckpointRules(skip=(r"^norm\.", r"relative_position_index$", r"\.attn_mask$"),
                                      keep_initial=(r"^norm\d+$",)),
    # microsoft/Swin-Transformer's ImageNet checkpoints (swin_tiny_patch4_window7_224.pth ...),
    # renamed as mmseg's tools/model_converters/swin2mmseg.py does. The classifier's final
    # ``norm`` has no place in mmseg's model, whose per-stage output norms ``norm{i}`` the release
    # does not hold: mmseg's strict=False load leaves them at their initialisation.
    "imagenet": CheckpointRules(
        skip=(r"^head\.", r"^norm\.", r"relative_position_index$", r"\.attn_mask$"),
        renames=((r"^layers\.", "stages."),
                 (r"\.attn\.", ".attn.w_msa."),
                 (r"\.mlp\.fc1\.", ".ffn.layers.0.0."),
                 (r"\.mlp\.fc2\.", ".ffn.layers.1."),
                 (r"^patch_embed\.proj\.", "patch_embed.projection.")),
        transforms=((r"\.downsample\.reduction\.weight$", merging_reduction_to_unfold),
                    (r"\.downsample\.norm\.(weight|bias)$", merging_norm_to_unfold)),
        keep_initial=(r"^norm\d+$",)),
}


class SwinTransformer(nn.Module):
  """mmseg ``SwinTransformer``; returns the NHWC outputs (after ``norm{i}``) of the stages in
  ``out_indices``, with ``embed_dims * 2**i`` channels."""
  TINY: ClassVar[dict] = dict(embed_dims=8, depths=(2, 1, 1, 1), num_heads=(1, 2, 2, 4), window_size=3,
                              drop_path_rate=0.1)
  CHECKPOINT_RULES: ClassVar[dict[str, CheckpointRules]] = CHECKPOINT_RULES
  pretrain_img_size: Any = 224
  in_channels: int = 3
  embed_dims: int = 96
  patch_size: int = 4
  window_size: int = 7
  mlp_ratio: float = 4
  depths: Sequence[int] = (2, 2, 6, 2)
  num_heads: Sequence[int] = (3, 6, 12, 24)
  strides: Sequence[int] = (4, 2, 2, 2)
  out_indices: Sequence[int] = (0, 1, 2, 3)
  qkv_bias: bool = True
  qk_scale: float | None = None
  patch_norm: bool = True
  drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.1
  use_abs_pos_embed: bool = False
  act_cfg: dict = None
  norm_cfg: dict = None
  with_cp: bool = False
  pretrained: Any = None
  frozen_stages: int = -1
  init_cfg: Any = None

  def frozen_parameters(self) -> tuple[str, ...]:
    """What mmseg's ``_freeze_stages`` sets ``requires_grad=False`` on: ``patch_embed`` (and
    ``absolute_pos_embed``) when ``frozen_stages >= 0``, then for i in 1..frozen_stages
    ``stages.{i-1}`` (with its downsampling) and ``norm{i-1}`` if it is an output."""
    if self.frozen_stages < 0:
      return ()
    names = ["patch_embed", *(["absolute_pos_embed"] if self.use_abs_pos_embed else [])]
    for i in range(self.frozen_stages):
      names += [*([f"norm{i}"] if i in self.out_indices else []), f"stages.{i}"]
    return tuple(names)

  @nn.compact
  def __call__(self, x, train: bool = False):
    num_stages = len(self.depths)
    if len(self.num_heads) != num_stages or len(self.strides) != num_stages:
      raise ValueError(f"SwinTransformer: depths={tuple(self.depths)}, num_heads="
                       f"{tuple(self.num_heads)} and strides={tuple(self.strides)} must have one entry per stage")
    if self.strides[0] != self.patch_size:
      raise ValueError(f"SwinTransformer: strides[0]={self.strides[0]} must equal patch_size="
                       f"{self.patch_size} (non-overlapping patch embedding)")
    layers.check_in_channels(x, self.in_channels, "SwinTransformer backbone")
    norm_eps = layers.layer_norm_epsilon(self.norm_cfg)
    patch_eps = norm_eps if self.patch_norm else None
    x = layers.PatchEmbed(self.embed_dims, self.patch_size, self.strides[0], "corner", patch_eps,
                          name="patch_embed")(x)
    if self.use_abs_pos_embed:
      size = self.pretrain_img_size
      rows, cols = (size, size) if isinstance(size, int) else tuple(size) * (2 // len(size))
      grid = (rows // self.patch_size, cols // self.patch_size)
      if x.shape[1:3] != grid:
        raise ValueError(f"SwinTransformer: use_abs_pos_embed needs a {grid} patch grid "
                         f"(pretrain_img_size={size}), the input gives {x.shape[1:3]}")
      pos = self.param("absolute_pos_embed", nn.initializers.truncated_normal(0.02),
                       (1, grid[0] * grid[1], self.embed_dims), jnp.float32)
      x = x + pos.astype(x.dtype).reshape(1, *grid, self.embed_dims)
    x = layers.dropout(self, x, self.drop_rate, train)
    if self.frozen_stages >= 0:
      x = jax.lax.stop_gradient(x)

    rates = layers.drop_path_rates(self.drop_path_rate, sum(self.depths))
    stages = layers.NamedChildren(name="stages")
    block_cls = nn.remat(SwinBlockSequence, static_argnums=(2,)) if self.with_cp else SwinBlockSequence
    outs, channels, first = [], self.embed_dims, 0
    for i, depth in enumerate(self.depths):
      block_kwargs = dict(embed_dims=channels, num_heads=self.num_heads[i],
                          feedforward_channels=int(self.mlp_ratio * channels),
                          window_size=self.window_size, qkv_bias=self.qkv_bias,
                          qk_scale=self.qk_scale, drop_rate=self.drop_rate,
                          attn_drop_rate=self.attn_drop_rate, act_cfg=self.act_cfg, norm_eps=norm_eps)
      downsample = (dict(out_channels=2 * channels, stride=self.strides[i + 1], norm_eps=patch_eps)
                    if i < num_stages - 1 else None)
      build = functools.partial(block_cls, block_kwargs, tuple(rates[first:first + depth]), downsample)
      x, out = stages(i, build, x, train)
      first += depth
      frozen = i + 1 <= self.frozen_stages
      if i in self.out_indices:
        out = layers.LayerNorm(norm_eps, name=f"norm{i}")(out)
        outs.append(jax.lax.stop_gradient(out) if frozen else out)
      if frozen:
        x = jax.lax.stop_gradient(x)
      if downsample is not None:
        channels *= 2
    return outs
