"""MMSegmentation's data transforms on numpy (cv2 / PIL), with mmseg's semantics.

A pipeline is a list of mmseg-style dicts (``dict(type='Resize', img_scale=(2048, 1024),
ratio_range=(0.5, 2.0))``); ``build_pipeline`` returns a callable on a results dict with mmseg's
keys (``img``, ``gt_semantic_seg``, ``img_shape``, ``ori_shape``, ``pad_shape``,
``scale_factor``, ``flip``, ...). Random transforms draw from an explicit
``np.random.Generator`` so a run is reproducible on any number of workers.
"""
from __future__ import annotations

import inspect
import io
import os
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np
from PIL import Image


class DataError(ValueError):
  """A problem with a data file; the message names the file."""


# --------------------------------------------------------------------------- mmcv image helpers

def _scale_size(size, scale):
  w, h = size
  return int(w * float(scale) + 0.5), int(h * float(scale) + 0.5)


def rescale_size(old_size, scale):
  """mmcv ``rescale_size``: (new_w, new_h), scale_factor for a number or a (long, short) edge pair."""
  w, h = old_size
  if isinstance(scale, (float, int)):
    if scale <= 0:
      raise ValueError(f"Invalid scale {scale}, must be positive.")
    scale_factor = scale
  else:
    max_long_edge, max_short_edge = max(scale), min(scale)
    scale_factor = min(max_long_edge / max(h, w), max_short_edge / min(h, w))
  return _scale_size((w, h), scale_factor), scale_factor


_INTERP = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC,
           "area": cv2.INTER_AREA, "lanczos": cv2.INTER_LANCZOS4}


def imresize(img, size, interpolation="bilinear"):
  """mmcv ``imresize`` (cv2 backend) to ``size=(w, h)``."""
  return cv2.resize(img, tuple(int(s) for s in size), interpolation=_INTERP[interpolation])


def imrescale(img, scale, interpolation="bilinear"):
  h, w = img.shape[:2]
  new_size, _ = rescale_size((w, h), scale)
  return imresize(img, new_size, interpolation)


def impad(img, shape, pad_val=0):
  """Pad bottom/right to ``shape=(h, w)`` with a constant."""
  ph, pw = shape[0] - img.shape[0], shape[1] - img.shape[1]
  if ph < 0 or pw < 0:
    raise ValueError(f"pad shape {tuple(shape)} is smaller than the image {img.shape[:2]}")
  pad = ((0, ph), (0, pw)) + ((0, 0),) * (img.ndim - 2)
  return np.pad(img, pad, constant_values=pad_val)


def imflip(img, direction="horizontal"):
  return np.ascontiguousarray(img[:, ::-1] if direction == "horizontal" else img[::-1])


# --------------------------------------------------------------------------------- transforms

class LoadImageFromFile:
  """Read ``img_prefix/img_info.filename`` as cv2 does (BGR, uint8)."""

  def __init__(self, to_float32=False, color_type="color", imdecode_backend="cv2", file_client_args=None):
    self.to_float32 = to_float32
    self.flag = {"color": cv2.IMREAD_COLOR, "grayscale": cv2.IMREAD_GRAYSCALE,
                 "unchanged": cv2.IMREAD_UNCHANGED}[color_type]

  def __call__(self, results):
    prefix = results.get("img_prefix")
    filename = results["img_info"]["filename"]
    path = os.path.join(prefix, filename) if prefix else filename
    if results.get("img_bytes") is not None:  # a packed dataset's record
      buf = np.frombuffer(results["img_bytes"], np.uint8)
    elif os.path.exists(path):
      buf = np.fromfile(path, np.uint8)
    else:
      raise DataError(f"image file not found: {path}")
    img = cv2.imdecode(buf, self.flag)
    if img is None:
      raise DataError(f"cannot decode image file: {path}")
    if self.to_float32:
      img = img.astype(np.float32)
    results.update(filename=path, ori_filename=filename, img=img, img_shape=img.shape,
                   ori_shape=img.shape, pad_shape=img.shape, scale_factor=1.0)
    results["img_norm_cfg"] = dict(mean=np.zeros(3, np.float32), std=np.ones(3, np.float32),
                                   to_rgb=False)
    return results


class LoadAnnotations:
  """Read the label map with PIL ('unchanged': palette PNGs give indices), then ``label_map`` and
  ``reduce_zero_label`` (0 -> 255, others minus 1)."""

  def __init__(self, reduce_zero_label=False, imdecode_backend="pillow", file_client_args=None):
    self.reduce_zero_label = reduce_zero_label

  def __call__(self, results):
    prefix = results.get("seg_prefix")
    filename = results["ann_info"]["seg_map"]
    path = os.path.join(prefix, filename) if prefix else filename
    try:
      source = io.BytesIO(results["seg_bytes"]) if results.get("seg_bytes") is not None else path
      with Image.open(source) as im:
        seg = np.array(im)
    except FileNotFoundError:
      raise DataError(f"label file not found: {path}") from None
    except OSError as e:
      raise DataError(f"cannot read label file {path}: {e}") from None
    if seg.ndim == 3:
      raise DataError(f"label file {path} has {seg.shape[2]} channels; expected a single-channel "
                      "(or palette) PNG of class indices")
    seg = seg.astype(np.uint8)
    label_map = results.get("label_map") or {}
    if label_map:
      original = seg.copy()
      for old_id, new_id in label_map.items():
        seg[original == old_id] = new_id % 256  # -1 (class left out) becomes 255 as in mmseg
    if self.reduce_zero_label:
      seg[seg == 0] = 255
      seg = seg - 1
      seg[seg == 254] = 255
    img = results.get("img")
    if img is not None and img.shape[:2] != seg.shape:
      raise DataError(f"label {path} is {seg.shape[0]}x{seg.shape[1]} but image "
                      f"{results.get('filename')} is {img.shape[0]}x{img.shape[1]}")
    results["gt_semantic_seg"] = seg
    results.setdefault("seg_fields", []).append("gt_semantic_seg")
    return results


class Resize:
  """mmseg ``Resize``: ``img_scale`` (one scale, a list sampled by ``multiscale_mode``, or one scale
  times a ratio from ``ratio_range``), ``keep_ratio`` via mmcv's rescale rounding."""

  def __init__(self, img_scale=None, multiscale_mode="range", ratio_range=None, keep_ratio=True,
               min_size=None):
    if img_scale is None:
      self.img_scale = None
    elif isinstance(img_scale, list) and not all(isinstance(v, (int, float)) for v in img_scale):
      self.img_scale = [tuple(s) for s in img_scale]
    else:
      self.img_scale = [tuple(img_scale)]
    if ratio_range is not None and self.img_scale is not None and len(self.img_scale) != 1:
      raise ValueError("Resize: ratio_range needs exactly one img_scale")
    if multiscale_mode not in ("value", "range"):
      raise ValueError(f"Resize: multiscale_mode={multiscale_mode!r}; expected 'value' or 'range'")
    self.multiscale_mode = multiscale_mode
    self.ratio_range = ratio_range
    self.keep_ratio = keep_ratio
    self.min_size = min_size

  @staticmethod
  def random_sample_ratio(img_scale, ratio_range, rng):
    min_ratio, max_ratio = ratio_range
    ratio = rng.random() * (max_ratio - min_ratio) + min_ratio
    return int(img_scale[0] * ratio), int(img_scale[1] * ratio)

  def _random_scale(self, results, rng):
    if self.img_scale is None:
      h, w = results["img"].shape[:2]
      return self.random_sample_ratio((w, h), self.ratio_range, rng)
    if self.ratio_range is not None:
      return self.random_sample_ratio(self.img_scale[0], self.ratio_range, rng)
    if len(self.img_scale) == 1:
      return self.img_scale[0]
    if self.multiscale_mode == "range":
      longs = [max(s) for s in self.img_scale]
      shorts = [min(s) for s in self.img_scale]
      return (int(rng.integers(min(longs), max(longs) + 1)),
              int(rng.integers(min(shorts), max(shorts) + 1)))
    return self.img_scale[int(rng.integers(len(self.img_scale)))]

  def __call__(self, results, rng=None):
    if "scale" not in results:
      results["scale"] = self._random_scale(results, rng or np.random.default_rng())
    img = results["img"]
    if self.keep_ratio:
      if self.min_size is not None:
        # mmseg: the short side becomes at least min_size, keeping the aspect ratio.
        new_short = max(min(results["scale"]), self.min_size)
        h, w = img.shape[:2]
        results["scale"] = (new_short * h / w, new_short) if h > w else (new_short, new_short * w / h)
      new = imrescale(img, results["scale"])
      h, w = img.shape[:2]
      w_scale, h_scale = new.shape[1] / w, new.shape[0] / h
    else:
      new = imresize(img, results["scale"])
      w_scale, h_scale = new.shape[1] / img.shape[1], new.shape[0] / img.shape[0]
    results.update(img=new, img_shape=new.shape, pad_shape=new.shape, keep_ratio=self.keep_ratio,
                   scale_factor=np.array([w_scale, h_scale, w_scale, h_scale], np.float32))
    for key in results.get("seg_fields", []):
      if self.keep_ratio:
        results[key] = imrescale(results[key], results["scale"], "nearest")
      else:
        results[key] = imresize(results[key], results["scale"], "nearest")
    return results


class RandomCrop:
  """Crop ``crop_size=(h, w)``; with ``cat_max_ratio < 1`` retry up to 10 times until no single
  class (ignoring ``ignore_index``) covers more than that share of the crop."""

  def __init__(self, crop_size, cat_max_ratio=1.0, ignore_index=255):
    self.crop_size = tuple(crop_size)
    self.cat_max_ratio = cat_max_ratio
    self.ignore_index = ignore_index

  def get_crop_bbox(self, img, rng):
    margin_h = max(img.shape[0] - self.crop_size[0], 0)
    margin_w = max(img.shape[1] - self.crop_size[1], 0)
    offset_h = int(rng.integers(0, margin_h + 1))
    offset_w = int(rng.integers(0, margin_w + 1))
    return offset_h, offset_h + self.crop_size[0], offset_w, offset_w + self.crop_size[1]

  @staticmethod
  def crop(img, bbox):
    y1, y2, x1, x2 = bbox
    return img[y1:y2, x1:x2, ...]

  def __call__(self, results, rng=None):
    rng = rng or np.random.default_rng()
    img = results["img"]
    bbox = self.get_crop_bbox(img, rng)
    if self.cat_max_ratio < 1.0:
      for _ in range(10):
        labels, cnt = np.unique(self.crop(results["gt_semantic_seg"], bbox), return_counts=True)
        cnt = cnt[labels != self.ignore_index]
        if len(cnt) > 1 and np.max(cnt) / np.sum(cnt) < self.cat_max_ratio:
          break
        bbox = self.get_crop_bbox(img, rng)
    img = self.crop(img, bbox)
    results.update(img=img, img_shape=img.shape)
    for key in results.get("seg_fields", []):
      results[key] = self.crop(results[key], bbox)
    return results


class RandomFlip:
  """Flip with probability ``prob`` (or as ``results['flip']`` says, inside MultiScaleFlipAug);
  ``flip_ratio`` is mmseg's deprecated name for ``prob``, which its older configs still use."""

  def __init__(self, prob=None, direction="horizontal", flip_ratio=None):
    if flip_ratio is not None:
      if prob is not None:
        raise ValueError("RandomFlip: give prob or its deprecated name flip_ratio, not both")
      prob = flip_ratio
    if direction not in ("horizontal", "vertical"):
      raise ValueError(f"RandomFlip: direction={direction!r}; expected 'horizontal' or 'vertical'")
    self.prob = prob
    self.direction = direction

  def __call__(self, results, rng=None):
    if "flip" not in results:
      results["flip"] = bool(self.prob is not None and (rng or np.random.default_rng()).random() < self.prob)
    if "flip_direction" not in results:
      results["flip_direction"] = self.direction
    if results["flip"]:
      results["img"] = imflip(results["img"], results["flip_direction"])
      for key in results.get("seg_fields", []):
        results[key] = imflip(results[key], results["flip_direction"])
    return results


class PhotoMetricDistortion:
  """Brightness, contrast (before or after, by a coin), saturation, hue; each with prob 0.5."""

  def __init__(self, brightness_delta=32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
               hue_delta=18):
    self.brightness_delta = brightness_delta
    self.contrast_lower, self.contrast_upper = contrast_range
    self.saturation_lower, self.saturation_upper = saturation_range
    self.hue_delta = hue_delta

  @staticmethod
  def convert(img, alpha=1.0, beta=0.0):
    img = img.astype(np.float32) * alpha + beta
    return np.clip(img, 0, 255).astype(np.uint8)

  def __call__(self, results, rng=None):
    rng = rng or np.random.default_rng()
    img = results["img"]
    if rng.integers(2):
      img = self.convert(img, beta=rng.uniform(-self.brightness_delta, self.brightness_delta))
    mode = rng.integers(2)
    contrast = lambda im: (self.convert(im, alpha=rng.uniform(self.contrast_lower, self.contrast_upper))
                           if rng.integers(2) else im)
    if mode == 1:
      img = contrast(img)
    if rng.integers(2):
      hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
      hsv[:, :, 1] = self.convert(hsv[:, :, 1],
                                  alpha=rng.uniform(self.saturation_lower, self.saturation_upper))
      img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if rng.integers(2):
      hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
      shift = int(rng.integers(-self.hue_delta, self.hue_delta))
      hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + shift) % 180
      img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if mode == 0:
      img = contrast(img)
    results["img"] = img
    return results


class Normalize:
  """mmcv ``imnormalize``: float32, BGR -> RGB if ``to_rgb``, (img - mean) / std."""

  def __init__(self, mean, std, to_rgb=True):
    self.mean = np.array(mean, np.float32)
    self.std = np.array(std, np.float32)
    self.to_rgb = to_rgb

  def __call__(self, results):
    img = results["img"].astype(np.float32)
    if self.to_rgb:
      img = img[..., ::-1]
    results["img"] = ((img - self.mean) * (1.0 / self.std)).astype(np.float32)
    results["img_norm_cfg"] = dict(mean=self.mean, std=self.std, to_rgb=self.to_rgb)
    return results


class Pad:
  """Pad bottom/right to ``size=(h, w)`` or to a multiple of ``size_divisor``; labels with
  ``seg_pad_val``."""

  def __init__(self, size=None, size_divisor=None, pad_val=0, seg_pad_val=255):
    if (size is None) == (size_divisor is None):
      raise ValueError("Pad: give exactly one of size and size_divisor")
    self.size = size
    self.size_divisor = size_divisor
    self.pad_val = pad_val
    self.seg_pad_val = seg_pad_val

  def __call__(self, results):
    img = results["img"]
    if self.size is not None:
      shape = tuple(self.size)
    else:
      d = self.size_divisor
      shape = (int(np.ceil(img.shape[0] / d)) * d, int(np.ceil(img.shape[1] / d)) * d)
    results["img"] = impad(img, shape, self.pad_val)
    results.update(pad_shape=results["img"].shape, pad_fixed_size=self.size,
                   pad_size_divisor=self.size_divisor)
    for key in results.get("seg_fields", []):
      results[key] = impad(results[key], results["pad_shape"][:2], self.seg_pad_val)
    return results


class ResizeToMultiple:
  """Resize (not pad) so both sides are multiples of ``size_divisor`` (mmcv
  ``imresize_to_multiple``, sides rounded up); labels with nearest."""

  def __init__(self, size_divisor=32, interpolation=None):
    self.size_divisor = size_divisor
    self.interpolation = interpolation or "bilinear"

  def _size(self, arr):
    h, w = arr.shape[:2]
    d = self.size_divisor
    return int(np.ceil(w / d)) * d, int(np.ceil(h / d)) * d

  def __call__(self, results):
    img = imresize(results["img"], self._size(results["img"]), self.interpolation)
    results.update(img=img, img_shape=img.shape, pad_shape=img.shape)
    for key in results.get("seg_fields", []):
      results[key] = imresize(results[key], self._size(results[key]), "nearest")
    return results


class RandomRotate:
  """Rotate by a uniform angle in ``degree`` (a number d means (-d, d)) with probability ``prob``
  about the image centre (mmcv ``imrotate``, constant border ``pad_val`` / ``seg_pad_val``);
  ``auto_bound`` grows the canvas to hold the whole rotated image, as mmcv: (h sin + w cos) x
  (h cos + w sin), rounded, the rotation centre moved to the new canvas' centre."""

  def __init__(self, prob, degree, pad_val=0, seg_pad_val=255, center=None, auto_bound=False):
    if center is not None and auto_bound:
      raise ValueError("RandomRotate: auto_bound=True conflicts with center (mmcv's imrotate)")
    self.prob = prob
    self.degree = (-degree, degree) if isinstance(degree, (int, float)) else tuple(degree)
    self.pad_val, self.seg_pad_val, self.center = pad_val, seg_pad_val, center
    self.auto_bound = auto_bound

  def _rotate(self, img, angle, border, interpolation):
    h, w = img.shape[:2]
    center = self.center if self.center is not None else ((w - 1) * 0.5, (h - 1) * 0.5)
    matrix = cv2.getRotationMatrix2D(tuple(center), -angle, 1.0)
    if self.auto_bound:
      cos, sin = np.abs(matrix[0, 0]), np.abs(matrix[0, 1])
      new_w, new_h = h * sin + w * cos, h * cos + w * sin
      matrix[0, 2] += (new_w - w) * 0.5
      matrix[1, 2] += (new_h - h) * 0.5
      w, h = int(np.round(new_w)), int(np.round(new_h))
    return cv2.warpAffine(img, matrix, (w, h), flags=_INTERP[interpolation],
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border)

  def __call__(self, results, rng=None):
    rng = rng or np.random.default_rng()
    rotate = rng.random() < self.prob
    angle = rng.uniform(min(self.degree), max(self.degree))  # drawn either way, as mmseg
    if rotate:
      results["img"] = self._rotate(results["img"], angle, self.pad_val, "bilinear")
      for key in results.get("seg_fields", []):
        results[key] = self._rotate(results[key], angle, self.seg_pad_val, "nearest")
    return results


class RandomCutOut:
  """With probability ``prob`` fill ``n_holes`` rectangles (``cutout_shape`` (w, h) pixels or
  ``cutout_ratio`` of the image) with ``fill_in``; labels with ``seg_fill_in`` if given."""

  def __init__(self, prob, n_holes, cutout_shape=None, cutout_ratio=None, fill_in=(0, 0, 0),
               seg_fill_in=None):
    if (cutout_shape is None) == (cutout_ratio is None):
      raise ValueError("RandomCutOut: give exactly one of cutout_shape and cutout_ratio")
    self.prob = prob
    self.n_holes = (n_holes, n_holes) if isinstance(n_holes, int) else tuple(n_holes)
    self.with_ratio = cutout_ratio is not None
    candidates = cutout_ratio if self.with_ratio else cutout_shape
    self.candidates = [tuple(candidates)] if isinstance(candidates[0], (int, float)) else [tuple(c) for c in candidates]
    self.fill_in, self.seg_fill_in = fill_in, seg_fill_in

  def __call__(self, results, rng=None):
    rng = rng or np.random.default_rng()
    if not rng.random() < self.prob:
      return results
    h, w = results["img"].shape[:2]
    for _ in range(int(rng.integers(self.n_holes[0], self.n_holes[1] + 1))):
      x1, y1 = int(rng.integers(0, w)), int(rng.integers(0, h))
      cw, ch = self.candidates[int(rng.integers(0, len(self.candidates)))]
      if self.with_ratio:
        cw, ch = int(cw * w), int(ch * h)
      x2, y2 = min(max(x1 + cw, 0), w), min(max(y1 + ch, 0), h)
      results["img"][y1:y2, x1:x2, :] = self.fill_in
      if self.seg_fill_in is not None:
        for key in results.get("seg_fields", []):
          results[key][y1:y2, x1:x2] = self.seg_fill_in
    return results


class RandomMosaic:
  """mmseg's RandomMosaic (inside ``MultiImageMixDataset``): with probability ``prob`` paste this
  image and three others (``results['mix_results']``), each resized to fit ``img_scale`` (h, w)
  keeping its ratio, around a random centre of a 2h x 2w canvas filled with ``pad_val`` /
  ``seg_pad_val``."""

  def __init__(self, prob, img_scale=(640, 640), center_ratio_range=(0.5, 1.5), pad_val=0,
               seg_pad_val=255):
    if not 0 <= prob <= 1:
      raise ValueError(f"RandomMosaic: prob must be in [0, 1], got {prob}")
    self.prob, self.img_scale = prob, tuple(img_scale)
    self.center_ratio_range = tuple(center_ratio_range)
    self.pad_val, self.seg_pad_val = pad_val, seg_pad_val

  def get_indexes(self, dataset_len: int, rng: np.random.Generator) -> list[int]:
    """The three other images (mmseg draws randint(0, len), whose upper end is out of range)."""
    return [int(i) for i in rng.integers(0, dataset_len, 3)]

  def __call__(self, results, rng=None):
    rng = rng or np.random.default_rng()
    if not rng.random() < self.prob:
      return results
    if len(results.get("mix_results", ())) != 3:
      raise ValueError("RandomMosaic needs 3 mix_results: use it in a MultiImageMixDataset pipeline")
    h, w = self.img_scale
    centre = (int(rng.uniform(*self.center_ratio_range) * w), int(rng.uniform(*self.center_ratio_range) * h))
    patches = [results] + list(results["mix_results"])
    img = results["img"]
    canvas = np.full((2 * h, 2 * w) + img.shape[2:], self.pad_val, img.dtype)
    for loc, patch in zip(("top_left", "top_right", "bottom_left", "bottom_right"), patches):
      self._paste(canvas, patch["img"], loc, centre, "bilinear")
    for key in results.get("seg_fields", []):
      seg_canvas = np.full((2 * h, 2 * w), self.seg_pad_val, results[key].dtype)
      for loc, patch in zip(("top_left", "top_right", "bottom_left", "bottom_right"), patches):
        self._paste(seg_canvas, patch[key], loc, centre, "nearest")
      results[key] = seg_canvas
    results.update(img=canvas, img_shape=canvas.shape, ori_shape=canvas.shape)
    return results

  def _paste(self, canvas, image, loc, centre, interpolation):
    h_i, w_i = image.shape[:2]
    ratio = min(self.img_scale[0] / h_i, self.img_scale[1] / w_i)
    image = imresize(image, (int(w_i * ratio), int(h_i * ratio)), interpolation)
    (x1p, y1p, x2p, y2p), (x1c, y1c, x2c, y2c) = self._combine(loc, centre, image.shape[1::-1])
    canvas[y1p:y2p, x1p:x2p] = image[y1c:y2c, x1c:x2c]

  def _combine(self, loc, centre, wh):
    """mmseg's ``_mosaic_combine``: paste and crop boxes (x1, y1, x2, y2) of one quadrant."""
    (cx, cy), (w, h), (H2, W2) = centre, wh, (2 * self.img_scale[0], 2 * self.img_scale[1])
    if loc == "top_left":
      x1, y1, x2, y2 = max(cx - w, 0), max(cy - h, 0), cx, cy
      crop = w - (x2 - x1), h - (y2 - y1), w, h
    elif loc == "top_right":
      x1, y1, x2, y2 = cx, max(cy - h, 0), min(cx + w, W2), cy
      crop = 0, h - (y2 - y1), min(w, x2 - x1), h
    elif loc == "bottom_left":
      x1, y1, x2, y2 = max(cx - w, 0), cy, cx, min(H2, cy + h)
      crop = w - (x2 - x1), 0, w, min(y2 - y1, h)
    else:
      x1, y1, x2, y2 = cx, cy, min(cx + w, W2), min(H2, cy + h)
      crop = 0, 0, min(w, x2 - x1), min(y2 - y1, h)
    return (x1, y1, x2, y2), crop


class AdjustGamma:
  """Gamma correction by lookup table (mmcv ``lut_transform``)."""

  def __init__(self, gamma=1.0):
    if gamma <= 0:
      raise ValueError(f"AdjustGamma: gamma must be positive, got {gamma}")
    inv_gamma = 1.0 / gamma
    self.table = np.array([(i / 255.0) ** inv_gamma * 255 for i in np.arange(256)]).astype("uint8")

  def __call__(self, results):
    results["img"] = cv2.LUT(np.array(results["img"], dtype=np.uint8), self.table)
    return results


class CLAHE:
  """Contrast-limited adaptive histogram equalisation per channel."""

  def __init__(self, clip_limit=40.0, tile_grid_size=(8, 8)):
    self.clip_limit = clip_limit
    self.tile_grid_size = tuple(tile_grid_size)

  def __call__(self, results):
    clahe = cv2.createCLAHE(self.clip_limit, self.tile_grid_size)
    img = results["img"]
    for i in range(img.shape[2]):
      img[:, :, i] = clahe.apply(np.array(img[:, :, i], dtype=np.uint8))
    return results


class Rerange:
  """Linearly map the image's [min, max] to [min_value, max_value] (float64, as mmseg)."""

  def __init__(self, min_value=0, max_value=255):
    if min_value >= max_value:
      raise ValueError(f"Rerange: min_value {min_value} must be below max_value {max_value}")
    self.min_value, self.max_value = min_value, max_value

  def __call__(self, results):
    img = results["img"]
    lo, hi = np.min(img), np.max(img)
    if lo >= hi:
      raise ValueError(f"Rerange: image {results.get('filename')} is constant ({lo})")
    img = (img - lo) / (hi - lo)
    results["img"] = img * (self.max_value - self.min_value) + self.min_value
    return results


class RGB2Gray:
  """Weighted channel sum, repeated to ``out_channels`` (default: the input's channel count)."""

  def __init__(self, out_channels=None, weights=(0.299, 0.587, 0.114)):
    self.out_channels = out_channels
    self.weights = tuple(weights)

  def __call__(self, results):
    img = results["img"]
    if img.ndim != 3 or img.shape[2] != len(self.weights):
      raise ValueError(f"RGB2Gray: expected an (H, W, {len(self.weights)}) image, got {img.shape}")
    weights = np.array(self.weights).reshape((1, 1, -1))
    img = (img * weights).sum(2, keepdims=True)
    img = img.repeat(self.out_channels or weights.shape[2], axis=2)
    results.update(img=img, img_shape=img.shape)
    return results


class SegRescale:
  """Rescale label maps by ``scale_factor`` (nearest), e.g. for heads trained at lower resolution."""

  def __init__(self, scale_factor=1):
    self.scale_factor = scale_factor

  def __call__(self, results):
    for key in results.get("seg_fields", []):
      if self.scale_factor != 1:
        results[key] = imrescale(results[key], self.scale_factor, "nearest")
    return results


class MultiScaleFlipAug:
  """Test-time augmentation: the inner ``transforms`` at each scale (``img_scale``, or the image's
  own size times ``img_ratios``), with and without flip. One augmentation returns a results dict,
  several return a list of them (mmseg returns lists keyed per field; segjax keeps whole dicts)."""

  def __init__(self, transforms, img_scale=None, img_ratios=None, flip=False,
               flip_direction="horizontal"):
    self.transforms = Compose([build_transform(t) for t in transforms])
    if img_ratios is not None and not isinstance(img_ratios, (list, tuple)):
      img_ratios = [img_ratios]
    if img_scale is not None and isinstance(img_scale, (list, tuple)) and img_scale and \
        all(isinstance(v, (int, float)) for v in img_scale):
      img_scale = [tuple(img_scale)]
    if img_scale is not None and img_ratios is not None:
      img_scale = [(int(w * r), int(h * r)) for w, h in img_scale for r in img_ratios]
    self.img_scale = img_scale
    self.img_ratios = img_ratios
    self.flip = flip
    self.flip_direction = flip_direction if isinstance(flip_direction, list) else [flip_direction]

  def __call__(self, results, rng=None):
    if self.img_scale is None:
      h, w = results["img"].shape[:2]
      scales = [(int(w * r), int(h * r)) for r in (self.img_ratios or [1.0])]
    else:
      scales = self.img_scale
    flips = [(False, None)] + ([(True, d) for d in self.flip_direction] if self.flip else [])
    outs = []
    for scale in scales:
      for flip, direction in flips:
        r = dict(results, scale=tuple(scale), flip=flip, flip_direction=direction)
        r["seg_fields"] = list(results.get("seg_fields", []))
        outs.append(self.transforms(r, rng))
    return outs[0] if len(outs) == 1 else outs


# mmseg's formatting transforms turn numpy arrays into torch tensors (channels first) and
# DataContainers for its collate. segjax's loader batches the numpy arrays itself, channels last:
# these transforms keep what they mean for the data (a 2-D image gains its channel axis) and check
# the keys they name, so mmseg's pipelines run unchanged.

def _channels_last(img):
  """mmseg's (H, W) -> (H, W, 1) before its transpose to (C, H, W); segjax stays (H, W, C)."""
  return img[..., None] if img.ndim < 3 else img


def _require(results, keys, transform):
  missing = [k for k in keys if k not in results]
  if missing:
    raise KeyError(f"{transform}: results have no {missing} (they have {sorted(results)})")


class DefaultFormatBundle:
  """mmseg's bundle for ``img`` (CHW tensor) and ``gt_semantic_seg`` (1xHxW int64 tensor):
  segjax keeps ``img`` as (H, W, C) numpy and the label map as it is."""

  def __call__(self, results):
    if "img" in results:
      results["img"] = _channels_last(results["img"])
    return results


class ImageToTensor:
  """mmseg makes (C, H, W) tensors of the images ``keys`` (a 2-D image gets one channel); segjax
  keeps them (H, W, C)."""

  def __init__(self, keys):
    self.keys = tuple(keys)

  def __call__(self, results):
    _require(results, self.keys, "ImageToTensor")
    for key in self.keys:
      results[key] = _channels_last(results[key])
    return results


class ToTensor:
  """mmseg converts ``keys`` to torch tensors; segjax keeps numpy arrays (the keys must exist)."""

  def __init__(self, keys):
    self.keys = tuple(keys)

  def __call__(self, results):
    _require(results, self.keys, "ToTensor")
    return results


class Transpose:
  """mmseg transposes ``keys`` by ``order``; its use is (2, 0, 1), (H, W, C) -> (C, H, W) for
  torch, which segjax's channels-last layout already is. Another order would change what the
  model sees and is refused."""

  def __init__(self, keys, order):
    self.keys, self.order = tuple(keys), tuple(order)
    if self.order != (2, 0, 1) and self.order != tuple(range(len(self.order))):
      raise ValueError(f"Transpose(order={self.order}): segjax keeps arrays channels-last; it "
                       "accepts mmseg's (2, 0, 1) (to channels-first for torch) and the identity")

  def __call__(self, results):
    _require(results, self.keys, "Transpose")
    for key in self.keys:
      if results[key].ndim != len(self.order):
        raise ValueError(f"Transpose(order={self.order}): results[{key!r}] has shape "
                         f"{results[key].shape}")
    return results


class ToDataContainer:
  """mmseg wraps ``fields`` (dicts with ``key`` and DataContainer options) for its collate;
  segjax's loader stacks the arrays itself (the keys must exist)."""

  def __init__(self, fields=(dict(key="img", stack=True), dict(key="gt_semantic_seg"))):
    if any("key" not in f for f in fields):
      raise ValueError(f"ToDataContainer: every field needs a 'key', got {list(fields)}")
    self.keys = tuple(f["key"] for f in fields)

  def __call__(self, results):
    _require(results, self.keys, "ToDataContainer")
    return results


class Collect:
  """Keep ``keys`` (each must exist) and ``img_metas``, the ``meta_keys`` among the results, as
  mmseg's Collect does (mmseg also requires every meta key; segjax skips absent ones)."""

  def __init__(self, keys, meta_keys=None):
    self.keys = tuple(keys)
    self.meta_keys = tuple(meta_keys) if meta_keys is not None else (
        "filename", "ori_filename", "ori_shape", "img_shape", "pad_shape", "scale_factor", "flip",
        "flip_direction", "img_norm_cfg")

  def __call__(self, results):
    _require(results, self.keys, "Collect")
    out = {k: results[k] for k in self.keys}
    out["img_metas"] = {k: results[k] for k in self.meta_keys if k in results}
    return out


TRANSFORMS: dict[str, type] = {
    "LoadImageFromFile": LoadImageFromFile,
    "LoadAnnotations": LoadAnnotations,
    "Resize": Resize,
    "RandomCrop": RandomCrop,
    "RandomFlip": RandomFlip,
    "PhotoMetricDistortion": PhotoMetricDistortion,
    "Normalize": Normalize,
    "Pad": Pad,
    "AdjustGamma": AdjustGamma,
    "CLAHE": CLAHE,
    "Rerange": Rerange,
    "RGB2Gray": RGB2Gray,
    "SegRescale": SegRescale,
    "ResizeToMultiple": ResizeToMultiple,
    "RandomRotate": RandomRotate,
    "RandomCutOut": RandomCutOut,
    "RandomMosaic": RandomMosaic,
    "MultiScaleFlipAug": MultiScaleFlipAug,
    "DefaultFormatBundle": DefaultFormatBundle,
    "ImageToTensor": ImageToTensor,
    "ToTensor": ToTensor,
    "Transpose": Transpose,
    "ToDataContainer": ToDataContainer,
    "Collect": Collect,
}


class Compose:
  """Apply transforms in order; random ones receive the pipeline's generator."""

  def __init__(self, transforms: Sequence[Callable]):
    self.transforms = list(transforms)
    self._takes_rng = ["rng" in inspect.signature(t.__call__).parameters for t in self.transforms]

  def __call__(self, results: dict, rng: np.random.Generator | None = None) -> dict:
    rng = rng if rng is not None else np.random.default_rng()
    for t, takes_rng in zip(self.transforms, self._takes_rng):
      results = t(results, rng) if takes_rng else t(results)
    return results


def build_from(table: Mapping[str, Callable], cfg: Mapping, what: str):
  """``table[cfg['type']](**rest)``; an unknown type or argument is an error naming it."""
  cfg = dict(cfg)
  kind = cfg.pop("type", None)
  if kind not in table:
    raise ValueError(f"{what} type={kind!r} is not available; expected one of {sorted(table)}")
  try:
    return table[kind](**cfg)
  except TypeError as e:
    raise ValueError(f"{what} {kind}: {e}") from None


def build_transform(cfg: Mapping) -> Callable:
  return build_from(TRANSFORMS, cfg, "pipeline transform")


def build_pipeline(cfgs: Sequence[Mapping]) -> Compose:
  """mmseg pipeline config (list of dicts) -> callable(results, rng) -> results."""
  return Compose([build_transform(c) for c in cfgs])
