"""PSAHead (mmseg ``psa_head.py``): point-wise spatial attention, with mmcv's ``PSAMask`` operation
written in plain JAX (a gather with static indices; its gradient is JAX's scatter-add of it)."""
from __future__ import annotations

import functools
from typing import ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from segjax import layers
from segjax.models.heads.decode_head import BaseDecodeHead

PSA_TYPES = ("collect", "distribute", "bi-direction")


@functools.lru_cache(maxsize=None)
def _psa_mask_indices(height: int, width: int, mask_h: int, mask_w: int):
  """For pixels p and q of an (height, width) map: the mask channel that holds their relation,
  (mask_h - 1) // 2 + q_h - p_h rows and (mask_w - 1) // 2 + q_w - p_w columns into the
  mask_h x mask_w window centred on p, and whether q falls inside that window. (P, P) each."""
  rows, cols = np.divmod(np.arange(height * width), width)
  dh = rows[None, :] - rows[:, None] + (mask_h - 1) // 2
  dw = cols[None, :] - cols[:, None] + (mask_w - 1) // 2
  valid = (dh >= 0) & (dh < mask_h) & (dw >= 0) & (dw < mask_w)
  return np.where(valid, dh * mask_w + dw, 0).astype(np.int32), valid


def psa_mask(mask, psa_type: str, mask_size: Sequence[int]):
  """mmcv ``PSAMask(psa_type, mask_size)`` in NHWC: ``mask`` (N, H, W, mask_h * mask_w), each
  pixel p's window of relations -> (N, H, W, H * W), zero outside the window.

  mmcv (NCHW) writes, for pixel p and window offset k landing on pixel q, out[n, q, p] = mask[n, k, p]
  ('collect': channel q, position p) or out[n, p, q] = mask[n, k, p] ('distribute'); here the
  channel is the last axis."""
  if psa_type not in ("collect", "distribute"):
    raise ValueError(f"psa_mask: psa_type={psa_type!r}; expected 'collect' or 'distribute'")
  n, height, width, channels = mask.shape
  mask_h, mask_w = mask_size
  if channels != mask_h * mask_w:
    raise ValueError(f"psa_mask: the mask has {channels} channels; mask_size={tuple(mask_size)} "
                     f"needs {mask_h * mask_w}")
  index, valid = _psa_mask_indices(height, width, mask_h, mask_w)
  flat = mask.reshape(n, height * width, channels)
  # relation[n, p, q]: mask of pixel p at the offset of q.
  relation = jnp.where(valid, jnp.take_along_axis(flat, jnp.asarray(index)[None], axis=2), 0)
  if psa_type == "distribute":
    relation = relation.swapaxes(1, 2)
  return relation.reshape(n, height, width, height * width)


class PSAHead(BaseDecodeHead):
  TINY: ClassVar[dict] = dict(in_channels=32, in_index=2, channels=8, mask_size=(3, 5), num_classes=3,
                              norm_cfg=dict(type="BN", requires_grad=True))
  mask_size: Sequence[int] = None
  psa_type: str = "bi-direction"
  compact: bool = False
  shrink_factor: int = 2
  normalization_factor: float | None = 1.0
  psa_softmax: bool = True

  def branch(self, x, suffix: str, train: bool):
    """``reduce{suffix}`` then, at the shrunk size, ``attention{suffix}`` (ConvModule and a plain
    conv to mask_h * mask_w channels): (reduced features, attention map, align_corners used)."""
    mask_h, mask_w = self.mask_size
    out = self.conv(self.channels, 1)(name=f"reduce{suffix}")(x, train)
    h, w = out.shape[1:3]
    align_corners = self.align_corners
    if self.shrink_factor != 1:
      # mmseg's rule: only when neither side divides does it round up and align corners.
      if h % self.shrink_factor and w % self.shrink_factor:
        h, w = (h - 1) // self.shrink_factor + 1, (w - 1) // self.shrink_factor + 1
        align_corners = True
      else:
        h, w = h // self.shrink_factor, w // self.shrink_factor
        align_corners = False
      out = layers.resize(out, (h, w), align_corners)
    attention = layers.Indexed((self.conv(self.channels, 1),
                                lambda name: (lambda f, train: layers.conv2d(mask_h * mask_w, 1, use_bias=False,
                                                                             name=name)(f))),
                               name=f"attention{suffix}")(out, train)
    if self.compact and mask_h * mask_w != h * w:
      raise ValueError(f"PSAHead: compact=True needs mask_size={tuple(self.mask_size)} to cover the "
                       f"{h}x{w} shrunk feature (mask_h * mask_w == {h * w})")
    return out, attention, align_corners

  def aggregate(self, features, attention):
    """softmax over the relation channels, then each position's features summed with those
    weights (torch.bmm(x (n, c, P), y (n, P, P)) in mmseg), times 1 / normalization_factor."""
    n, h, w, c = features.shape
    if self.psa_softmax:
      attention = nn.softmax(attention, axis=-1)
    attention = attention.reshape(n, h * w, h * w)
    mask_h, mask_w = self.mask_size
    factor = self.normalization_factor if self.normalization_factor is not None else mask_h * mask_w
    return jnp.matmul(attention, features.reshape(n, h * w, c)).reshape(n, h, w, c) * (1.0 / factor)

  @staticmethod
  def transposed(attention):
    """mmseg's compact map ``y.view(n, P, P).transpose(1, 2)``."""
    n, h, w, _ = attention.shape
    return attention.reshape(n, h * w, h * w).swapaxes(1, 2).reshape(n, h, w, h * w)

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    if self.psa_type not in PSA_TYPES:
      raise ValueError(f"PSAHead: psa_type={self.psa_type!r}; expected one of {PSA_TYPES}")
    if self.mask_size is None or len(self.mask_size) != 2:
      raise ValueError(f"PSAHead: mask_size={self.mask_size}; expected (mask_h, mask_w)")
    x = self.transform_inputs(inputs)
    identity = x
    if self.psa_type in ("collect", "distribute"):
      out, y, align_corners = self.branch(x, "", train)
      if not self.compact:
        y = psa_mask(y, self.psa_type, self.mask_size)
      elif self.psa_type == "collect":
        y = self.transposed(y)
      out = self.aggregate(out, y)
    else:
      x_col, y_col, align_corners = self.branch(x, "", train)
      x_dis, y_dis, _ = self.branch(x, "_p", train)
      if self.compact:
        y_dis = self.transposed(y_dis)
      else:
        y_col = psa_mask(y_col, "collect", self.mask_size)
        y_dis = psa_mask(y_dis, "distribute", self.mask_size)
      out = jnp.concatenate([self.aggregate(x_col, y_col), self.aggregate(x_dis, y_dis)], -1)
    # mmseg's proj is a 1x1 ConvModule with padding=1 (two pixels larger), resized back.
    out = self.conv(x.shape[-1], 1, padding=1)(name="proj")(out, train)
    out = layers.resize(out, identity.shape[1:3], align_corners)
    out = self.conv(self.channels, 3, 1)(name="bottleneck")(jnp.concatenate([identity, out], -1), train)
    return self.cls_seg(out, train)
