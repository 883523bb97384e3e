"""Segmentation losses with MMSegmentation's reduction rules.

mmseg reduces with ``weight_reduce_loss``: the element-wise loss is multiplied by an optional
per-pixel weight (OHEM's selection, the valid mask) and averaged over *all* elements, ignored
ones counting as zero, unless ``avg_non_ignore=True``. ``class_weight`` scales each pixel's loss
without renormalising: logits [100, -100] with label 1 give 200 (softmax CE), 100 with
``use_sigmoid=True``, and 40 with ``class_weight=[0.8, 0.2]``.

All functions take logits (..., C) channels-last and integer labels (...).
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from segjax import layers


def at_least_float32(x: jax.Array) -> jax.Array:
  """Losses are computed in float32 (mmseg's ``force_fp32``), or in float64 when given it."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _class_weight(class_weight) -> jax.Array | None:
  """A list, or a ``.npy``/``.txt`` file path as mmseg's ``get_class_weight`` accepts."""
  if class_weight is None:
    return None
  if isinstance(class_weight, str):
    values = np.load(class_weight) if class_weight.endswith(".npy") else np.loadtxt(class_weight)
    return jnp.asarray(values, jnp.float32)
  return jnp.asarray(class_weight, jnp.float32)


REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str, loss: str) -> None:
  if reduction not in REDUCTIONS:
    raise ValueError(f"{loss}: reduction={reduction!r}; expected one of {REDUCTIONS}")


def _reduce(loss: jax.Array, weight: jax.Array | None, avg_factor, reduction: str = "mean") -> jax.Array:
  """mmseg's ``weight_reduce_loss``. ``reduction='none'`` leaves mmseg's loss unreduced, and the
  segmentor's ``_parse_losses`` then takes its mean: the value is the mean over all elements."""
  if weight is not None:
    loss = loss * weight
  if reduction == "sum":
    return loss.sum()
  return loss.mean() if avg_factor is None or reduction == "none" else loss.sum() / jnp.maximum(avg_factor, 1)


def softmax_ce_pixels(logits: jax.Array, labels: jax.Array, ignore_index: int = 255,
                      class_weight=None, nll: jax.Array | None = None) -> jax.Array:
  """Per-pixel softmax cross entropy (``reduction='none'``), 0 at ignored pixels. ``nll``: the
  per-pixel -log softmax(logits)[label] when already computed (``resized_softmax_ce``); the
  logits are then not used."""
  valid = labels != ignore_index
  safe = jnp.where(valid, labels, 0)
  loss = nll if nll is not None else optax.softmax_cross_entropy_with_integer_labels(at_least_float32(logits), safe)
  cw = _class_weight(class_weight)
  if cw is not None:
    loss = loss * cw[safe]
  return jnp.where(valid, loss, 0.0)


def cross_entropy(logits: jax.Array, labels: jax.Array, ignore_index: int = 255,
                  class_weight=None, avg_non_ignore: bool = False, weight=None,
                  use_sigmoid: bool = False, use_mask: bool = False,
                  reduction: str = "mean", nll: jax.Array | None = None) -> jax.Array:
  """mmseg ``CrossEntropyLoss`` (softmax, or per-class sigmoid when ``use_sigmoid``);
  ``avg_non_ignore`` divides by the valid pixels only with ``reduction='mean'``, as mmseg.
  ``nll``: see ``softmax_ce_pixels``."""
  _check_reduction(reduction, "CrossEntropyLoss")
  if use_mask:
    raise ValueError("CrossEntropyLoss(use_mask=True) is mmseg's per-ROI mask loss "
                     "(segjax.losses.mask_cross_entropy); a decode head cannot use it (mmseg "
                     "asserts there that ignore_index is None)")
  if use_sigmoid:
    return binary_cross_entropy(logits, labels, ignore_index, class_weight, avg_non_ignore, weight,
                                reduction)
  loss = softmax_ce_pixels(logits, labels, ignore_index, class_weight, nll)
  avg_factor = (labels != ignore_index).sum() if avg_non_ignore and reduction == "mean" else None
  return _reduce(loss, weight, avg_factor, reduction)


def mask_cross_entropy(pred: jax.Array, target: jax.Array, label: jax.Array,
                       class_weight=None) -> jax.Array:
  """mmseg ``mask_cross_entropy``: for each of N masks (pred (N, H, W, C) logits), binary cross
  entropy of the channel ``label[n]`` against ``target`` (N, H, W) in {0, 1}, averaged."""
  sliced = jnp.take_along_axis(at_least_float32(pred), label.reshape(-1, 1, 1, 1), axis=-1)[..., 0]
  target = target.astype(jnp.float32)
  loss = -(target * jax.nn.log_sigmoid(sliced) + (1 - target) * jax.nn.log_sigmoid(-sliced))
  cw = _class_weight(class_weight)
  return (loss if cw is None else loss * cw).mean()


def binary_cross_entropy(logits, labels, ignore_index=255, class_weight=None,
                         avg_non_ignore=False, weight=None, reduction="mean") -> jax.Array:
  """mmseg ``binary_cross_entropy``: one-hot targets over C channels (or the single channel of a
  binary head), BCE with logits, ``class_weight`` as ``pos_weight``, invalid pixels weighted 0."""
  logits = at_least_float32(logits)
  valid = (labels >= 0) & (labels != ignore_index)
  if logits.shape[-1] == 1:
    target = jnp.where(valid, labels, 0).astype(jnp.float32)[..., None]
  else:
    target = jax.nn.one_hot(jnp.where(valid, labels, -1), logits.shape[-1])
  pos_weight = _class_weight(class_weight)
  log_p, log_not_p = jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
  pw = 1.0 if pos_weight is None else pos_weight
  loss = -(pw * target * log_p + (1 - target) * log_not_p)
  mask = jnp.broadcast_to(valid[..., None], loss.shape).astype(jnp.float32)
  if weight is not None:
    mask = mask * weight[..., None]
  _check_reduction(reduction, "CrossEntropyLoss")
  avg_factor = valid.sum() * loss.shape[-1] if avg_non_ignore and reduction == "mean" else None
  return _reduce(loss, mask, avg_factor, reduction)


def dice_loss(logits, labels, ignore_index=255, class_weight=None, smooth=1.0, exponent=2,
              weight=None, reduction="mean") -> jax.Array:
  """mmseg 0.x ``DiceLoss``: softmax, per image and class 1 - (2 sum(p t m) + s) / (sum(p^e + t^e)
  + s), averaged over classes (weighted by ``class_weight``) and then over images. mmseg's
  DiceLoss drops the pixel ``weight`` (an OHEM sampler's) and its inner per-class mean leaves
  ``reduction`` nothing to reduce: both are accepted without effect, as there."""
  del weight
  _check_reduction(reduction, "DiceLoss")
  probs = jax.nn.softmax(at_least_float32(logits), axis=-1)
  num_classes = probs.shape[-1]
  target = jax.nn.one_hot(jnp.clip(labels, 0, num_classes - 1), num_classes)
  valid = (labels != ignore_index).astype(jnp.float32)[..., None]
  axes = tuple(range(1, probs.ndim - 1))
  num = 2 * jnp.sum(probs * target * valid, axis=axes) + smooth
  den = jnp.sum(probs ** exponent + target ** exponent, axis=axes) + smooth
  per_class = 1 - num / den  # (N, C)
  cw = _class_weight(class_weight)
  if cw is not None:
    per_class = per_class * cw
  if 0 <= ignore_index < num_classes:  # mmseg skips a class whose index equals ignore_index
    per_class = per_class.at[:, ignore_index].set(0.0)
  return (per_class.sum(-1) / num_classes).mean()


def focal_loss(logits, labels, ignore_index=255, class_weight=None, gamma=2.0, alpha=0.5,
               weight=None, use_sigmoid=True, reduction="mean") -> jax.Array:
  """mmseg ``FocalLoss`` (sigmoid): BCE with logits times (alpha t + (1-alpha)(1-t)) |t - p|^gamma
  over one-hot targets, invalid pixels weighted 0, averaged over all elements."""
  if not use_sigmoid:
    raise ValueError("FocalLoss: mmseg supports only use_sigmoid=True")
  _check_reduction(reduction, "FocalLoss")
  logits = at_least_float32(logits)
  valid = labels != ignore_index
  safe = jnp.where(valid, labels, 0)
  num_classes = logits.shape[-1]
  if num_classes == 1:
    target = (1 - safe).astype(jnp.float32)[..., None]  # mmseg flips the single-channel target
  else:
    target = jax.nn.one_hot(safe, num_classes)
  p = jax.nn.sigmoid(logits)
  one_minus_pt = (1 - p) * target + p * (1 - target)
  focal = (alpha * target + (1 - alpha) * (1 - target)) * one_minus_pt ** gamma
  bce = -(target * jax.nn.log_sigmoid(logits) + (1 - target) * jax.nn.log_sigmoid(-logits))
  final = jnp.broadcast_to(valid[..., None], bce.shape).astype(jnp.float32)
  cw = _class_weight(class_weight)
  if cw is not None:
    final = final * cw
  if weight is not None:
    final = final * weight[..., None]
  return _reduce(bce * focal, final, None, reduction)


def _lovasz_grad(fg_sorted: jax.Array) -> jax.Array:
  """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors."""
  gts = fg_sorted.sum()
  intersection = gts - jnp.cumsum(fg_sorted)
  union = gts + jnp.cumsum(1.0 - fg_sorted)
  jaccard = 1.0 - intersection / union
  return jnp.concatenate([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def _lovasz_softmax_flat(probs, labels, valid, classes, class_weight):
  """mmseg's ``lovasz_softmax_flat`` on P pixels: mean over ``classes`` ('present': those with a
  valid pixel; 'all'; or a list) of <sorted |fg - p_c|, lovasz_grad(fg sorted)>, each times its
  class weight. Ignored pixels get error -1 so they sort last and add nothing (static shapes
  instead of mmseg's filtering)."""
  chosen = jnp.arange(probs.shape[-1]) if isinstance(classes, str) else jnp.asarray(classes)

  def per_class(c):
    fg = ((labels == c) & valid).astype(jnp.float32)
    errors = jnp.where(valid, jnp.abs(fg - probs[:, c]), -1.0)
    order = jnp.argsort(-errors)
    loss = jnp.dot(jnp.maximum(errors[order], 0.0), _lovasz_grad(fg[order]))
    return loss, fg.sum() > 0

  losses, present = jax.vmap(per_class)(chosen)
  if class_weight is not None:
    losses = losses * class_weight[chosen]
  if classes == "present":
    return jnp.sum(jnp.where(present, losses, 0.0)) / jnp.maximum(present.sum(), 1)
  return losses.mean()


def _lovasz_hinge_flat(logits, labels, valid):
  """mmseg's ``lovasz_hinge_flat``: binary labels, hinge errors 1 - logit * (2 label - 1) sorted
  descending, <relu(errors), lovasz_grad(labels sorted)>; ignored pixels sort last (error -inf)
  as foreground 0, which leaves the gradient of the valid ones unchanged."""
  fg = jnp.where(valid, labels, 0).astype(jnp.float32)
  errors = jnp.where(valid, 1.0 - logits * (2.0 * fg - 1.0), -jnp.inf)
  order = jnp.argsort(-errors)
  return jnp.dot(jnp.maximum(errors[order], 0.0), _lovasz_grad(fg[order]))


def lovasz_loss(logits, labels, ignore_index=255, class_weight=None, per_image=False,
                loss_type="multi_class", classes="present", weight=None,
                reduction="mean") -> jax.Array:
  """mmseg ``LovaszLoss``: Lovasz-softmax over ``classes`` (``loss_type='multi_class'``) or the
  Lovasz hinge of a one-channel binary head (``'binary'``, where ``classes`` and
  ``class_weight`` are mmseg's placeholders). ``per_image`` reduces the per-image losses by
  ``reduction``; without it mmseg requires ``reduction='none'`` (one loss for the batch). The
  pixel ``weight`` (an OHEM sampler's) is not used, as in mmseg."""
  del weight
  if loss_type not in ("binary", "multi_class"):
    raise ValueError(f"LovaszLoss: loss_type={loss_type!r}; expected 'binary' or 'multi_class'")
  _check_reduction(reduction, "LovaszLoss")
  if not per_image and reduction != "none":
    raise ValueError(f"LovaszLoss: reduction={reduction!r} with per_image=False; mmseg requires "
                     "reduction='none' there (one loss for the whole batch)")
  num_classes = logits.shape[-1]
  if isinstance(classes, str):
    if classes not in ("all", "present"):
      raise ValueError(f"LovaszLoss: classes={classes!r}; expected 'all', 'present' or a list of class indices")
  elif not all(isinstance(c, (int, np.integer)) and 0 <= c < num_classes for c in classes):
    raise ValueError(f"LovaszLoss: classes={list(classes)} must be class indices in [0, {num_classes})")
  valid = labels != ignore_index
  if loss_type == "binary":
    if num_classes != 1:
      raise ValueError(f"LovaszLoss(loss_type='binary') takes a one-channel head's logits "
                       f"(out_channels=1), got {num_classes} channels")
    flat = lambda x, l, v: _lovasz_hinge_flat(at_least_float32(x).reshape(-1), l.reshape(-1), v.reshape(-1))
  else:
    probs = jax.nn.softmax(at_least_float32(logits), axis=-1)
    cw = _class_weight(class_weight)
    flat = lambda p, l, v: _lovasz_softmax_flat(p.reshape(-1, num_classes), l.reshape(-1),
                                                v.reshape(-1), classes, cw)
    logits = probs
  if per_image:
    per = jax.vmap(flat)(logits, labels, valid)
    return per.sum() if reduction == "sum" else per.mean()
  return flat(logits, labels, valid)


def tversky_loss(logits, labels, ignore_index=255, class_weight=None, smooth=1.0, alpha=0.3,
                 beta=0.7, gamma=1.0, weight=None) -> jax.Array:
  """mmseg ``TverskyLoss``: per image and class (1 - (TP + s) / (TP + alpha FP + beta FN + s))
  ** gamma over valid pixels, averaged over images, summed over classes / num_classes."""
  probs = jax.nn.softmax(at_least_float32(logits), axis=-1)
  num_classes = probs.shape[-1]
  valid = (labels != ignore_index).astype(jnp.float32)[..., None]
  target = jax.nn.one_hot(jnp.clip(labels, 0, num_classes - 1), num_classes)
  axes = tuple(range(1, probs.ndim - 1))
  tp = (probs * target * valid).sum(axes)
  fp = (probs * (1 - target) * valid).sum(axes)
  fn = ((1 - probs) * target * valid).sum(axes)
  per_class = ((1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)) ** gamma).mean(0)
  cw = _class_weight(class_weight)
  if cw is not None:
    per_class = per_class * cw
  if 0 <= ignore_index < num_classes:
    per_class = per_class.at[ignore_index].set(0.0)
  return per_class.sum() / num_classes


def accuracy(logits: jax.Array, labels: jax.Array, ignore_index: int | None = 255, topk=1,
             thresh: float | None = None):
  """mmseg ``accuracy`` in percent over non-ignored pixels (every pixel if ``ignore_index`` is
  None): a pixel counts when its label is among the ``topk`` highest logits (channels last), and
  with ``thresh`` only where that logit exceeds it. ``topk`` an int gives one value, a tuple one
  per k. mmseg adds float32's eps to both counts (all ignored: 100)."""
  ks = (topk,) if isinstance(topk, int) else tuple(topk)
  if max(ks) > logits.shape[-1]:
    raise ValueError(f"accuracy: topk {max(ks)} exceeds the {logits.shape[-1]} classes")
  values, ranked = jax.lax.top_k(logits, max(ks))
  correct = ranked == labels[..., None]
  if thresh is not None:
    correct = correct & (values > thresh)
  out = tuple(_accuracy_percent(correct[..., :k].any(-1), labels, ignore_index) for k in ks)
  return out[0] if isinstance(topk, int) else out


def _accuracy_percent(correct: jax.Array, labels: jax.Array, ignore_index: int | None) -> jax.Array:
  """100 x correct pixels / valid pixels, both plus float32's eps as mmseg."""
  valid = jnp.ones(labels.shape, bool) if ignore_index is None else labels != ignore_index
  eps = float(np.finfo(np.float32).eps)
  return 100.0 * ((correct & valid).sum() + eps) / (valid.sum() + eps)


# Bytes of full-size logits that resized_softmax_ce makes at a time.
CE_BLOCK_BYTES = 32 << 20


def resized_softmax_ce(seg_logit: jax.Array, labels: jax.Array, ignore_index: int = 255,
                       align_corners: bool = False) -> tuple[jax.Array, jax.Array]:
  """``(nll, top1)`` of the logits resized to the labels' size (``layers.resize``): per-pixel
  -log softmax at the label (at the class 0 where it is ``ignore_index``) and the top-1 class.

  The full-size logits are made a block of rows at a time (the resize along W, the log-softmax
  and the top-1 of each block; the backward pass recomputes them): at ADE20K's 150 classes,
  batch 2, 512x512 the logits and their gradient are 300 MiB each, the largest buffers of
  SegFormer-B0's train step (experiments/bench/README.md). The values are the unblocked ones.
  """
  seg_logit = at_least_float32(seg_logit)
  n, (h, w), classes = seg_logit.shape[0], labels.shape[1:3], seg_logit.shape[-1]
  rows = layers.resize_axis(seg_logit, 1, h, align_corners)
  safe = jnp.where(labels != ignore_index, labels, 0)
  row_bytes = n * w * classes * rows.dtype.itemsize
  blocks = max(1, -(-h * row_bytes // CE_BLOCK_BYTES))

  def maps(block_rows, block_labels):
    logits = layers.resize_axis(block_rows, 2, w, align_corners)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, block_labels)
    return nll, jax.lax.top_k(logits, 1)[1][..., 0]

  if blocks == 1:  # small enough whole: no loop to compile, nothing recomputed
    return maps(rows, safe)
  block = -(-h // blocks)
  pad = blocks * block - h
  rows = jnp.pad(rows, ((0, 0), (0, pad), (0, 0), (0, 0)))
  safe = jnp.pad(safe, ((0, 0), (0, pad), (0, 0)))

  @jax.checkpoint
  def block_maps(i):
    return maps(jax.lax.dynamic_slice_in_dim(rows, i * block, block, axis=1),
                jax.lax.dynamic_slice_in_dim(safe, i * block, block, axis=1))

  nll, top1 = jax.lax.map(block_maps, jnp.arange(blocks))
  from_blocks = lambda x: jnp.moveaxis(x, 0, 1).reshape(n, blocks * block, w)[:, :h]
  return from_blocks(nll), from_blocks(top1)


def ohem_weight(logits, labels, ignore_index=255, thresh=None, min_kept=100000,
                loss_terms=None) -> jax.Array:
  """mmseg ``OHEMPixelSampler``: 0/1 weights selecting hard pixels.

  With ``thresh``: valid pixels whose probability of the true class is below max(thresh, the
  (min_kept x batch)-th smallest such probability). Without: the min_kept x batch valid pixels
  of largest loss, the loss being the sum of the head's ``loss_terms`` per pixel
  (``reduction='none'``, loss_weight included; softmax cross entropy terms only)."""
  valid = labels != ignore_index
  batch_kept = min_kept * labels.shape[0]
  logits = at_least_float32(jax.lax.stop_gradient(logits))
  if thresh is None:
    losses = jnp.zeros(labels.shape, jnp.float32)
    for term in loss_terms or [{"type": "CrossEntropyLoss"}]:
      if term.get("type") != "CrossEntropyLoss" or term.get("use_sigmoid"):
        raise ValueError("OHEMPixelSampler without thresh ranks pixels by loss; segjax supports "
                         f"softmax CrossEntropyLoss terms for that, got {term}")
      losses += term.get("loss_weight", 1.0) * softmax_ce_pixels(
          logits, labels, ignore_index, term.get("class_weight"))
    flat_loss = jnp.where(valid, losses, -jnp.inf).reshape(-1)
    k = min(batch_kept, flat_loss.shape[0])
    _, top = jax.lax.top_k(flat_loss, k)
    chosen = jnp.zeros(flat_loss.shape, bool).at[top].set(True).reshape(labels.shape)
    return (chosen & valid).astype(jnp.float32)
  probs = jax.nn.softmax(logits, axis=-1)
  prob = jnp.take_along_axis(probs, jnp.where(valid, labels, 0)[..., None], -1)[..., 0]
  flat = jnp.where(valid, prob, jnp.inf).reshape(-1)
  n_valid = valid.sum()
  sorted_prob = jnp.sort(flat)
  kth = sorted_prob[jnp.clip(jnp.minimum(batch_kept, n_valid - 1), 0, flat.shape[0] - 1)]
  threshold = jnp.maximum(jnp.where(n_valid > 0, kth, 0.0), thresh)
  return (valid & (prob < threshold)).astype(jnp.float32)


LOSSES = {"CrossEntropyLoss": cross_entropy, "DiceLoss": dice_loss, "FocalLoss": focal_loss,
          "LovaszLoss": lovasz_loss, "TverskyLoss": tversky_loss}
DEFAULT_NAMES = {"CrossEntropyLoss": "loss_ce", "DiceLoss": "loss_dice", "FocalLoss": "loss_focal",
                 "LovaszLoss": "loss_lovasz", "TverskyLoss": "loss_tversky"}
# mmseg's DiceLoss and TverskyLoss ignore their own ignore_index (default 255), not the head's.
_OWN_IGNORE_INDEX = {"DiceLoss", "TverskyLoss"}


def _loss_terms(loss_cfg: Any) -> list[Mapping]:
  if not loss_cfg:
    return [{"type": "CrossEntropyLoss"}]
  return [dict(t) for t in (loss_cfg if isinstance(loss_cfg, (list, tuple)) else [loss_cfg])]


def decode_losses(seg_logit: jax.Array, labels: jax.Array, loss_decode: Any, ignore_index: int = 255,
                  sampler: Mapping | None = None, align_corners: bool = False) -> dict:
  """mmseg ``BaseDecodeHead.losses``: resize logits to the label size, optional OHEM pixel
  weights, sum each ``loss_decode`` term under its ``loss_name`` (terms sharing a name add up),
  and ``acc_seg``. Keys are unprefixed (``loss_ce``); the segmentor adds ``decode.``/``aux.``."""
  terms = _loss_terms(loss_decode)
  logits, weight, precomputed = None, None, {}
  if not sampler and all(_is_softmax_ce(t) for t in terms):
    # Only per-pixel maps are needed: the full-size logits are never made whole.
    nll, top1 = resized_softmax_ce(seg_logit, labels, ignore_index, bool(align_corners))
    precomputed = {"nll": nll}
  else:
    logits = layers.resize(seg_logit, labels.shape[1:3], bool(align_corners))
  if sampler:
    sampler = dict(sampler)
    if sampler.pop("type") != "OHEMPixelSampler":
      raise ValueError("sampler.type must be 'OHEMPixelSampler'")
    sampler.pop("context", None)  # mmseg passes the head itself; segjax gives the loss terms
    weight = ohem_weight(logits, labels, ignore_index, **sampler, loss_terms=terms)
  out = {}
  for term in terms:
    kind = term.pop("type")
    if kind not in LOSSES:
      raise ValueError(f"loss_decode.type={kind!r} is not available; expected one of {sorted(LOSSES)}")
    name = term.pop("loss_name", DEFAULT_NAMES[kind])
    loss_weight = term.pop("loss_weight", 1.0)
    own_ignore = term.pop("ignore_index", 255)
    term_ignore = own_ignore if kind in _OWN_IGNORE_INDEX else ignore_index
    try:
      value = LOSSES[kind](logits, labels, ignore_index=term_ignore, weight=weight, **term, **precomputed)
    except TypeError as e:  # an argument mmseg's loss class does not take either
      raise ValueError(f"loss_decode {kind}: {e}") from None
    out[name] = out.get(name, 0.0) + loss_weight * value
  out["acc_seg"] = (accuracy(logits, labels, ignore_index) if logits is not None
                    else _accuracy_percent(top1 == labels, labels, ignore_index))
  return out


def _is_softmax_ce(term: Mapping) -> bool:
  return term.get("type") == "CrossEntropyLoss" and not term.get("use_sigmoid") and not term.get("use_mask")


def add_prefix(losses: Mapping, prefix: str) -> dict:
  """mmseg ``add_prefix``: ``loss_ce`` -> ``decode.loss_ce``."""
  return {f"{prefix}.{k}": v for k, v in losses.items()}


def parse_losses(losses: Mapping) -> tuple[jax.Array, dict]:
  """mmseg ``BaseSegmentor._parse_losses``: the total is the sum of every key containing
  ``loss``; the log holds every term and ``loss``."""
  total = sum(v for k, v in losses.items() if "loss" in k)
  return total, {**losses, "loss": total}
