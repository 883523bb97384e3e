"""Building blocks with PyTorch/MMCV semantics, NHWC.

JAX lacks a few PyTorch behaviours that MMSegmentation relies on; each has one small function here:
bilinear resize with and without ``align_corners`` and without antialiasing (``F.interpolate``),
``AdaptiveAvgPool2d`` bin edges, and ``ConvModule`` (conv + norm + activation with explicit
symmetric padding and mmcv's bias rule).
"""
from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# mmcv initialises convs with kaiming normal (fan_out, relu).
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


@functools.lru_cache(maxsize=None)
def _bilinear_taps(in_size: int, out_size: int, align_corners: bool, real=np.float32,
                   step: float | None = None):
  """Source indices and weights of PyTorch's 1-D linear interpolation (upsample_bilinear2d).
  ``step``: the source distance between output pixels when not in / out (``resize_by_scale``)."""
  # PyTorch computes the scale and source coordinate in the input's opmath type: float32 for
  # float32 (and half) input, double for float64; so do we, to get the same taps to the last bit.
  dst = np.arange(out_size, dtype=real)
  if align_corners:
    scale = real(in_size - 1) / real(out_size - 1) if out_size > 1 else real(0)
    src = scale * dst
  else:
    scale = real(in_size) / real(out_size) if step is None else real(step)
    src = np.maximum(scale * (dst + real(0.5)) - real(0.5), real(0))
  i0 = np.minimum(src.astype(np.int64), in_size - 1)
  i1 = np.minimum(i0 + 1, in_size - 1)
  w1 = np.clip(src - i0.astype(real), 0, 1).astype(real)
  return i0, i1, real(1) - w1, w1


def _tap_type(dtype):
  return np.float64 if dtype == jnp.float64 else np.float32


def resize_axis(x: jax.Array, axis: int, out_size: int, align_corners: bool,
                step: float | None = None) -> jax.Array:
  """``resize`` along one axis (``resize`` is this along H, then along W)."""
  in_size = x.shape[axis]
  if in_size == out_size and step is None:
    return x
  i0, i1, w0, w1 = _bilinear_taps(in_size, out_size, align_corners, _tap_type(x.dtype), step)
  shifts = _phase_shifts((i0, i1), (w0, w1), in_size, out_size)
  if shifts is not None:
    return _resize_axis_by_phase(x, axis, shifts, w0, w1)
  shape = [1] * x.ndim
  shape[axis] = out_size
  w0 = jnp.asarray(w0, x.dtype).reshape(shape)
  w1 = jnp.asarray(w1, x.dtype).reshape(shape)
  return jnp.take(x, i0, axis=axis) * w0 + jnp.take(x, i1, axis=axis) * w1


def _phase_shifts(taps, weights, in_size: int, out_size: int):
  """For an upsampling by a whole factor f, output f*k + r reads each of its two taps from input
  k + d (clamped to the edge; where the tap's weight is 0 any index does) for one shift d per
  phase r and tap: ``((d0, d1) per r)``, else None."""
  if out_size % in_size or out_size == in_size:
    return None
  f, k = out_size // in_size, np.arange(in_size)
  shifts = []
  for r in range(f):
    pair = []
    for index, weight in zip(taps, weights):
      column, used = index[r::f], weight[r::f] != 0
      d = int(column[in_size // 2] - in_size // 2)
      if d not in (-1, 0, 1) or (column != np.clip(k + d, 0, in_size - 1))[used].any():
        return None
      pair.append(d)
    shifts.append(tuple(pair))
  return tuple(shifts)


def _resize_axis_by_phase(x, axis: int, shifts, w0, w1):
  """The taps of ``resize_axis`` as slices of ``x`` instead of gathers: the same products and
  sums. Each phase is its interior (two slices, weighted) with the edge-clamped first and last
  samples joined on, so XLA fuses the whole resize into one pass writing the output, where shifted
  copies of ``x`` and gathers were each made whole (3 x 37.5 MB for the 4x upsampling of
  150-class logits)."""
  n, f = x.shape[axis], len(shifts)

  def along_axis(weights):
    return jnp.asarray(weights, x.dtype).reshape([-1 if i == axis else 1 for i in range(x.ndim)])

  phases = []
  for r, (d0, d1) in enumerate(shifts):
    lo, hi = int(min(d0, d1) < 0), int(max(d0, d1) > 0)

    def weighted(k, count):  # samples k .. k + count - 1 of phase r, taps clamped to x's edges
      def tap(d):
        start = min(max(k + d, 0), n - count)
        return jax.lax.slice_in_dim(x, start, start + count, axis=axis)

      return tap(d0) * along_axis(w0[r::f][k:k + count]) + tap(d1) * along_axis(w1[r::f][k:k + count])

    pieces = [weighted(0, 1)] * lo + [weighted(lo, n - lo - hi)] + [weighted(n - 1, 1)] * hi
    phases.append(pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis))
  out = jnp.stack(phases, axis=axis + 1)
  return out.reshape(*x.shape[:axis], n * f, *x.shape[axis + 1:])


def resize(x: jax.Array, size: Sequence[int], align_corners: bool = False) -> jax.Array:
  """Bilinear resize of NHWC ``x`` to ``size=(H, W)`` exactly as ``F.interpolate(mode='bilinear')``.

  Unlike ``jax.image.resize`` this never antialiases when downsampling, and supports
  ``align_corners=True``.
  """
  out_h, out_w = int(size[0]), int(size[1])
  x = resize_axis(x, 1, out_h, align_corners)
  return resize_axis(x, 2, out_w, align_corners)


@functools.lru_cache(maxsize=None)
def adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out, in) averaging matrix with PyTorch's AdaptiveAvgPool bins [floor(i*in/out), ceil((i+1)*in/out))."""
  m = np.zeros((out_size, in_size), np.float32)
  for i in range(out_size):
    start = (i * in_size) // out_size
    end = -((-(i + 1) * in_size) // out_size)
    m[i, start:end] = 1.0 / (end - start)
  return m


def adaptive_avg_pool(x: jax.Array, output_size: int | Sequence[int]) -> jax.Array:
  """``nn.AdaptiveAvgPool2d(output_size)`` on NHWC input."""
  if isinstance(output_size, int):
    output_size = (output_size, output_size)
  mh = jnp.asarray(adaptive_pool_matrix(x.shape[1], output_size[0]), x.dtype)
  mw = jnp.asarray(adaptive_pool_matrix(x.shape[2], output_size[1]), x.dtype)
  hp = jax.lax.Precision.HIGHEST
  x = jnp.einsum("oh,nhwc->nowc", mh, x, precision=hp)
  return jnp.einsum("pw,nowc->nopc", mw, x, precision=hp)


def avg_pool_ceil(x: jax.Array, k: int) -> jax.Array:
  """``nn.AvgPool2d(k, k, ceil_mode=True, count_include_pad=False)`` (ResNetV1d downsample)."""
  if k == 1:
    return x
  h, w = x.shape[1:3]
  ph, pw = (-h) % k, (-w) % k
  pad = ((0, 0), (0, ph), (0, pw), (0, 0))
  summed = nn.pool(jnp.pad(x, pad), 0.0, jax.lax.add, (k, k), (k, k), "VALID")
  ones = jnp.pad(jnp.ones((1, h, w, 1), x.dtype), pad)
  count = nn.pool(ones, 0.0, jax.lax.add, (k, k), (k, k), "VALID")
  return summed / count


def avg_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """``nn.AvgPool2d(3, stride=2, padding=1)`` (count_include_pad, PyTorch's default): the sum of
  the window's nine taps over 9. XLA's CPU reduce-window took 4x as long (STDC1, CGNet)."""
  return _depthwise_taps(x, jnp.ones((3, 3, x.shape[-1]), x.dtype), ((1, 1), (1, 1)), (2, 2), (1, 1)) / 9


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """``nn.MaxPool2d(kernel_size=3, stride=2, padding=1)``."""
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def _pair(v) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


def _tap_range(size, out_size, offset, stride):
  """Outputs o whose input index offset + stride * o falls inside [0, size): (first, last)."""
  first = max(0, -(offset // stride))
  last = min(out_size - 1, (size - 1 - offset) // stride)
  return first, last


# A stride-1 conv whose padded input is at most this much larger than its input pads it first.
PAD_FIRST_MAX_GROWTH = 1.5


def _depthwise_taps(x, kernel, padding, strides, dilation):
  """sum_ij xp[:, i*dh + sh*o, j*dw + sw*p] * kernel[i, j] for xp = x zero-padded by ``padding``
  (kernel (kh, kw, C)).

  With a small stride-1 padding, xp is made and the taps are plain slices of it: a tap padded to
  the output tests every element against its borders, which made Fast-SCNN's and MobileNet's
  3x3 convs twice as slow, and with XLA's MLIR emitters MobileNetV3's dilation-4 5x5 ones (input
  padded to 1.41x its area) 3.4x as slow (experiments/bench/README.md). Otherwise xp is not made:
  each tap is a slice of x, zero-padded to the output (XLA fuses the pads into the sum, reading x
  in place), so that DeepLabV3+'s dilation-36 branch does not copy its 2048-channel input at 2.2x
  its size."""
  (kh, kw), (sh, sw), (dh, dw) = kernel.shape[:2], strides, dilation
  (pt, pb), (pl, pr) = padding
  height, width = x.shape[1:3]
  padded_area = (height + pt + pb) * (width + pl + pr)
  if (sh, sw) == (1, 1) and padded_area != height * width and padded_area <= PAD_FIRST_MAX_GROWTH * height * width:
    x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    (pt, pb), (pl, pr) = (0, 0), (0, 0)
    height, width = x.shape[1:3]
  out_h, out_w = _depthwise_out_hw((height + pt + pb, width + pl + pr), (kh, kw), strides, dilation)
  out = None
  for i in range(kh):
    top, bottom = _tap_range(height, out_h, i * dh - pt, sh)
    for j in range(kw):
      left, right = _tap_range(width, out_w, j * dw - pl, sw)
      if top > bottom or left > right:  # this tap sees only padding
        continue
      row, col = i * dh - pt + sh * top, j * dw - pl + sw * left
      tap = x[:, row:row + sh * (bottom - top) + 1:sh, col:col + sw * (right - left) + 1:sw]
      term = jnp.pad(tap * kernel[i, j], ((0, 0), (top, out_h - 1 - bottom), (left, out_w - 1 - right), (0, 0)))
      out = term if out is None else out + term
  if out is None:
    return jnp.zeros((x.shape[0], out_h, out_w, x.shape[3]), jnp.result_type(x, kernel))
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def depthwise_conv(x, kernel, strides, padding, dilation):
  """Depthwise ``F.conv2d`` (groups == C) of NHWC ``x`` with ``kernel`` (kh, kw, C), written as
  shifted, per-channel scaled slices; ``padding`` is ((top, bottom), (left, right)).

  The taps read x in place: DeepLabV3+'s dilation-36 branch would otherwise pad a copy of its
  2048-channel input to 2.2x its size. Under differentiation ``_depthwise_fwd`` computes the same
  sum as a materialised result (experiments/bench/README.md).
  """
  return _depthwise_taps(x, kernel, padding, strides, dilation)


def _depthwise_out_hw(padded_hw, kernel_hw, strides, dilation):
  return tuple((n - d * (k - 1) - 1) // s + 1 for n, k, s, d in zip(padded_hw, kernel_hw, strides, dilation))


def _depthwise_fwd(x, kernel, strides, padding, dilation):
  # The sum is a branch of a conditional, whose result XLA materialises: it cannot fuse the sum
  # into its consumers. Fused into BatchNorm's backward, the sum was recomputed there and XLA kept
  # its terms alive from the forward to the backward (DeepLabV3+ train step temp 3.6 -> 5.9 GB).
  # Both branches are the sum, and the predicate is only unknown to the compiler (false for a NaN
  # kernel entry). A loop over samples materialises too, but its in-place update ran on one
  # thread: 4x slower. lax.optimization_barrier is dropped before fusion on CPU.
  def taps(x, kernel):
    return _depthwise_taps(x, kernel, padding, strides, dilation)

  out = jax.lax.cond(kernel[0, 0, 0] == kernel[0, 0, 0], taps, taps, x, kernel)
  return out, (x, kernel)


def _depthwise_bwd(strides, padding, dilation, res, dy):
  x, kernel = res
  (kh, kw), (sh, sw), (dh, dw) = kernel.shape[:2], strides, dilation
  (pt, _), (pl, _) = padding
  out_h, out_w, channels = dy.shape[1:]
  height, width = x.shape[1:3]
  # dy_padded[t] = dy_up[t - lo], dy_up = dy with (stride - 1) zeros between rows/cols, padded so
  # that x[h] meets dy_padded[h + (k - 1 - i) * d] in tap i: the input gradient is a stride-1
  # correlation of dy_padded with the flipped kernel, and tap i's kernel gradient is
  # sum_h x[h] * dy_padded[h + (k - 1 - i) * d]. Slicing dy_padded, not a padded copy of x, keeps
  # x's padded copy out of the backward: an identical pad there was merged with the forward's,
  # keeping DeepLabV3+'s three dilated padded copies (0.6 GB) alive from forward to backward.
  # With stride s the kernel gradient multiplies s^2 times more elements than dy has (the zeros
  # of dy_up); every depthwise conv of the current zoo (DeepLabV3+) has stride 1.
  lo_h, lo_w = (kh - 1) * dh - pt, (kw - 1) * dw - pl
  hi_h = height + (kh - 1) * dh - lo_h - ((out_h - 1) * sh + 1)
  hi_w = width + (kw - 1) * dw - lo_w - ((out_w - 1) * sw + 1)
  zero = jnp.zeros((), dy.dtype)
  dy_padded = jax.lax.pad(dy, zero, ((0, 0, 0), (lo_h, hi_h, sh - 1), (lo_w, hi_w, sw - 1), (0, 0, 0)))

  # Autodiff of the slices gives one multiply-and-reduce per tap, and XLA fuses the whole chain
  # producing dy (BatchNorm and ReLU backward) into each of them: nine recomputations per conv,
  # 7 s of DeepLabV3+'s 25 s step. A loop over the taps makes dy_padded a loop operand, which XLA
  # must materialise once; each tap's kernel gradient is a dot with ones (_channel_sum).
  def tap_gradient(tap):
    i, j = tap // kw, tap % kw
    dy_tap = jax.lax.dynamic_slice(dy_padded, (0, (kh - 1 - i) * dh, (kw - 1 - j) * dw, 0), x.shape)
    return _channel_sum((x * dy_tap).reshape(-1, channels))

  dkernel = jax.lax.map(tap_gradient, jnp.arange(kh * kw)).reshape(kh, kw, channels)
  dx = _depthwise_taps(dy_padded, kernel[::-1, ::-1], ((0, 0), (0, 0)), (1, 1), dilation)
  return dx, dkernel.astype(kernel.dtype)


depthwise_conv.defvjp(_depthwise_fwd, _depthwise_bwd)


class GroupedConv(nn.Module):
  """``nn.Conv2d`` with ``groups > 1``. Depthwise (groups == input channels, ``features`` a
  multiple of them: each input channel feeding ``features / groups`` consecutive outputs, as
  PyTorch orders them) is ``depthwise_conv``, a sum of shifted, per-channel scaled slices with a
  written-out backward pass, of the input with each channel repeated that many times; other
  groupings are XLA's grouped convolution.

  Same parameters as ``nn.Conv(feature_group_count=groups)`` (kernel (kh, kw, C / groups,
  features)), so checkpoints convert unchanged. XLA's CPU grouped convolution was 3-10x slower
  than the slices for the depthwise convs of DeepLabV3+, BiSeNetV2 and the MobileNets
  (experiments/bench/README.md).
  """
  features: int
  kernel_size: tuple
  strides: tuple
  padding: tuple
  kernel_dilation: tuple
  groups: int
  use_bias: bool
  kernel_init: Any

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    if channels % self.groups or self.features % self.groups:
      raise ValueError(f"GroupedConv: input channels ({channels}) and features ({self.features}) must "
                       f"both be multiples of groups={self.groups}")
    kh, kw = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (kh, kw, channels // self.groups, self.features), jnp.float32)
    kernel = kernel.astype(x.dtype)
    padding = tuple(map(tuple, self.padding))
    if channels == self.groups:
      multiplier = self.features // channels
      x = x if multiplier == 1 else jnp.repeat(x, multiplier, axis=-1)
      out = depthwise_conv(x, kernel[:, :, 0], tuple(self.strides), padding, tuple(self.kernel_dilation))
    else:
      out = jax.lax.conv_general_dilated(x, kernel, tuple(self.strides), padding,
                                         rhs_dilation=tuple(self.kernel_dilation),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         feature_group_count=self.groups)
    if self.use_bias:
      out = out + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(x.dtype)
    return out


class Resized(NamedTuple):
  """``resize(x, size, align_corners)`` (``mode='bilinear'``) or ``resize_nearest(x, size)``
  (``mode='nearest'``) left for a convolution to compute.

  Given among the parts of a convolution's input (``ConvModule``, ``PointwiseConv``,
  ``Conv``), ``x`` is multiplied by its rows of the kernel at ``x``'s own size and the
  product is interpolated: the resize and the product over channels are linear maps on different
  axes, so they commute, and the product runs on (size / x's size)^2 fewer pixels. UPerHead's
  3x3 ``fpn_bottleneck`` over Swin-T's four levels (2048 -> 512 channels at 128x128, three of
  them upsampled) took 1.66 s as resizes, concatenation and convolution, 0.75 s so
  (experiments/bench/README.md).
  """
  x: jax.Array
  size: tuple
  align_corners: bool = False
  mode: str = "bilinear"

  def compute(self) -> jax.Array:
    if self.mode == "nearest":
      return resize_nearest(self.x, self.size)
    return resize(self.x, self.size, self.align_corners)


def _shifted_interpolation(in_size: int, out_size: int, align_corners: bool, taps: int, stride: int,
                           pad: tuple, dilation: int, real) -> np.ndarray:
  """``(conv_out, taps, in_size)``: row (o, t) interpolates, from ``in_size`` samples, sample
  ``o * stride + t * dilation - pad[0]`` of the ``out_size`` resize, or is zero where that
  sample falls in the convolution's zero padding."""
  i0, i1, w0, w1 = _bilinear_taps(in_size, out_size, align_corners, real)
  interp = np.zeros((out_size, in_size), real)
  np.add.at(interp, (np.arange(out_size), i0), w0)
  np.add.at(interp, (np.arange(out_size), i1), w1)
  conv_out = (out_size + pad[0] + pad[1] - dilation * (taps - 1) - 1) // stride + 1
  rows = np.arange(conv_out)[:, None] * stride + np.arange(taps)[None] * dilation - pad[0]
  inside = (rows >= 0) & (rows < out_size)
  return np.where(inside[..., None], interp[np.clip(rows, 0, out_size - 1)], real(0))


def _conv_direct(x, kernel, strides, padding, dilation):
  return jax.lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dilation,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _conv_nhwc(x, kernel, strides, padding, dilation):
  """``lax.conv_general_dilated`` (NHWC, HWIO); ``conv3x3`` where that computes it faster."""
  kh, kw, channels, features = kernel.shape
  if ((kh, kw) == (3, 3) and tuple(strides) == (1, 1) and tuple(dilation) == (1, 1)
      and tuple(map(tuple, padding)) == ((1, 1), (1, 1))
      and min(channels, features) >= _WINOGRAD_MIN_CHANNELS
      and x.shape[1] * x.shape[2] >= _WINOGRAD_MIN_PIXELS and x.dtype in (jnp.float32, jnp.float64)):
    return conv3x3(x, kernel)
  return _conv_direct(x, kernel, strides, padding, dilation)


# Winograd's F(2x2, 3x3) (Lavin and Gray, 2016): each 2x2 output tile from a 4x4 input tile with
# 16 products per channel pair instead of 36. The transforms G g G^T, B^T d B and A^T m A are
# written out as sums (_winograd_kernel_rows, _winograd_tile_rows, _winograd_output_rows), which
# XLA fuses into single passes.
# Where it measured faster than XLA's CPU convolution (experiments/bench/README.md): narrower
# products and smaller maps (whose kernel transform is not paid back) ran slower.
_WINOGRAD_MIN_CHANNELS = 64
_WINOGRAD_MIN_PIXELS = 512
# Input tiles transformed per step (over the batch): the two 16-plane buffers of a step
# (transformed tiles and their products) stay in malloc's heap (under its 32 MB mmap threshold)
# and are reused; the whole map at once was faulted in anew per call (experiments/bench/README.md).
_WINOGRAD_STEP_BYTES = 8 << 20
_conv3x3_direct = functools.partial(_conv_direct, strides=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1))


def _winograd_kernel_rows(kernel, axis: int):
  """G g along ``axis`` of the kernel (3 -> 4), the four rows stacked first."""
  g0, g1, g2 = (jax.lax.index_in_dim(kernel, k, axis, keepdims=False) for k in range(3))
  return jnp.stack([g0, (g0 + g1 + g2) * 0.5, (g0 - g1 + g2) * 0.5, g2])


def _winograd_tile_rows(a, axis: int, tiles: int):
  """B^T d along ``axis`` of ``tiles`` 4-row input tiles at stride 2: (4, ...)."""
  d = [jax.lax.slice_in_dim(a, k, k + 2 * tiles - 1, 2, axis) for k in range(4)]
  return jnp.stack([d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]])


def _winograd_output_rows(m, axis: int, stack_axis: int):
  """A^T m along ``axis`` (4 -> 2), the two output rows stacked at ``stack_axis``."""
  m0, m1, m2, m3 = (jax.lax.index_in_dim(m, k, axis, keepdims=False) for k in range(4))
  return jnp.stack([m0 + m1 + m2, m1 - m2 - m3], stack_axis)


def _conv3x3_winograd(x, kernel):
  n, h, w, channels = x.shape
  features = kernel.shape[-1]
  tiles_h, tiles_w = -(-h // 2), -(-w // 2)
  row_bytes = 16 * n * tiles_w * max(channels, features) * x.dtype.itemsize
  rows = max(1, min(tiles_h, _WINOGRAD_STEP_BYTES // row_bytes))  # tile rows per step
  steps = -(-tiles_h // rows)
  u = _winograd_kernel_rows(_winograd_kernel_rows(kernel, 0), 1).reshape(16, channels, features)  # [col][row]
  span = 2 * rows + 2  # input rows of a step's tiles, one above and below included

  # Each step takes a band of tile rows across the whole batch, so a batch-sharded x stays
  # sharded (stepping through images would gather them all on every device).
  def step(i, out):
    # The band's rows of the zero-padded map, cut from x itself: a padded copy of a whole wide
    # map (PSPNet's 2048-channel bottleneck input) would cost more memory than the steps save.
    first = 2 * rows * i - 1
    start = jnp.clip(first, 0, max(h - span, 0))
    d = jax.lax.dynamic_slice_in_dim(x, start, min(span, h), 1)
    wanted = first + jnp.arange(span)
    d = jnp.where(((wanted >= 0) & (wanted < h))[:, None, None],
                  jnp.take(d, jnp.clip(wanted - start, 0, d.shape[1] - 1), axis=1), 0)
    d = jnp.pad(d, ((0, 0), (0, 0), (1, 2 * tiles_w + 1 - w), (0, 0)))
    v = _winograd_tile_rows(_winograd_tile_rows(d, 1, rows), 3, tiles_w)  # (4 col, 4 row, n, rows, tiles_w, c)
    m = jax.lax.dot_general(v.reshape(16, n * rows * tiles_w, channels), u, (((2,), (1,)), ((0,), (0,))))
    m = _winograd_output_rows(m.reshape(4, 4, n, rows, tiles_w, features), 1, 3)  # (4 col, n, rows, 2, tiles_w, o)
    y = _winograd_output_rows(m, 0, 4).reshape(n, 2 * rows, 2 * tiles_w, features)
    return jax.lax.dynamic_update_slice_in_dim(out, y, 2 * rows * i, 1)

  out = jnp.zeros((n, 2 * steps * rows, 2 * tiles_w, features), x.dtype)
  return jax.lax.fori_loop(0, steps, step, out)[:, :h, :w]


@jax.custom_jvp
def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """3x3 convolution, stride 1, padding 1 (NHWC, HWIO): on CPU by Winograd's F(2x2, 3x3).

  XLA's CPU convolution runs at its matrix-product speed, so fewer products are the one way to
  a faster one: F(2x2, 3x3) takes 16 products of (tiles, C_in) x (C_in, C_out) matrices per
  2x2 output tile, against 36 multiply-adds per channel pair directly. 0.56-0.84x of the direct
  time for 64-2048 channels on maps of 16x32 to 256x512 (experiments/bench/README.md). Its
  rounding stays near the direct sum's (the transforms add, subtract and halve;
  tests/test_layers.py, tests/test_oracle_models.py). Other platforms (and the derivatives,
  through the rule below) keep the direct convolution.
  """
  return jax.lax.platform_dependent(x, kernel, cpu=_conv3x3_winograd, default=_conv3x3_direct)


@conv3x3.defjvp
def _conv3x3_jvp(primals, tangents):
  (x, kernel), (x_dot, kernel_dot) = primals, tangents
  return conv3x3(x, kernel), _conv3x3_direct(x_dot, kernel) + _conv3x3_direct(x, kernel_dot)


def _conv_resized(part: Resized, kernel, strides, padding, dilation):
  """``lax.conv_general_dilated(part.compute(), kernel, ...)`` (NHWC, HWIO), computed at the
  part's own size where that takes fewer multiply-adds: a whole-factor nearest upsampling by
  ``_conv_nearest_phases``; a bilinear one as the product with every tap of the kernel, then per
  axis one matrix that interpolates and shifts each tap's product into place (dense, so it is
  only chosen while the parts are small against the output)."""
  if part.mode == "nearest":
    out = _conv_nearest_phases(part, kernel, strides, padding, dilation)
    return _conv_nhwc(part.compute(), kernel, strides, padding, dilation) if out is None else out
  x = part.x
  n, h, w, c = x.shape
  kh, kw, _, o = kernel.shape
  real = _tap_type(x.dtype)
  along_h = _shifted_interpolation(h, part.size[0], part.align_corners, kh, strides[0], padding[0],
                                   dilation[0], real)
  along_w = _shifted_interpolation(w, part.size[1], part.align_corners, kw, strides[1], padding[1],
                                   dilation[1], real)
  out_h, out_w = along_h.shape[0], along_w.shape[0]
  by_matrix = h * w * c * kh * kw * o + h * out_w * kh * o * kw * w + out_h * out_w * o * kh * h
  if by_matrix >= out_h * out_w * c * o * kh * kw:
    return _conv_nhwc(part.compute(), kernel, strides, padding, dilation)
  # The interpolation weights stay exact on accelerators whose default precision rounds to bf16.
  exact = jax.lax.Precision.HIGHEST
  taps = jnp.einsum("nhwc,ijco->nhwijo", x, kernel)
  rows = jnp.einsum("Xjx,nhxijo->nhXio", jnp.asarray(along_w, x.dtype), taps, precision=exact)
  return jnp.einsum("Yih,nhXio->nYXo", jnp.asarray(along_h, x.dtype), rows, precision=exact)


def _nearest_phase_taps(in_size: int, out_size: int, taps: int, stride: int, pad: tuple,
                        dilation: int):
  """Per phase p of a whole-factor ``s`` nearest upsampling (output rows s * i + p), followed by
  a convolution that keeps its size: the ``(offsets, taps)`` 0/1 matrix that adds up the taps
  reading the same input row i + offset, and the input's padding (before, after) for those
  offsets. None where that does not apply (another factor, a stride, a size-changing padding)."""
  s = out_size // in_size
  if (s < 2 or s * in_size != out_size or stride != 1 or pad[0] + pad[1] != dilation * (taps - 1)
      or not np.array_equal(_nearest_indices(in_size, out_size), np.arange(out_size) // s)):
    return None
  phases = []
  for p in range(s):
    offsets = (p + np.arange(taps) * dilation - pad[0]) // s
    lo, hi = int(offsets.min()), int(offsets.max())
    if lo > 0 or hi < 0:
      return None
    combine = np.zeros((hi - lo + 1, taps), np.float32)
    combine[offsets - lo, np.arange(taps)] = 1
    phases.append((combine, (-lo, hi)))
  return phases


def _conv_nearest_phases(part: Resized, kernel, strides, padding, dilation):
  """A convolution of a whole-factor nearest upsampling, at the input's size: output pixel
  (s*i + p, s*j + q) reads only input pixels near (i, j), so each of the s^2 phases (p, q) is a
  convolution of the input with the kernel's taps summed by the input pixel they read (a 3x3
  kernel after a 2x upsampling: four 2x2 kernels, 16 products per input pixel against the 36 of
  the convolution at full size). The phases are then interleaved. None where it does not apply
  (``_nearest_phase_taps``)."""
  x = part.x
  along_h = _nearest_phase_taps(x.shape[1], part.size[0], kernel.shape[0], strides[0], padding[0], dilation[0])
  along_w = _nearest_phase_taps(x.shape[2], part.size[1], kernel.shape[1], strides[1], padding[1], dilation[1])
  if along_h is None or along_w is None:
    return None
  rows = []
  for combine_h, pad_h in along_h:
    row = []
    for combine_w, pad_w in along_w:
      phase_kernel = jnp.einsum("at,bu,tuco->abco", jnp.asarray(combine_h, kernel.dtype),
                                jnp.asarray(combine_w, kernel.dtype), kernel,
                                precision=jax.lax.Precision.HIGHEST)
      row.append(_conv_nhwc(x, phase_kernel, (1, 1), (pad_h, pad_w), (1, 1)))
    rows.append(row)
  return _interleave_phases(rows, tuple(part.size))


def _interleave_phases(rows, size) -> jax.Array:
  """The NHWC map of ``size`` whose pixel (s_h*m + r, s_w*n + q) is pixel (m, n) of
  ``rows[r][q]``. Phases shorter than the first (an output size that is no multiple of s) are
  padded by one and the interleaved result cut to size."""
  n, full_h, full_w, channels = rows[0][0].shape
  s_h, s_w = len(rows), len(rows[0])
  pad = lambda p: jnp.pad(p, ((0, 0), (0, full_h - p.shape[1]), (0, full_w - p.shape[2]), (0, 0)))
  grid = jnp.stack([jnp.stack([pad(p) for p in row], 3) for row in rows], 2)  # (n, full_h, s_h, full_w, s_w, c)
  return grid.reshape(n, full_h * s_h, full_w * s_w, channels)[:, :size[0], :size[1]]


class Conv(nn.Module):
  """``nn.Conv`` (NHWC, explicit padding) by ``_conv_nhwc``, over ``x`` or the channel
  concatenation of a list of parts (arrays or ``Resized``), never made: the convolutions of the
  parts with their slices of the kernel are summed, a ``Resized`` part's at its own size where
  that is cheaper (``Resized``). Same parameters as ``nn.Conv`` (kernel (kh, kw, C_in, C_out)),
  so checkpoints convert unchanged."""
  features: int
  kernel_size: tuple
  strides: tuple
  padding: tuple
  kernel_dilation: tuple
  use_bias: bool
  kernel_init: Any

  @nn.compact
  def __call__(self, x):
    parts = list(x) if isinstance(x, list) else [x]
    channels = sum(_array(part).shape[-1] for part in parts)
    kernel = self.param("kernel", self.kernel_init, (*self.kernel_size, channels, self.features), jnp.float32)
    dtype = jnp.result_type(*map(_array, parts), kernel)
    padding, strides, dilation = tuple(map(tuple, self.padding)), tuple(self.strides), tuple(self.kernel_dilation)
    out, start = None, 0
    for part in parts:
      width = _array(part).shape[-1]
      rows = kernel[:, :, start:start + width].astype(dtype)
      if isinstance(part, Resized):
        term = _conv_resized(part._replace(x=part.x.astype(dtype)), rows, strides, padding, dilation)
      else:
        term = _conv_nhwc(part.astype(dtype), rows, strides, padding, dilation)
      out = term if out is None else out + term
      start += width
    if self.use_bias:
      out = out + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(dtype)
    return out


def _array(part) -> jax.Array:
  return part.x if isinstance(part, Resized) else part


def concatenate_parts(x) -> jax.Array:
  """``x`` itself, or a list of parts (arrays or ``Resized``) made into their channel concatenation."""
  if not isinstance(x, list):
    return x
  return jnp.concatenate([part.compute() if isinstance(part, Resized) else part for part in x], -1)


def channel_product(x: jax.Array, rows: jax.Array) -> jax.Array:
  """``x`` (..., C_in) times ``rows`` (C_in, C_out) over the channel axis."""
  return jax.lax.dot_general(x, rows, (((x.ndim - 1,), (0,)), ((), ())))


@jax.custom_jvp
def channel_product_in_place(x: jax.Array, rows: jax.Array) -> jax.Array:
  """``channel_product`` of NHWC ``x`` written as a 1x1 convolution, so that the elementwise
  operations producing ``x`` (a BatchNorm and ReLU) write over their own input.

  XLA's CPU backend runs both forms as the same matrix product. For a dot it fuses the reshape
  to 2-D into the elementwise producer, whose output then needs a buffer of its own; a 1x1
  convolution becomes a dot only after fusion (ERFNet's FCN head at 512x1024: XLA temp 128 ->
  72 MB, one 64 MB map less written and faulted in per image). Derivatives are products (the
  rule below): XLA leaves the kernel gradient of a 1x1 convolution to Eigen's convolution, about
  half as fast (experiments/bench/README.md).
  """
  return jax.lax.conv_general_dilated(x, rows[None, None], (1, 1), "VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@channel_product_in_place.defjvp
def _channel_product_in_place_jvp(primals, tangents):
  (x, rows), (x_dot, rows_dot) = primals, tangents
  return (channel_product_in_place(x, rows),
          channel_product(x_dot, rows) + channel_product(x, rows_dot))


class PointwiseConv(nn.Module):
  """Unpadded 1x1 ``nn.Conv2d`` as a matrix product over the channel axis.

  Same parameters as ``nn.Conv`` (kernel (1, 1, C_in, C_out)), so checkpoints convert unchanged.
  XLA's CPU backend runs a dot through YNNPACK's GEMM but a 1x1 convolution through Eigen's
  convolution, about half as fast forward and backward (experiments/bench/README.md). A stride
  is a strided slice first, which is what PyTorch's unpadded 1x1 convolution computes.
  ``in_place``: ``channel_product_in_place`` (for a head's classifier, whose input is the
  largest map of the head).

  ``x`` may be a list of parts (arrays or ``Resized``) standing for their concatenation along
  channels: the products of the parts with their rows of the kernel are summed and the
  concatenation is never made (XLA's CPU concatenate of SegFormer's four 128x128x256 head maps
  took 33 ms, 11% of its inference); a ``Resized`` part's product is taken before the resize.
  """
  features: int
  strides: tuple
  use_bias: bool
  kernel_init: Any
  in_place: bool = False

  @nn.compact
  def __call__(self, x):
    product = channel_product_in_place if self.in_place else channel_product
    parts = list(x) if isinstance(x, list) else [x]
    channels = sum(_array(part).shape[-1] for part in parts)
    kernel = self.param("kernel", self.kernel_init, (1, 1, channels, self.features), jnp.float32)
    sh, sw = self.strides
    out, start = None, 0
    for part in parts:
      array = _array(part)
      rows = kernel[0, 0, start:start + array.shape[-1]].astype(array.dtype)
      if isinstance(part, Resized):
        term = part._replace(x=product(array, rows)).compute()[:, ::sh, ::sw]
      else:
        term = product(array[:, ::sh, ::sw], rows)
      out = term if out is None else out + term
      start += array.shape[-1]
    if self.use_bias:
      out = out + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(out.dtype)
    return out


def _transpose_phases(in_size: int, taps: int, stride: int, pad: int, output_padding: int):
  """Per output phase r of a transposed convolution along one axis (outputs s*m + r): the taps
  it reads, ordered by the input offset d each reads (output m takes input m + d), the input's
  padding (before, after) for those offsets, and the phase's length; and the output length."""
  out_size = (in_size - 1) * stride - 2 * pad + taps + output_padding
  phases = []
  for r in range(stride):
    length = -(-(out_size - r) // stride)
    used = [t for t in range(taps) if (r + pad - t) % stride == 0]
    offsets = [(r + pad - t) // stride for t in used]
    order = np.argsort(offsets)
    used, offsets = [used[i] for i in order], [offsets[i] for i in order]
    phases.append((used, (-offsets[0], length - in_size + offsets[-1]) if used else None, length))
  return phases, out_size


def conv_transpose(x: jax.Array, kernel: jax.Array, stride: int, padding: int = 0,
                   output_padding: int = 0) -> jax.Array:
  """``F.conv_transpose2d`` of NHWC ``x`` (no bias, no groups, no dilation); ``kernel`` is
  PyTorch's (in, out, kh, kw) weight as the converter lays out every kernel: (kh, kw, out, in).

  Computed by output phase: output (s*m + r, s*n + q) takes only the taps t with
  t = r + padding (mod s), each from input m + (r + padding - t) / s, so each of the s^2 phases
  is a small stride-1 convolution of the input itself; the phases are then interleaved. The
  convolution of the stride-dilated input, as the definition reads, multiplies s^2 times as
  many zeros (ERFNet's two 3x3 stride-2 upsamplers: 10.7 + 13.2 ms so, 8.0 + 6.5 ms by phase;
  experiments/bench/README.md).
  """
  n, h, w, _ = x.shape
  kh, kw, out_channels, _ = kernel.shape
  along_h, out_h = _transpose_phases(h, kh, stride, padding, output_padding)
  along_w, out_w = _transpose_phases(w, kw, stride, padding, output_padding)
  rows = []
  for taps_h, pad_h, len_h in along_h:
    row = []
    for taps_w, pad_w, len_w in along_w:
      if pad_h is None or pad_w is None:  # a kernel smaller than the stride misses this phase
        row.append(jnp.zeros((n, len_h, len_w, out_channels), x.dtype))
        continue
      rhs = kernel[np.asarray(taps_h)][:, np.asarray(taps_w)].transpose(0, 1, 3, 2).astype(x.dtype)
      row.append(_conv_nhwc(x, rhs, (1, 1), (pad_h, pad_w), (1, 1)))
    rows.append(row)
  return _interleave_phases(rows, (out_h, out_w))


def conv2d(features: int, kernel_size, stride=1, padding=0, dilation=1, groups=1,
           use_bias=True, name=None, kernel_init=kaiming_fan_out, parts=False):
  """``nn.Conv2d`` with PyTorch's explicit symmetric padding.

  Grouped (and so depthwise) convs are a GroupedConv and unpadded 1x1 convs a PointwiseConv
  (faster on CPU). ``parts``: the conv is given a list of parts for their channel concatenation
  (``Conv`` and ``PointwiseConv`` take either; a grouped conv does not).
  """
  ph, pw = _pair(padding)
  if _pair(kernel_size) == (1, 1) and (ph, pw) == (0, 0) and groups == 1:
    return PointwiseConv(features, _pair(stride), use_bias, kernel_init, name=name)
  if parts and groups > 1:
    raise ValueError(f"conv2d: a list of parts goes to a conv with groups=1, not groups={groups}")
  if groups > 1:
    return GroupedConv(features, _pair(kernel_size), _pair(stride), ((ph, ph), (pw, pw)),
                       _pair(dilation), groups, use_bias, kernel_init, name=name)
  return Conv(features, _pair(kernel_size), _pair(stride), ((ph, ph), (pw, pw)), _pair(dilation),
              use_bias, kernel_init, name=name)


def _channel_sum(x2d: jax.Array) -> jax.Array:
  """Sum of (M, C) over M in float32, as a product with a ones vector.

  XLA's CPU backend rewrites a large ``reduce`` fused with its producers into a ``reduce-window``
  tree that ran ~25x slower than this dot for BatchNorm-sized inputs (experiments/bench/README.md).
  """
  ones = jnp.ones((x2d.shape[0],), x2d.dtype)
  return jax.lax.dot_general(ones, x2d, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x, scale, bias, eps: float):
  """Training-mode BatchNorm over all axes but the last: ``(y, batch_mean, biased_batch_var)``.

  Statistics are float32 whatever ``x``'s dtype; ``y`` has ``x``'s dtype. The backward pass is
  written out so that its reductions are dots too (see ``_channel_sum``).
  """
  return _batch_norm_fwd(x, scale, bias, eps)[0]


def _batch_norm_fwd(x, scale, bias, eps):
  x2d = x.reshape(-1, x.shape[-1])
  count = x2d.shape[0]
  mean = _channel_sum(x2d) / count
  centered = x2d.astype(jnp.float32) - mean
  var = _channel_sum(centered * centered) / count
  inv = jax.lax.rsqrt(var + eps)
  y = centered * (inv * scale.astype(jnp.float32)) + bias.astype(jnp.float32)
  return (y.astype(x.dtype).reshape(x.shape), mean, var), (x, mean, inv, scale, bias)


def _batch_norm_bwd(eps, res, cotangents):
  del eps
  x, mean, inv, scale, bias = res
  dy, dmean, dvar = cotangents
  x2d = x.reshape(-1, x.shape[-1])
  count = x2d.shape[0]
  xhat = (x2d.astype(jnp.float32) - mean) * inv
  dy2d = dy.reshape(x2d.shape).astype(jnp.float32)
  dbias = _channel_sum(dy2d)
  dscale = _channel_sum(dy2d * xhat)
  g = scale.astype(jnp.float32) * inv
  dx = g * (dy2d - (dbias + xhat * dscale) / count)
  # The statistics are outputs too (running averages); their cotangents are zero in training but
  # are honoured: d mean/dx = 1/M, d var/dx = 2 (x - mean)/M.
  dx = dx + (dmean + 2.0 * dvar * xhat / inv) / count
  return dx.astype(x.dtype).reshape(x.shape), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


batch_norm_train.defvjp(_batch_norm_fwd, _batch_norm_bwd)


class BatchNorm(nn.Module):
  """``nn.BatchNorm2d`` over the last axis, with PyTorch's running-statistics rule.

  Parameters ``scale``/``bias`` and statistics ``mean``/``var`` are named as flax's BatchNorm
  names them. Training normalises with the biased batch variance and updates
  ``running = (1 - momentum) * running + momentum * batch`` with the unbiased variance, as PyTorch
  does. Under jit over a batch-sharded mesh the statistics are global (SyncBN).
  ``requires_grad=False`` (mmcv's norm_cfg key) marks ``scale``/``bias`` for the optimizer to
  leave as they are (``segjax.train.optim.frozen_names``); the statistics still update.
  """
  momentum: float = 0.1
  epsilon: float = 1e-5
  requires_grad: bool = True

  @nn.compact
  def __call__(self, x, use_running_average: bool):
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
    if use_running_average:
      # Statistics in float32 at least (bfloat16 activations), float64 when x is.
      stat = jnp.promote_types(x.dtype, jnp.float32)
      mul = scale.astype(stat) * jax.lax.rsqrt(ra_var.value.astype(stat) + self.epsilon)
      add = bias.astype(stat) - ra_mean.value.astype(stat) * mul
      return x * mul.astype(x.dtype) + add.astype(x.dtype)
    y, mean, var = batch_norm_train(x, scale, bias, self.epsilon)
    if not self.is_initializing():
      count = x.size // features
      unbiased = var * (count / max(count - 1, 1))
      ra_mean.value = (1 - self.momentum) * ra_mean.value + self.momentum * jax.lax.stop_gradient(mean)
      ra_var.value = (1 - self.momentum) * ra_var.value + self.momentum * jax.lax.stop_gradient(unbiased)
    return y


# mmcv's norm types and the name build_norm_layer gives the layer (its abbreviation). SyncBN
# (torch's) and MMSyncBN (mmcv's) are BatchNorm over the global batch, which BatchNorm is under jit
# over a batch-sharded mesh; IN is InstanceNorm2d.
NORM_NAMES = {"BN": "bn", "SyncBN": "bn", "MMSyncBN": "bn", "GN": "gn", "LN": "ln", "IN": "in"}


# Keys of mmcv's norm_cfg beyond ``type``: ``requires_grad`` marks the layer (its ``requires_grad``
# field) for the optimizer, which leaves a False one's parameters as they are
# (segjax.train.optim.frozen_names); ``eps``/``momentum``/``num_groups``/``affine`` are passed to
# the layer as mmcv passes them.
_BN_KEYS = {"requires_grad", "eps", "momentum"}
NORM_KEYS = {"BN": _BN_KEYS, "SyncBN": _BN_KEYS, "MMSyncBN": _BN_KEYS,
             "GN": {"requires_grad", "eps", "num_groups"}, "LN": {"requires_grad", "eps"},
             "IN": {"requires_grad", "eps", "momentum", "affine", "track_running_stats"}}


class GroupNorm(nn.GroupNorm):
  """flax's GroupNorm with mmcv's ``requires_grad`` mark (see ``BatchNorm``)."""
  requires_grad: bool = True


def norm_layer(norm_cfg: dict, name: str | None = None, frozen: bool = False):
  """Build the norm of ``norm_cfg`` (mmcv ``build_norm_layer``); returns a callable(x, train).
  ``frozen``: BatchNorm statistics stay as they are (a frozen stage's eval mode)."""
  kind = norm_cfg["type"]
  if kind not in NORM_NAMES:
    raise ValueError(f"norm_cfg.type={kind!r} is not supported; expected one of {sorted(NORM_NAMES)}")
  known = NORM_KEYS[kind]
  unknown = sorted(set(norm_cfg) - known - {"type"})
  if unknown:
    raise ValueError(f"norm_cfg {norm_cfg} has keys {unknown} that {kind} does not take; expected {sorted(known)}")
  eps = norm_cfg.get("eps", 1e-5)
  requires_grad = bool(norm_cfg.get("requires_grad", True))
  if kind in ("BN", "SyncBN", "MMSyncBN"):
    bn = BatchNorm(momentum=norm_cfg.get("momentum", 0.1), epsilon=eps, requires_grad=requires_grad, name=name)
    return lambda x, train: bn(x, use_running_average=(not train) or frozen)
  if kind == "IN":
    if norm_cfg.get("track_running_stats", False):
      raise ValueError(f"norm_cfg {norm_cfg}: InstanceNorm with track_running_stats=True (running "
                       "statistics at test time) is not supported; mmcv's IN default is False")
    # torch's InstanceNorm2d: per image and channel over H, W, biased variance; mmcv: affine=False.
    inorm = GroupNorm(num_groups=None, group_size=1, epsilon=eps, use_fast_variance=False,
                      use_bias=bool(norm_cfg.get("affine", False)),
                      use_scale=bool(norm_cfg.get("affine", False)), requires_grad=requires_grad, name=name)
    return lambda x, train: inorm(x)
  # PyTorch's variance (mean of squared deviations), not flax's default E[x^2] - E[x]^2.
  if kind == "GN":
    gn = GroupNorm(num_groups=norm_cfg["num_groups"], epsilon=eps, use_fast_variance=False,
                   requires_grad=requires_grad, name=name)
    return lambda x, train: gn(x)
  ln = LayerNorm(eps, requires_grad, name=name)
  return lambda x, train: ln(x)


ACTIVATIONS = {"ReLU": nn.relu, "GELU": functools.partial(nn.gelu, approximate=False),
               "ReLU6": nn.relu6, "LeakyReLU": nn.leaky_relu, "Sigmoid": nn.sigmoid,
               "HSwish": nn.hard_swish, "HSigmoid": nn.hard_sigmoid}


def activation(act_cfg: dict | None):
  if act_cfg is None:
    return lambda x: x
  if act_cfg["type"] not in ACTIVATIONS:
    raise ValueError(f"act_cfg.type={act_cfg['type']!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[act_cfg["type"]]


class ConvModule(nn.Module):
  """mmcv ``ConvModule``: conv (named ``conv``) -> norm (``bn``/``gn``/``ln``) -> activation.

  ``bias='auto'`` follows mmcv: a conv followed by a norm has no bias. ``x`` may be a list of
  parts (arrays or ``Resized``) for their channel concatenation (``Conv``,
  ``PointwiseConv``).
  """
  features: int
  kernel_size: Any = 1
  stride: Any = 1
  padding: Any = 0
  dilation: Any = 1
  groups: int = 1
  bias: Any = "auto"
  norm_cfg: dict | None = None
  act_cfg: dict | None = None  # no activation; conv_module() gives mmcv's default ReLU

  @nn.compact
  def __call__(self, x, train: bool = False):
    use_bias = self.norm_cfg is None if self.bias == "auto" else bool(self.bias)
    x = conv2d(self.features, self.kernel_size, self.stride, self.padding, self.dilation,
               self.groups, use_bias, name="conv", parts=isinstance(x, list))(x)
    if self.norm_cfg is not None:
      x = norm_layer(self.norm_cfg, name=NORM_NAMES[self.norm_cfg["type"]])(x, train)
    return activation(self.act_cfg)(x)


RELU = {"type": "ReLU"}


def conv_module(features, kernel_size=1, stride=1, padding=0, dilation=1, groups=1,
                norm_cfg=None, act_cfg=RELU, name=None, bias="auto") -> ConvModule:
  """ConvModule with mmcv's default ReLU activation."""
  return ConvModule(features, kernel_size, stride, padding, dilation, groups, bias, norm_cfg,
                    act_cfg, name=name)


class DepthwiseSeparableConvModule(nn.Module):
  """mmcv ``DepthwiseSeparableConvModule``: ``depthwise_conv`` then ``pointwise_conv``.

  ``dw_act_cfg``/``pw_act_cfg`` = "default" use ``act_cfg``, as mmcv does.
  """
  features: int
  kernel_size: Any = 3
  stride: Any = 1
  padding: Any = 0
  dilation: Any = 1
  norm_cfg: dict | None = None
  act_cfg: dict | None = None  # callers pass RELU, mmcv's default
  dw_act_cfg: Any = "default"
  pw_act_cfg: Any = "default"

  @nn.compact
  def __call__(self, x, train: bool = False):
    in_ch = x.shape[-1]
    dw_act = self.act_cfg if self.dw_act_cfg == "default" else self.dw_act_cfg
    pw_act = self.act_cfg if self.pw_act_cfg == "default" else self.pw_act_cfg
    x = conv_module(in_ch, self.kernel_size, self.stride, self.padding, self.dilation, in_ch,
                    self.norm_cfg, dw_act, name="depthwise_conv")(x, train)
    return conv_module(self.features, 1, norm_cfg=self.norm_cfg, act_cfg=pw_act,
                       name="pointwise_conv")(x, train)


def check_in_channels(x: jax.Array, expected: int | None, where: str) -> None:
  """Fail at trace time when a head or block sees a channel count other than its config states."""
  if expected is not None and x.shape[-1] != expected:
    raise ValueError(f"{where}: in_channels={expected} in the config but the input has "
                     f"{x.shape[-1]} channels (shape {tuple(x.shape)})")


class Indexed(nn.Module):
  """Children named ``0``, ``1``, ... applied in order, as ``nn.Sequential`` names them in a state_dict.

  ``builders[i](name)`` returns a callable ``(x, train) -> x``; index positions of parameter-free
  PyTorch layers (pooling, ReLU) are kept so the names line up with mmseg's keys.
  """
  builders: tuple

  @nn.compact
  def __call__(self, x, train: bool = False):
    for i, build in enumerate(self.builders):
      x = build(name=str(i))(x, train)
    return x


def pool_builder(output_size):
  """An Indexed builder for ``nn.AdaptiveAvgPool2d(output_size)``."""
  return lambda name: (lambda x, train: adaptive_avg_pool(x, output_size))


class ModuleList(nn.Module):
  """An ``nn.ModuleList``: child ``i`` is ``build(i, name=str(i))``.

  Called on a list, child ``i`` takes element ``i``; called on one array, every child takes it.
  """
  count: int
  build: Any  # (index, name=...) -> callable(x, train)

  @nn.compact
  def __call__(self, x, train: bool = False):
    xs = x if isinstance(x, (list, tuple)) else [x] * self.count
    return [self.build(i, name=str(i))(xi, train) for i, xi in zip(range(self.count), xs)]


@functools.lru_cache(maxsize=None)
def _nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  """Source index of each output position of PyTorch's ``mode='nearest'``: floor(dst * in/out),
  clipped to in - 1, with the scale and the product in float32 as upsample_nearest2d computes
  them (so the index matches where dst * in/out lands just below a whole number)."""
  scale = np.float32(in_size) / np.float32(out_size)
  src = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int32)
  return np.minimum(src, in_size - 1)


def resize_nearest(x: jax.Array, size: Sequence[int]) -> jax.Array:
  """Nearest resize of NHWC ``x`` to ``size=(H, W)`` as ``F.interpolate(mode='nearest')``.

  PyTorch's 'nearest' takes the source pixel at floor(dst * in/out); ``jax.image.resize``
  samples at pixel centres (PyTorch's 'nearest-exact'), which picks other pixels, e.g. 2 -> 3.
  """
  x = jnp.take(x, _nearest_indices(x.shape[1], int(size[0])), axis=1)
  return jnp.take(x, _nearest_indices(x.shape[2], int(size[1])), axis=2)


# ---- transformer pieces with PyTorch's definitions (MiT, Swin, Twins, ConvNeXt, PoolFormer) ----

class LayerNorm(nn.Module):
  """``nn.LayerNorm`` over the last axis (parameters ``scale``/``bias``, from ``weight``/``bias``).

  PyTorch's variance is the mean of squared deviations from the mean; flax's LayerNorm defaults
  to E[x^2] - E[x]^2 (``use_fast_variance``), which loses digits when |mean| >> std. Statistics
  are float32 at least (float64 when ``x`` is). ``requires_grad``: as ``BatchNorm``'s.
  """
  epsilon: float = 1e-5
  requires_grad: bool = True

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
    stat = jnp.promote_types(x.dtype, jnp.float32)
    xs = x.astype(stat)
    centered = xs - xs.mean(-1, keepdims=True)
    var = (centered * centered).mean(-1, keepdims=True)
    y = centered * jax.lax.rsqrt(var + self.epsilon) * scale.astype(stat) + bias.astype(stat)
    return y.astype(x.dtype)


def layer_norm(norm_cfg: dict | None, name: str) -> LayerNorm:
  """mmcv ``build_norm_layer`` of an (LN) ``norm_cfg`` on token features (eps 1e-5 if unset)."""
  norm_cfg = dict(norm_cfg or {"type": "LN"})
  requires_grad = bool(norm_cfg.pop("requires_grad", True))
  return LayerNorm(layer_norm_epsilon(norm_cfg), requires_grad, name=name)


def layer_norm_epsilon(norm_cfg: dict | None, default: float = 1e-5) -> float:
  """``eps`` of an mmcv ``norm_cfg`` that must be a LayerNorm (``type='LN'``), for a module that
  builds its LayerNorms from it; such a module does not mark them, so ``requires_grad=False`` is
  refused rather than ignored (``layer_norm`` honours it)."""
  norm_cfg = norm_cfg or {"type": "LN"}
  if norm_cfg.get("type") != "LN":
    raise ValueError(f"norm_cfg={norm_cfg}: this module takes only a LayerNorm, type='LN'")
  unknown = sorted(set(norm_cfg) - NORM_KEYS["LN"] - {"type"})
  if unknown:
    raise ValueError(f"norm_cfg {norm_cfg} has keys {unknown} that LN does not take")
  if not norm_cfg.get("requires_grad", True):
    raise ValueError(f"norm_cfg {norm_cfg}: requires_grad=False is not supported by this module "
                     "(its LayerNorms are trained); remove it or set requires_grad=True")
  return norm_cfg.get("eps", default)


def stochastic(module: nn.Module, train: bool) -> bool:
  """Whether dropout-like layers (dropout, drop path, attention dropout) are active: in training
  mode with a ``'dropout'`` rng. Without one a training-mode forward is deterministic, with
  BatchNorm still on batch statistics (``apis.segmentor_losses(deterministic=True)``)."""
  return train and module.has_rng("dropout")


def _drop(module: nn.Module, x: jax.Array, rate: float, train: bool, mask_shape) -> jax.Array:
  """Zero entries of a ``mask_shape`` mask (broadcast over ``x``) with probability ``rate`` and
  scale the kept ones by 1 / (1 - rate), when ``stochastic``."""
  if rate == 0.0 or not stochastic(module, train):
    return x
  keep = 1.0 - rate
  mask = jax.random.bernoulli(module.make_rng("dropout"), keep, mask_shape)
  return jnp.where(mask, x / keep, jnp.zeros_like(x))


def drop_path(module: nn.Module, x: jax.Array, rate: float, train: bool) -> jax.Array:
  """mmcv ``DropPath``: zero whole samples with probability ``rate``."""
  return _drop(module, x, rate, train, (x.shape[0],) + (1,) * (x.ndim - 1))


def dropout(module: nn.Module, x: jax.Array, rate: float, train: bool) -> jax.Array:
  """``nn.Dropout(rate)``."""
  return _drop(module, x, rate, train, x.shape)


def drop_path_rates(drop_path_rate: float, num_layers: int) -> list[float]:
  """mmseg's stochastic depth decay rule, one rate per layer: ``torch.linspace(0, drop_path_rate,
  num_layers)`` (float32)."""
  return [float(r) for r in np.linspace(0.0, drop_path_rate, num_layers, dtype=np.float32)]


# Query rows per block of softmax_attention: a (block, 8192) float32 map is 32 MB.
ATTENTION_BLOCK_ROWS = 1024


@jax.custom_vjp
def softmax(x: jax.Array) -> jax.Array:
  """``jax.nn.softmax`` over the last axis, differentiated from its output alone
  (dx = y * (dy - sum(dy * y))). Autodiff of jax.nn.softmax keeps both the exponentials and the
  normalised weights for the backward pass: twice every attention map (ViT-B UPerNet's train
  step, batch 2 at 512x512: 12 x 96 MiB more at its peak)."""
  return jax.nn.softmax(x, axis=-1)


def _softmax_fwd(x):
  # exp(x - logsumexp) rather than exp(x - max) / sum: XLA copies a cheap normalisation into
  # the backward pass's fusions and kept the exponentials alive for it; an exp it does not copy.
  y = jnp.exp(x - jax.nn.logsumexp(x, axis=-1, keepdims=True))
  return y, y


def _softmax_bwd(y, dy):
  return (y * (dy - jnp.sum(dy * y, axis=-1, keepdims=True)),)


softmax.defvjp(_softmax_fwd, _softmax_bwd)


def softmax_attention(query, key, value, scale: float = 1.0):
  """softmax(scale q k^T) v over all positions (the non-local family: DANet's PAM, NonLocal2d,
  DisentangledNonLocal2d) for q (N, Lq, C), k (N, Lk, C), v (N, Lk, Cv). The full (Lq, Lk) map
  of a 64x128 feature is 268 MB, twice over (exponentials and their normalisation), which made
  it the peak of DANet's inference; each query row's softmax is independent of the others, so
  rows go in blocks of ``ATTENTION_BLOCK_ROWS`` through a ``lax.map`` (the last block padded),
  each block recomputed in the backward pass rather than stored."""
  def attend(q):
    return softmax(jnp.einsum("nqc,nkc->nqk", q, key) * scale) @ value

  n, rows, channels = query.shape
  if rows <= ATTENTION_BLOCK_ROWS:
    return attend(query)
  blocks = -(-rows // ATTENTION_BLOCK_ROWS)
  padded = jnp.pad(query, ((0, 0), (0, blocks * ATTENTION_BLOCK_ROWS - rows), (0, 0)))
  padded = padded.reshape(n, blocks, ATTENTION_BLOCK_ROWS, channels).swapaxes(0, 1)
  out = jax.lax.map(jax.checkpoint(attend), padded)
  return out.swapaxes(0, 1).reshape(n, blocks * ATTENTION_BLOCK_ROWS, -1)[:, :rows]


def multi_head_attention(module: nn.Module, q, k, v, bias=None, attn_drop: float = 0.0,
                         train: bool = False, scale: float | None = None):
  """softmax(scale q k^T + bias) v for q (N, Lq, heads, d), k/v (N, Lk, heads, d), bias
  broadcasting to (N, heads, Lq, Lk), ``scale`` 1 / sqrt(d) unless given. Dropout on the
  attention weights (``attn_drop``) is active only in training mode with a ``'dropout'`` rng.
  The operations of ``jax.nn.dot_product_attention``'s XLA path (logits at least float32,
  scaled after the product), with ``softmax``'s lighter backward pass."""
  scale = q.shape[-1] ** -0.5 if scale is None else scale
  logits_type = jnp.promote_types(q.dtype, jnp.float32)
  logits = jnp.einsum("nqhd,nkhd->nhqk", q, k, preferred_element_type=logits_type) * jnp.asarray(scale, logits_type)
  if bias is not None:
    logits = (logits + bias).astype(logits_type)
  weights = softmax(logits).astype(k.dtype)
  if attn_drop != 0.0 and stochastic(module, train):
    weights = dropout(module, weights, attn_drop, train)
  return jnp.einsum("nhqk,nkhd->nqhd", weights, v)


# trunc_normal(std=0.02), mmseg's init of every transformer Linear.
linear_init = nn.initializers.truncated_normal(0.02)


class MultiheadAttention(nn.Module):
  """``torch.nn.MultiheadAttention`` (batch first): the fused ``in_proj_weight`` (3C, C) and
  ``in_proj_bias`` kept as PyTorch stores them (so they convert by name), ``out_proj`` a Linear.
  ``bias=False`` drops both biases, as PyTorch does. ``query`` (N, Lq, C), ``key``/``value``
  (N, Lk, C)."""
  embed_dims: int
  num_heads: int
  attn_drop: float = 0.0
  bias: bool = True

  @nn.compact
  def __call__(self, query, key, value, train: bool = False):
    c, heads = self.embed_dims, self.num_heads
    if query.shape[-1] != c or c % heads:
      raise ValueError(f"MultiheadAttention: embed_dims={c} (divisible by num_heads={heads}) "
                       f"expected, query has {query.shape[-1]} channels")
    weight = self.param("in_proj_weight", nn.initializers.xavier_uniform(), (3 * c, c), jnp.float32)
    weight = weight.astype(query.dtype)
    b = (self.param("in_proj_bias", nn.initializers.zeros, (3 * c,), jnp.float32).astype(query.dtype)
         if self.bias else jnp.zeros((3 * c,), query.dtype))
    def project(x, i):
      out = x @ weight[i * c:(i + 1) * c].T + b[i * c:(i + 1) * c]
      return out.reshape(*x.shape[:-1], heads, c // heads)
    out = multi_head_attention(self, project(query, 0), project(key, 1), project(value, 2),
                               attn_drop=self.attn_drop, train=train)
    out = out.reshape(*query.shape[:-1], c)
    return nn.Dense(c, use_bias=self.bias, name="out_proj")(out)


class PatchEmbed(nn.Module):
  """mmseg ``PatchEmbed`` on NHWC: [adaptive padding,] conv ``projection``, optional LayerNorm
  ``norm``. ``padding`` an int (symmetric) or mmseg's adaptive 'corner' / 'same' (zeros so that
  the kernel covers the input: ceil(size / stride) outputs)."""
  embed_dims: int
  kernel_size: int = 16
  stride: int | None = None
  padding: Any = "corner"
  norm_eps: float | None = None  # None: no norm
  bias: bool = True

  @nn.compact
  def __call__(self, x):
    k = _pair(self.kernel_size)
    s = _pair(self.stride if self.stride is not None else self.kernel_size)
    if isinstance(self.padding, str):
      x = adaptive_padding(x, k, s, self.padding)
      pad = 0
    else:
      pad = self.padding
    x = conv2d(self.embed_dims, k, s, pad, use_bias=self.bias, name="projection")(x)
    if self.norm_eps is not None:
      x = LayerNorm(self.norm_eps, name="norm")(x)
    return x


def adaptive_padding(x: jax.Array, kernel_size, stride, mode: str = "corner") -> jax.Array:
  """mmseg ``AdaptivePadding`` on NHWC: zeros bottom/right ('corner') or around ('same') so that
  a kernel of ``kernel_size`` and ``stride`` gives ceil(size / stride) outputs."""
  if mode not in ("corner", "same"):
    raise ValueError(f"padding={mode!r}; adaptive padding is 'corner' or 'same'")
  pads = []
  for size, k, s in zip(x.shape[1:3], _pair(kernel_size), _pair(stride)):
    total = max((-(-size // s) - 1) * s + k - size, 0)
    pads.append((0, total) if mode == "corner" else (total // 2, total - total // 2))
  if not any(p for pair in pads for p in pair):
    return x
  return jnp.pad(x, ((0, 0), *pads, (0, 0)))


class NamedChildren(nn.Module):
  """An ``nn.ModuleList`` whose children (``0``, ``1``, ...) are built and applied one at a
  time: ``children(i, build, *args)`` applies ``build(name=str(i))`` to ``args``. Two such lists
  can take turns (ConvNeXt's ``downsample_layers.i`` then ``stages.i``)."""

  @nn.compact
  def __call__(self, index: int, build, *args, **kwargs):
    return build(name=str(index))(*args, **kwargs)


def resize_by_scale(x: jax.Array, scale_factor, align_corners: bool = False) -> jax.Array:
  """Bilinear resize of NHWC ``x`` by ``scale_factor`` (a number or (sh, sw)) exactly as
  ``F.interpolate(scale_factor=s, mode='bilinear')``: the output is floor(in * s) and, without
  ``align_corners``, the source coordinate steps by 1/s rather than in/out, which differs when
  in * s is not whole (e.g. 3 rows at s=0.5: PyTorch samples row 0.5, ``resize(size=1)`` row 1)."""
  factors = scale_factor if isinstance(scale_factor, (list, tuple)) else (scale_factor, scale_factor)
  for axis, s in zip((1, 2), factors):
    in_size = x.shape[axis]
    out_size = int(math.floor(in_size * float(s)))
    whole = align_corners or out_size == in_size * s  # then 1/s == in/out: resize's taps
    x = resize_axis(x, axis, out_size, align_corners, None if whole else 1.0 / float(s))
  return x


class Scale(nn.Module):
  """mmcv ``Scale``: ``x`` times a learnable scalar ``scale`` (shape (), as mmcv stores it)."""
  init_value: float = 1.0

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.constant(self.init_value), (), jnp.float32)
    return x * scale.astype(x.dtype)


class FFN(nn.Module):
  """mmcv ``FFN`` on (..., C): ``layers.0.0`` Linear to ``feedforward_channels``, activation,
  dropout, ... ``layers.<num_fcs - 1>`` Linear back to ``embed_dims``, dropout; then
  ``identity + drop_path(out)`` (``add_identity``; ``identity`` defaults to the input)."""
  embed_dims: int
  feedforward_channels: int
  num_fcs: int = 2
  act_cfg: dict = None  # GELU, mmcv's default
  ffn_drop: float = 0.0
  drop_path_rate: float = 0.0
  add_identity: bool = True

  @nn.compact
  def __call__(self, x, identity=None, train: bool = False):
    if self.num_fcs < 2:
      raise ValueError(f"FFN: num_fcs={self.num_fcs} must be at least 2")
    act = activation(self.act_cfg or {"type": "GELU"})
    seq = NamedChildren(name="layers")
    out = x
    for i in range(self.num_fcs - 1):
      linear = functools.partial(nn.Dense, self.feedforward_channels, kernel_init=linear_init)
      out = seq(i, lambda name: NamedChildren(name=name), 0, linear, out)
      out = dropout(self, act(out), self.ffn_drop, train)
    out = seq(self.num_fcs - 1, functools.partial(nn.Dense, self.embed_dims, kernel_init=linear_init), out)
    out = drop_path(self, dropout(self, out, self.ffn_drop, train), self.drop_path_rate, train)
    if not self.add_identity:
      return out
    return (x if identity is None else identity) + out
