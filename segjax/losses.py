"""Segmentation losses with MMSegmentation's reduction rules.

mmseg's ``CrossEntropyLoss`` with ``reduction='mean'`` averages the per-pixel loss over *all*
pixels, ignored ones counting as zero (``avg_non_ignore=False``, the default), and ``class_weight``
scales each pixel's loss without renormalising: logits [100, -100] with label 1 give 200, and with
``class_weight=[0.8, 0.2]`` give 40.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from segjax import layers


def cross_entropy(logits: jax.Array, labels: jax.Array, ignore_index: int = 255,
                  class_weight: Sequence[float] | None = None,
                  avg_non_ignore: bool = False) -> jax.Array:
  """``F.cross_entropy(weight=class_weight, reduction='none', ignore_index)`` then mmseg's mean.

  logits: (..., C); labels: (...) integer.
  """
  valid = labels != ignore_index
  safe = jnp.where(valid, labels, 0)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)
  if class_weight is not None:
    loss = loss * jnp.asarray(class_weight, jnp.float32)[safe]
  loss = jnp.where(valid, loss, 0.0)
  if avg_non_ignore:
    return loss.sum() / jnp.maximum(valid.sum(), 1)
  return loss.mean()


def accuracy(logits: jax.Array, labels: jax.Array, ignore_index: int = 255) -> jax.Array:
  """mmseg ``accuracy`` (top-1, percent) over non-ignored pixels."""
  valid = labels != ignore_index
  correct = (jnp.argmax(logits, -1) == labels) & valid
  return 100.0 * correct.sum() / jnp.maximum(valid.sum(), 1)


LOSSES = {"CrossEntropyLoss": cross_entropy}


def _loss_terms(loss_cfg: Any) -> list[Mapping]:
  return list(loss_cfg) if isinstance(loss_cfg, (list, tuple)) else [loss_cfg]


def head_losses(logits: jax.Array, labels: jax.Array, head_cfg: Mapping, prefix: str) -> dict:
  """mmseg ``BaseDecodeHead.losses``: resize logits to the label size, sum each ``loss_decode``
  term (keyed ``{prefix}.{loss_name}``) and report ``{prefix}.acc_seg``."""
  logits = layers.resize(logits, labels.shape[1:3], bool(head_cfg.get("align_corners", False)))
  ignore_index = head_cfg.get("ignore_index", 255)
  out = {}
  for term in _loss_terms(head_cfg.get("loss_decode") or {"type": "CrossEntropyLoss"}):
    term = dict(term)
    kind = term.pop("type")
    if kind not in LOSSES:
      raise ValueError(f"loss_decode.type={kind!r} is not available; expected one of {sorted(LOSSES)}")
    name = term.pop("loss_name", "loss_ce")
    weight = term.pop("loss_weight", 1.0)
    if term.pop("use_sigmoid", False):
      raise NotImplementedError("CrossEntropyLoss(use_sigmoid=True) is not implemented yet")
    value = weight * LOSSES[kind](logits, labels, ignore_index=ignore_index, **term)
    key = f"{prefix}.{name}"
    out[key] = out.get(key, 0.0) + value
  out[f"{prefix}.acc_seg"] = accuracy(logits, labels, ignore_index)
  return out


def segmentor_losses(outputs: Mapping, labels: jax.Array, model_cfg: Mapping) -> tuple[jax.Array, dict]:
  """Total loss (sum of every ``*loss*`` term, as mmseg's ``_parse_losses``) and the log dict."""
  logs = head_losses(outputs["decode"], labels, model_cfg["decode_head"], "decode")
  aux_cfg = model_cfg.get("auxiliary_head")
  if aux_cfg:
    cfgs = list(aux_cfg) if isinstance(aux_cfg, (list, tuple)) else [aux_cfg]
    for i, (logits, cfg) in enumerate(zip(outputs["aux"], cfgs)):
      logs.update(head_losses(logits, labels, cfg, f"aux_{i}" if len(cfgs) > 1 else "aux"))
  total = sum(v for k, v in logs.items() if "loss" in k)
  logs["loss"] = total
  return total, logs
