"""The API, as MMSegmentation's ``mmseg.apis``: one name per thing.

  model = init_segmentor("converted_dir")                  # or a config file/object + checkpoint
  seg = inference_segmentor(model, "demo.png")              # (H, W) label map (probs=True: softmax)
  logits = encode_decode(model, images)                     # NHWC normalised -> NHWC logits
  logits = inference_logits(model, images)                  # the same by test_cfg (whole / slide)
  overlay = show_result(model, "demo.png", seg, opacity=0.5)
  losses = segmentor_losses(model, images, labels)          # mmseg's forward_train loss dict
  log, variables = run_train_steps(model_cfg, optimizer, lr_config, ckpt, images, labels, iters)

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
from segjax.models.segmentors import inference
from segjax.models.segmentors.encoder_decoder import final_decode_head, training_rngs

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
    options = xla_flags.memory_options()
    self.encode_decode = jax.jit(functools.partial(inference.encode_decode, self.model),
                                 compiler_options=options)
    self.inference_logits = jax.jit(functools.partial(inference.inference_logits, self.model,
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
    return bool(final_decode_head(self.model_cfg).get("align_corners", False))

  @property
  def threshold(self) -> float | None:
    return inference.binary_threshold(final_decode_head(self.model_cfg))

  @property
  def num_classes(self) -> int:
    return int(final_decode_head(self.model_cfg)["num_classes"])


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
  ``--config.load_from`` read; an earlier conversion in ``out_dir`` is replaced. Any other
  non-empty ``out_dir`` is refused: written into a training workdir, step 0 would sit beside the
  run's steps (and a resume or ``init_segmentor`` pick the newest, not the converted weights)."""
  from segjax.train import checkpoint
  _check_conversion_target(out_dir)
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


def _check_conversion_target(out_dir: str) -> None:
  """``out_dir`` must be new, empty, or an earlier conversion."""
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise FileExistsError(f"{out_dir} is a file; give a directory for the converted weights")
  entries = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
  if entries and not _is_conversion(out_dir, entries):
    raise FileExistsError(
        f"{out_dir} is not empty and is not an earlier conversion (it holds {', '.join(entries[:8])}"
        f"{', ...' if len(entries) > 8 else ''}); write converted weights into a new or empty "
        "directory (a training workdir's own checkpoints are read directly: init_segmentor(CONFIG, "
        "WORKDIR), --config.load_from=WORKDIR)")


def _is_conversion(out_dir: str, entries: list[str]) -> bool:
  """What ``save_converted`` writes: ``config.json`` with a ``model``, ``checkpoints/`` holding
  step 0 only, nothing else."""
  if not set(entries) <= {"config.json", "checkpoints"} or "config.json" not in entries:
    return False
  try:
    with open(os.path.join(out_dir, "config.json")) as f:
      if "model" not in json.load(f):
        return False
  except (OSError, ValueError):
    return False
  ckpt_dir = os.path.join(out_dir, "checkpoints")
  return not os.path.isdir(ckpt_dir) or all(name == "0" for name in os.listdir(ckpt_dir))


def _settings_of_config(config) -> tuple[dict, dict]:
  """A segjax config's model dict and the test settings of its val set (normalisation,
  keep-ratio scale, class names and palette)."""
  model_cfg = to_plain(config.model)
  val = to_plain(config.data.val) if "data" in config else {}
  extra = test_settings(val.get("pipeline"))
  from segjax.data.datasets import DATASETS
  dataset_cls = DATASETS.get(val.get("type"))
  if dataset_cls is not None and dataset_cls.CLASSES is not None:
    extra.update(classes=list(dataset_cls.CLASSES), palette=[list(p) for p in dataset_cls.PALETTE])
  return model_cfg, extra


def init_segmentor(config, checkpoint: str | None = None) -> Segmentor:
  """A Segmentor from what mmseg's ``init_segmentor`` takes, and a converted directory:

  - ``config``: a converted directory (``tools/convert_weights.py``; its weights are used unless
    ``checkpoint`` is given), a config file (``configs/X.py[:variant]``, any mmseg ``.py`` file,
    or a ``.json`` model dict), a config object (segjax ConfigDict) or an mmseg ``model`` dict;
  - ``checkpoint``: a segjax workdir, checkpoint folder, converted directory or published
    ``.msgpack``, or an mmseg ``.pth`` (converted on the fly); None: random initialisation.
  """
  from segjax.train.checkpoint import load_variables
  extra: dict = {}
  if isinstance(config, str) and os.path.isdir(config):
    cfg_path = os.path.join(config, "config.json")
    if not os.path.exists(cfg_path):
      raise FileNotFoundError(f"{config!r} is a directory but not a converted segjax directory (no "
                              "config.json); give the config file as `config` and this directory as "
                              "`checkpoint`, or write one with tools/convert_weights.py")
    with open(cfg_path) as f:
      extra = json.load(f)
    model_cfg = extra.pop("model")
    checkpoint = checkpoint or config
  elif isinstance(config, str) and config.endswith(".json"):
    from segjax.convert.mmseg_config import load_model_dict
    model_cfg = load_model_dict(config)
  elif isinstance(config, str):
    from segjax.config import load_config
    model_cfg, extra = _settings_of_config(load_config(config))
  elif hasattr(config, "model"):
    model_cfg, extra = _settings_of_config(config)
  else:
    model_cfg = config
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


def encode_decode(segmentor: Segmentor, images) -> jax.Array:
  """mmseg ``encode_decode``: NHWC float32 normalised images -> NHWC logits at the input size."""
  return segmentor.run(segmentor.encode_decode, images)


def inference_logits(segmentor: Segmentor, images) -> jax.Array:
  """Logits at the input size by the model's test_cfg (whole or slide), jitted."""
  return segmentor.run(segmentor.inference_logits, images)


def segmentor_losses(segmentor: Segmentor, images, labels, deterministic: bool = True,
                     rng: jax.Array | None = None) -> dict:
  """mmseg ``forward_train``: the loss dict with mmseg's keys (``decode.loss_ce``,
  ``decode.acc_seg``, ``aux.loss_ce`` / ``aux_0.``, ...) for NHWC normalised ``images`` and
  (N, H, W) integer ``labels``. BatchNorm runs in training mode (batch statistics); dropout and
  drop path are off when ``deterministic`` (else drawn from ``rng``); random training choices
  (PointRend's points) are drawn from ``rng`` either way. The total, as mmseg's
  ``_parse_losses``, is ``segjax.losses.parse_losses(result)``."""
  rngs = training_rngs(rng if rng is not None else jax.random.PRNGKey(0), deterministic)
  out, _ = segmentor.model.apply(segmentor.variables, jnp.asarray(images, jnp.float32),
                                 jnp.asarray(labels, jnp.int32), train=True, mode="loss",
                                 mutable=["batch_stats"], rngs=rngs)
  return {k: np.asarray(v) for k, v in out.items()}


def run_train_steps(model_cfg, optimizer_cfg, lr_config, checkpoint: str, images_nhwc, labels,
                    total_iters: int, deterministic: bool = True, seed: int = 0,
                    optimizer_config=None, dtype=jnp.float32) -> tuple[list[dict], dict]:
  """Train from ``checkpoint`` over given batches with the jit train step main.py runs, built
  from mmseg's dicts (``model``, ``optimizer`` incl. ``paramwise_cfg``/``constructor``,
  ``lr_config`` incl. warmup, ``optimizer_config`` incl. ``grad_clip``) for a schedule of
  ``total_iters`` (mmseg's ``runner.max_iters``).

  ``images_nhwc`` (T, N, H, W, C) and ``labels`` (T, N, H, W): one batch per iteration.
  Returns the per-iteration log (``iter``, ``lrs``: the distinct parameter-group learning rates
  of that iteration, and every loss key of mmseg's log, computed before the update) and the
  final variables (parameters and BatchNorm statistics). ``dtype=float64`` (inside
  ``jax.enable_x64``) runs the same steps in double precision, e.g. to measure float32's effect.
  """
  from segjax.config import base_config
  from segjax.train import loop, optim
  config = base_config()
  config.model = to_plain(model_cfg)
  config.optimizer = dict(to_plain(optimizer_cfg))
  config.lr_config = dict(to_plain(lr_config))
  if optimizer_config:
    config.optimizer_config.update(to_plain(optimizer_config))
  config.total_iters = int(total_iters)
  segmentor = init_segmentor(config.model, checkpoint)
  variables = jax.tree.map(lambda a: jnp.asarray(a, dtype), segmentor.variables)
  params = variables["params"]
  tx, schedule = optim.build_optimizer(config, params)
  lr_mults = optim.distinct_lr_multipliers(config, params)
  state = loop.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          batch_stats=variables.get("batch_stats", {}),
                          opt_state=tx.init(params), rng=jax.random.PRNGKey(seed))
  step = jax.jit(functools.partial(loop.train_step, model=segmentor.model, tx=tx,
                                   schedule=schedule, compute_dtype=dtype,
                                   deterministic=deterministic))
  log = []
  for i, (img, lab) in enumerate(zip(images_nhwc, labels)):
    batch = {"img": jnp.asarray(img, dtype), "gt_semantic_seg": jnp.asarray(lab, jnp.int32)}
    state, logs = step(state, batch)
    lr = float(schedule(i))
    log.append({"iter": i + 1, "lrs": [lr * m for m in lr_mults],
                **{k: float(v) for k, v in logs.items() if k != "lr"}})
  return log, {"params": state.params, "batch_stats": state.batch_stats}


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


def _probs(segmentor: Segmentor, image, scales: Sequence[float], flip: bool) -> np.ndarray:
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
      logits = layers.resize(inference_logits(segmentor, xi), (h, w), segmentor.align_corners)
      probs = (jax.nn.sigmoid(logits) if segmentor.threshold is not None
               else jax.nn.softmax(logits, axis=-1))[0]
      total = total + (probs[:, ::-1] if flipped else probs)
      n += 1
  return np.asarray(total / n)


def inference_segmentor(segmentor: Segmentor, image, scales: Sequence[float] = (1.0,),
                        flip: bool = False, probs: bool = False) -> np.ndarray:
  """Label map (H, W) of an image path or BGR array, at the image's own size; with ``probs``,
  the (H, W, C) class probabilities it is the argmax (or threshold) of. ``scales`` (ratios of
  the test scale) and ``flip``: mmseg's test-time augmentation, probabilities averaged."""
  class_probs = _probs(segmentor, image, scales, flip)
  if probs:
    return class_probs
  if segmentor.threshold is not None:
    return (class_probs[..., 0] > segmentor.threshold).astype(np.int64)
  return np.argmax(class_probs, axis=-1).astype(np.int64)


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
