"""mmseg's evaluation: per-image ``intersect_and_union`` areas and ``eval_metrics`` (aAcc, IoU,
Acc, Dice, Fscore, Precision, Recall), plus the jit-able area computation used during training.

Areas are summed over images (and, during training, over devices and hosts by the jit over the
global batch) before dividing, exactly as mmseg's ``total_area_to_metrics`` does, so a sharded
evaluation equals a single-device one.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

METRICS = ("mIoU", "mDice", "mFscore")


def _histc(values: np.ndarray, num_classes: int) -> np.ndarray:
  """``torch.histc(bins=num_classes, min=0, max=num_classes-1)`` on integer values."""
  values = values[(values >= 0) & (values < num_classes)]
  return np.bincount(values.astype(np.int64), minlength=num_classes).astype(np.float64)


def intersect_and_union(pred_label: np.ndarray, label: np.ndarray, num_classes: int,
                        ignore_index: int, label_map: Mapping[int, int] | None = None,
                        reduce_zero_label: bool = False):
  """Per-class (area_intersect, area_union, area_pred_label, area_label) of one image."""
  pred_label = np.asarray(pred_label)
  label = np.asarray(label).astype(np.int64)
  if label_map:
    original = label.copy()
    for old_id, new_id in label_map.items():
      label[original == int(old_id)] = new_id
  if reduce_zero_label:
    label[label == 0] = 255
    label = label - 1
    label[label == 254] = 255
  mask = label != ignore_index
  pred_label, label = pred_label[mask], label[mask]
  area_intersect = _histc(pred_label[pred_label == label], num_classes)
  area_pred = _histc(pred_label, num_classes)
  area_label = _histc(label, num_classes)
  return area_intersect, area_pred + area_label - area_intersect, area_pred, area_label


def f_score(precision, recall, beta=1):
  return (1 + beta**2) * (precision * recall) / ((beta**2 * precision) + recall)


def total_area_to_metrics(total_area_intersect, total_area_union, total_area_pred_label,
                          total_area_label, metrics: Sequence[str] = ("mIoU",),
                          nan_to_num=None, beta=1) -> OrderedDict:
  """mmseg ``total_area_to_metrics``: NaN for classes absent from labels (and preds) unless
  ``nan_to_num``."""
  if isinstance(metrics, str):
    metrics = [metrics]
  unknown = set(metrics) - set(METRICS)
  if unknown:
    raise KeyError(f"metrics {sorted(unknown)} not supported; expected a subset of {METRICS}")
  inter, union, pred, lab = (np.asarray(a, np.float64) for a in (
      total_area_intersect, total_area_union, total_area_pred_label, total_area_label))
  ret = OrderedDict(aAcc=inter.sum() / lab.sum())
  with np.errstate(divide="ignore", invalid="ignore"):
    for metric in metrics:
      if metric == "mIoU":
        ret["IoU"] = inter / union
        ret["Acc"] = inter / lab
      elif metric == "mDice":
        ret["Dice"] = 2 * inter / (pred + lab)
        ret["Acc"] = inter / lab
      elif metric == "mFscore":
        precision, recall = inter / pred, inter / lab
        ret["Fscore"] = np.array([f_score(p, r, beta) for p, r in zip(precision, recall)])
        ret["Precision"] = precision
        ret["Recall"] = recall
  if nan_to_num is not None:
    ret = OrderedDict((k, np.nan_to_num(v, nan=nan_to_num)) for k, v in ret.items())
  return ret


def eval_metrics(results, gt_seg_maps, num_classes: int, ignore_index: int,
                 metrics: Sequence[str] = ("mIoU",), nan_to_num=None, label_map=None,
                 reduce_zero_label: bool = False, beta=1) -> OrderedDict:
  """mmseg ``eval_metrics`` over lists of predicted and ground-truth label maps."""
  totals = np.zeros((4, num_classes), np.float64)
  for pred, gt in zip(results, gt_seg_maps):
    totals += np.stack(intersect_and_union(pred, gt, num_classes, ignore_index, label_map or {},
                                           reduce_zero_label))
  return total_area_to_metrics(*totals, metrics=metrics, nan_to_num=nan_to_num, beta=beta)


def batch_areas(pred: jax.Array, label: jax.Array, num_classes: int, ignore_index: int) -> jax.Array:
  """jit-able (4, num_classes) [intersect, union, pred, label] areas summed over a batch.

  ``label`` is already in training ids (reduce_zero_label applied by the pipeline). Out-of-range
  labels other than ``ignore_index`` are dropped like ``torch.histc`` drops them.
  """
  valid = (label != ignore_index) & (label >= 0) & (label < num_classes)
  pred = jnp.where(valid, pred, num_classes).reshape(-1)
  lab = jnp.where(valid, label, num_classes).reshape(-1)
  count = lambda v: jnp.bincount(v, length=num_classes + 1)[:num_classes]
  area_pred, area_label = count(pred), count(lab)
  area_inter = count(jnp.where(pred == lab, lab, num_classes))
  return jnp.stack([area_inter, area_pred + area_label - area_inter, area_pred, area_label])


def format_table(metrics: Mapping[str, np.ndarray], class_names: Sequence[str]) -> str:
  """mmseg's per-class results table (values in percent)."""
  keys = [k for k in ("IoU", "Acc", "Dice", "Fscore", "Precision", "Recall") if k in metrics]
  width = max(len("Class"), *(len(n) for n in class_names))
  lines = ["| " + "Class".ljust(width) + " | " + " | ".join(k.rjust(9) for k in keys) + " |"]
  lines.append("|" + "-" * (width + 2) + "|" + "|".join("-" * 11 for _ in keys) + "|")
  for i, name in enumerate(class_names):
    vals = " | ".join(f"{100 * metrics[k][i]:9.2f}" for k in keys)
    lines.append(f"| {name.ljust(width)} | {vals} |")
  return "\n".join(lines)


def summary(metrics: Mapping[str, np.ndarray]) -> dict[str, float]:
  """aAcc and the class means (mIoU, mAcc, ...) that mmseg logs, ignoring NaN classes."""
  out = {"aAcc": float(metrics["aAcc"])}
  for k, v in metrics.items():
    if k != "aAcc":
      out["m" + k] = float(np.nanmean(v)) if np.any(~np.isnan(v)) else float("nan")
  return out
