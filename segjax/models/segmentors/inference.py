"""mmseg's test modes over any segmentor: whole-image ``encode_decode``, ``slide_inference``,
and the label map of logits (argmax, or a threshold for one-channel heads)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np



def encode_decode(model: nn.Module, variables, img: jax.Array) -> jax.Array:
  """mmseg ``encode_decode``: eval-mode test logits of the (last) decode head, resized (bilinear)
  to the input's H, W."""
  return model.apply(variables, img, mode="encode_decode")


def slide_inference(model: nn.Module, variables, img: jax.Array, crop_size, stride) -> jax.Array:
  """mmseg ``slide_inference`` (before rescaling): ``encode_decode`` on crops of ``crop_size``
  every ``stride`` (the last crop of a row/column flush with the border), logits summed into
  place and divided by how many crops cover each pixel.

  Memory is the crop batch's plus the output's, whatever the image size: every crop has the same
  shape, so one compiled ``encode_decode`` runs inside a ``fori_loop`` over the crop offsets
  (unrolled, each crop would keep its own activations), and the logits are summed into the output
  buffer in place. The crops form a grid, so how many cover a pixel is the product of a per-row
  and a per-column count: two small vectors, not an image-sized constant (which XLA would embed
  in the program and constant-fold, at 4000x3000 +290 MB while compiling and 3x the compile time).
  """
  _, h_img, w_img, _ = img.shape
  h_crop, w_crop = crop_size
  h_stride, w_stride = stride
  ch, cw = min(h_crop, h_img), min(w_crop, w_img)

  def starts_and_counts(size, crop, stride):
    grids = max(size - crop + stride - 1, 0) // stride + 1
    starts, count = [], np.zeros(size, np.float32)
    for idx in range(grids):
      end = min(idx * stride + crop, size)
      starts.append(max(end - crop, 0))
      count[starts[-1]:end] += 1
    return np.asarray(starts, np.int32), count

  rows, row_count = starts_and_counts(h_img, h_crop, h_stride)
  cols, col_count = starts_and_counts(w_img, w_crop, w_stride)
  crop_shape = (img.shape[0], ch, cw, img.shape[3])
  num_classes = jax.eval_shape(lambda x: encode_decode(model, variables, x),
                               jax.ShapeDtypeStruct(crop_shape, img.dtype)).shape[-1]

  def add_crop(i, preds):
    y1, x1 = jnp.asarray(rows)[i // len(cols)], jnp.asarray(cols)[i % len(cols)]
    logits = encode_decode(model, variables, jax.lax.dynamic_slice(img, (0, y1, x1, 0), crop_shape))
    window = jax.lax.dynamic_slice(preds, (0, y1, x1, 0), logits.shape)
    return jax.lax.dynamic_update_slice(preds, window + logits, (0, y1, x1, 0))

  preds = jnp.zeros(img.shape[:3] + (num_classes,), img.dtype)
  preds = jax.lax.fori_loop(0, len(rows) * len(cols), add_crop, preds)
  # Two broadcast divisions fuse into one pass over the output; their product would be a buffer.
  return preds / jnp.asarray(row_count, img.dtype)[:, None, None] / jnp.asarray(col_count, img.dtype)[None, :, None]


def inference_logits(model: nn.Module, variables, img: jax.Array, test_cfg=None) -> jax.Array:
  """Logits at the input size by ``test_cfg.mode``: 'whole' (default) or 'slide'."""
  test_cfg = test_cfg or {}
  if test_cfg.get("mode", "whole") == "slide":
    return slide_inference(model, variables, img, test_cfg["crop_size"], test_cfg["stride"])
  if test_cfg.get("mode", "whole") != "whole":
    raise ValueError(f"test_cfg.mode={test_cfg['mode']!r}; expected 'whole' or 'slide'")
  return encode_decode(model, variables, img)


def binary_threshold(decode_head_cfg) -> float | None:
  """The threshold of a one-channel (sigmoid) head, mmseg's default 0.3; None for softmax heads.
  ``decode_head_cfg``: the final decode head's config (``final_decode_head``)."""
  if decode_head_cfg.get("out_channels") != 1:
    return None
  threshold = decode_head_cfg.get("threshold")
  return 0.3 if threshold is None else float(threshold)


def predict(logits: jax.Array, threshold: float | None) -> jax.Array:
  """Label map from logits: argmax, or sigmoid > threshold for a one-channel head (mmseg)."""
  if threshold is None:
    return jnp.argmax(logits, -1)
  return (jax.nn.sigmoid(logits[..., 0]) > threshold).astype(jnp.int32)
