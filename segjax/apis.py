"""Inference API, as MMSegmentation's ``mmseg.apis``.

  model = init_segmentor("converted_dir")                 # written by tools/convert_weights.py
  seg = inference_segmentor(model, "demo.png")             # (H, W) label map
  logits = segmentor_logits(model, images)                 # NHWC normalised -> NHWC logits
  overlay = show_result(model, "demo.png", seg, opacity=0.5)

A converted directory holds ``config.json`` (the mmseg ``model`` dict plus test-time settings)
and an orbax checkpoint under ``checkpoints/``.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from segjax import layers, xla_flags
from segjax.data.transforms import DataError, LoadImageFromFile, imrescale
from segjax.config import to_plain
from segjax.models import build_segmentor, init_variables
from segjax.models.segmentor import binary_threshold, encode_decode, inference_logits

DEFAULT_IMG_NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)


@dataclasses.dataclass
class Segmentor:
  """A model with its weights and the test-time settings inference needs."""
  model: Any
  variables: dict
  model_cfg: dict
  img_norm_cfg: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_IMG_NORM))
  img_scale: Sequence[int] | None = None  # keep-ratio resize before inference, as mmseg's test pipeline
  classes: Sequence[str] | None = None
  palette: Sequence[Sequence[int]] | None = None

  def __post_init__(self):
    # One jitted function per segmentor; it recompiles only for new input shapes.
    options = xla_flags.memory_scheduler_options()
    self.encode_decode = jax.jit(functools.partial(encode_decode, self.model),
                                 compiler_options=options)
    self.inference_logits = jax.jit(functools.partial(inference_logits, self.model,
                                                      test_cfg=self.test_cfg),
                                    compiler_options=options)
    self._compiled_shapes: set = set()

  def run(self, jitted, images) -> jax.Array:
    """``jitted(variables, images)``, compiled first by ``xla_flags.compile_and_trim`` for each
    new image shape, so the run's scratch memory does not add to the compiler's freed heap."""
    x = jnp.asarray(images, jnp.float32)
    key = (jitted, x.shape)
    if key not in self._compiled_shapes:
      xla_flags.compile_and_trim(jitted, self.variables, x)
      self._compiled_shapes.add(key)
    return jitted(self.variables, x)

  @property
  def test_cfg(self) -> dict:
    return dict(self.model_cfg.get("test_cfg") or {"mode": "whole"})

  @property
  def align_corners(self) -> bool:
    return bool(self.model_cfg["decode_head"].get("align_corners", False))

  @property
  def threshold(self) -> float | None:
    return binary_threshold(self.model_cfg["decode_head"])

  @property
  def num_classes(self) -> int:
    return int(self.model_cfg["decode_head"]["num_classes"])


def test_settings(pipeline) -> dict:
  """``img_norm_cfg`` and the keep-ratio test scale (``img_scale``) of a test pipeline: mmseg's
  (``MultiScaleFlipAug(img_scale=...)`` around Resize/Normalize) or segjax's flat one."""
  extra = {}
  for step in pipeline or []:
    for t in [step] + list(step.get("transforms", [])):
      if t.get("type") == "Normalize":
        extra["img_norm_cfg"] = {k: list(t[k]) if k != "to_rgb" else t[k]
                                 for k in ("mean", "std", "to_rgb") if k in t}
      if t.get("type") in ("MultiScaleFlipAug", "Resize") and t.get("img_scale"):
        extra["img_scale"] = list(t["img_scale"])
  return extra


def save_converted(out_dir: str, model_cfg: dict, variables: dict, extra: dict | None = None) -> None:
  """Write ``config.json`` and an orbax checkpoint (step 0) that ``init_segmentor`` and
  ``--config.load_from`` read; an earlier conversion in ``out_dir`` is replaced."""
  from segjax.train import checkpoint
  os.makedirs(out_dir, exist_ok=True)
  cfg = {"model": model_cfg, **(extra or {})}
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(cfg, f, indent=1)
  manager = checkpoint.make_manager(out_dir, None)
  if 0 in manager.all_steps():  # converting into the same directory again replaces the weights
    manager.delete(0)
  import orbax.checkpoint as ocp
  state = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
  manager.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=True)
  manager.wait_until_finished()


def init_segmentor(config_or_dir, checkpoint: str | None = None) -> Segmentor:
  """Build a Segmentor from a converted directory, a segjax ConfigDict, or a model dict.

  ``checkpoint``: a segjax workdir/checkpoint folder or an mmseg ``.pth`` (converted on the fly);
  defaults to the directory itself when ``config_or_dir`` is a converted directory.
  """
  from segjax.train.checkpoint import load_variables
  extra: dict = {}
  if isinstance(config_or_dir, str):
    cfg_path = os.path.join(config_or_dir, "config.json")
    if not os.path.exists(cfg_path):
      raise FileNotFoundError(f"{config_or_dir!r} is not a converted segjax directory (no config.json); "
                              "write one with tools/convert_weights.py")
    with open(cfg_path) as f:
      cfg = json.load(f)
    model_cfg = cfg.pop("model")
    extra = cfg
    checkpoint = checkpoint or config_or_dir
  elif hasattr(config_or_dir, "model"):  # a segjax config: test settings from its val set
    model_cfg = to_plain(config_or_dir.model)
    val = to_plain(config_or_dir.data.val) if "data" in config_or_dir else {}
    extra = test_settings(val.get("pipeline"))
    from segjax.data.datasets import DATASETS
    dataset_cls = DATASETS.get(val.get("type"))
    if dataset_cls is not None and dataset_cls.CLASSES is not None:
      extra.update(classes=list(dataset_cls.CLASSES), palette=[list(p) for p in dataset_cls.PALETTE])
  else:
    model_cfg = to_plain(config_or_dir)
  model_cfg = to_plain(model_cfg)
  model = build_segmentor(model_cfg)
  if checkpoint is None:
    variables = init_variables(model, jax.random.PRNGKey(0))
  elif checkpoint.endswith((".pth", ".pt")):
    from segjax.convert import convert_checkpoint
    variables = convert_checkpoint(checkpoint, model)
  else:
    variables = load_variables(checkpoint)
  return Segmentor(model, variables, model_cfg,
                   img_norm_cfg=extra.get("img_norm_cfg", dict(DEFAULT_IMG_NORM)),
                   img_scale=extra.get("img_scale"), classes=extra.get("classes"),
                   palette=extra.get("palette"))


def segmentor_logits(segmentor: Segmentor, images) -> jax.Array:
  """mmseg ``encode_decode``: NHWC float32 normalised images -> NHWC logits at the input size."""
  return segmentor.run(segmentor.encode_decode, images)


def test_logits(segmentor: Segmentor, images) -> jax.Array:
  """Logits at the input size by the model's test_cfg (whole or slide), jitted."""
  return segmentor.run(segmentor.inference_logits, images)


def _load_bgr(image) -> np.ndarray:
  if isinstance(image, str):
    return LoadImageFromFile()({"img_info": {"filename": image}})["img"]
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[2] != 3:
    raise DataError(f"expected an (H, W, 3) BGR image, got shape {image.shape}")
  return image


def _normalise(segmentor: Segmentor, bgr: np.ndarray) -> np.ndarray:
  norm = segmentor.img_norm_cfg
  img = bgr.astype(np.float32)
  if norm.get("to_rgb", True):
    img = img[..., ::-1]
  return (img - np.array(norm["mean"], np.float32)) / np.array(norm["std"], np.float32)


def inference_probs(segmentor: Segmentor, image, scales: Sequence[float] = (1.0,),
                    flip: bool = False) -> np.ndarray:
  """mmseg ``inference``/``aug_test``: softmax (sigmoid for a one-channel head) of the logits at
  the original size, averaged over ``scales`` (ratios of ``img_scale``) and horizontal flips.
  Returns (H, W, C)."""
  bgr = _load_bgr(image)
  h, w = bgr.shape[:2]
  total, n = 0.0, 0
  for ratio in scales:
    img = bgr
    if segmentor.img_scale is not None:
      img = imrescale(bgr, tuple(int(s * ratio) for s in segmentor.img_scale))
    elif ratio != 1.0:
      img = imrescale(bgr, float(ratio))
    x = _normalise(segmentor, img)[None]
    for flipped in ((False, True) if flip else (False,)):
      xi = x[:, :, ::-1] if flipped else x
      logits = layers.resize(test_logits(segmentor, xi), (h, w), segmentor.align_corners)
      probs = (jax.nn.sigmoid(logits) if segmentor.threshold is not None
               else jax.nn.softmax(logits, axis=-1))[0]
      total = total + (probs[:, ::-1] if flipped else probs)
      n += 1
  return np.asarray(total / n)


def inference_segmentor(segmentor: Segmentor, image, scales: Sequence[float] = (1.0,),
                        flip: bool = False) -> np.ndarray:
  """Label map (H, W) of an image path or BGR array, at the image's own size."""
  probs = inference_probs(segmentor, image, scales, flip)
  if segmentor.threshold is not None:
    return (probs[..., 0] > segmentor.threshold).astype(np.int64)
  return np.argmax(probs, axis=-1).astype(np.int64)


def _palette(segmentor: Segmentor, num_classes: int) -> np.ndarray:
  if segmentor.palette is not None:
    return np.asarray(segmentor.palette, np.uint8)
  # mmseg's fallback: np.random.seed(42); np.random.randint(0, 255, size=(num_classes, 3)).
  return np.random.RandomState(42).randint(0, 255, size=(num_classes, 3)).astype(np.uint8)


def show_result(segmentor: Segmentor, image, seg: np.ndarray, opacity: float = 0.5,
                out_file: str | None = None) -> np.ndarray:
  """mmseg ``show_result``: blend the palette colours (RGB palette, BGR image) with ``opacity``."""
  if not 0 < opacity <= 1:
    raise ValueError(f"opacity must be in (0, 1], got {opacity}")
  img = _load_bgr(image).copy()
  palette = _palette(segmentor, segmentor.num_classes)
  color_seg = np.zeros((*seg.shape, 3), np.uint8)
  for label, color in enumerate(palette):
    color_seg[seg == label] = color
  color_seg = color_seg[..., ::-1]  # RGB -> BGR
  out = (img * (1 - opacity) + color_seg * opacity).astype(np.uint8)
  if out_file:
    os.makedirs(os.path.dirname(os.path.abspath(out_file)), exist_ok=True)
    cv2.imwrite(out_file, out)
  return out
