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

  Every crop has the same shape, so one compiled ``encode_decode`` runs inside a ``fori_loop``
  over the (static) crop offsets instead of being unrolled once per crop.
  """
  _, h_img, w_img, _ = img.shape
  h_crop, w_crop = crop_size
  h_stride, w_stride = stride
  h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
  w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
  offsets, count = [], np.zeros((1, h_img, w_img, 1), np.float32)
  for h_idx in range(h_grids):
    for w_idx in range(w_grids):
      y2, x2 = min(h_idx * h_stride + h_crop, h_img), min(w_idx * w_stride + w_crop, w_img)
      y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
      offsets.append((y1, x1))
      count[:, y1:y2, x1:x2] += 1
  ch, cw = min(h_crop, h_img), min(w_crop, w_img)
  offsets = jnp.asarray(offsets, jnp.int32)
  num_classes = jax.eval_shape(lambda x: encode_decode(model, variables, x),
                               jax.ShapeDtypeStruct((img.shape[0], ch, cw, img.shape[3]), img.dtype)).shape[-1]

  def add_crop(i, preds):
    y1, x1 = offsets[i, 0], offsets[i, 1]
    crop = jax.lax.dynamic_slice(img, (0, y1, x1, 0), (img.shape[0], ch, cw, img.shape[3]))
    logits = encode_decode(model, variables, crop)
    window = jax.lax.dynamic_slice(preds, (0, y1, x1, 0), logits.shape)
    return jax.lax.dynamic_update_slice(preds, window + logits, (0, y1, x1, 0))

  preds = jnp.zeros(img.shape[:3] + (num_classes,), img.dtype)
  preds = jax.lax.fori_loop(0, len(offsets), add_crop, preds)
  return preds / jnp.asarray(count, img.dtype)


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
