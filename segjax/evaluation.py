"""mmseg's evaluation: per-image ``intersect_and_union`` areas and ``eval_metrics`` (aAcc, IoU,
Acc, Dice, Fscore, Precision, Recall), the jit-able prediction and area computation that training,
``main.py --mode=eval`` and tools/test.py share, and mmseg's result formats.

Evaluation is progressive, as mmseg's ``pre_eval``: each image's areas are added to per-class
totals (``AreaTotals``, O(num_classes) whatever the number of images) as soon as it is predicted,
the totals are summed over hosts, and only then divided (``total_area_to_metrics``), so a sharded
evaluation equals a single-device one. Predictions are scored against the label file at the
image's original size (mmseg's ``get_gt_seg_map_by_idx``), whatever the val pipeline resizes.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
from collections import OrderedDict
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from segjax.layers import resize
from segjax.models.segmentors.inference import binary_threshold, inference_logits

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


def metric_names(metric) -> list[str]:
  """``evaluation.metric`` / ``--eval``: one of mIoU, mDice, mFscore or a list of them."""
  names = [metric] if isinstance(metric, str) else list(metric)
  unknown = [m for m in names if m not in METRICS]
  if unknown or not names:
    raise KeyError(f"metric {unknown or names} not supported; expected one or a list of {METRICS}")
  return names


class AreaTotals:
  """Per-class [intersect, union, pred, label] areas summed image by image: mmseg's ``pre_eval``
  results added up as they come instead of kept per image, so the state is (groups, 4,
  num_classes) whatever the number of images. ``groups``: one per dataset of a ConcatDataset
  (mmseg's ``separate_eval``), else one."""

  def __init__(self, num_classes: int, groups: int = 1):
    self.areas = np.zeros((groups, 4, num_classes), np.float64)
    self.images = np.zeros(groups, np.int64)

  def add(self, areas, group: int = 0) -> None:
    """One image's (4, num_classes) areas."""
    self.areas[group] += np.asarray(areas, np.float64)
    self.images[group] += 1

  def sum_over_processes(self) -> None:
    """Every host's totals summed (each host evaluated its share of the images)."""
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      self.areas = np.asarray(multihost_utils.process_allgather(self.areas)).sum(0)
      self.images = np.asarray(multihost_utils.process_allgather(self.images)).sum(0)

  def metrics(self, metrics: Sequence[str], group: int | None = None) -> OrderedDict:
    """``total_area_to_metrics`` of one group, or of all groups merged (``group=None``)."""
    areas = self.areas.sum(0) if group is None else self.areas[group]
    return total_area_to_metrics(*areas, metrics=metrics)


def eval_results(metrics: Mapping[str, np.ndarray], class_names: Sequence[str]) -> OrderedDict:
  """mmseg ``CustomDataset.evaluate``'s returned dict: aAcc, then the class mean of each metric
  (mIoU, mAcc, mDice, ...), then per class ``IoU.<name>``, ``Acc.<name>``, ...; every value a
  fraction rounded as mmseg rounds it (to 0.01 percent)."""
  out = OrderedDict()
  rounded = lambda v: float(np.round(v * 100, 2) / 100)
  with np.errstate(all="ignore"):
    for key, value in metrics.items():
      mean = np.nanmean(value) if np.any(~np.isnan(value)) else np.nan
      out[key if key == "aAcc" else "m" + key] = rounded(mean)
    for key, value in metrics.items():
      if key != "aAcc":
        out.update({f"{key}.{name}": rounded(v) for name, v in zip(class_names, value)})
  return out


def dataset_results(totals: AreaTotals, dataset, metrics: Sequence[str]
                    ) -> tuple[OrderedDict, list[tuple[str, OrderedDict]]]:
  """(mmseg's eval results, [(title, per-class metrics)] for the tables) of ``dataset``. A
  ConcatDataset with ``separate_eval`` (mmseg's default) is evaluated per dataset, keys prefixed
  by the dataset's position (``0_mIoU``, ``1_mIoU``, ...) as mmseg's ``ConcatDataset.evaluate``;
  otherwise all images together."""
  parts = getattr(dataset, "datasets", None)
  if parts is not None and getattr(dataset, "separate_eval", True) and totals.areas.shape[0] > 1:
    results, tables = OrderedDict(), []
    for k, part in enumerate(parts):
      metrics_k = totals.metrics(metrics, k)
      results.update((f"{k}_{key}", v) for key, v in eval_results(metrics_k, dataset.CLASSES).items())
      tables.append((f"{k}: {part.name} ({totals.images[k]} images)", metrics_k))
    return results, tables
  merged = totals.metrics(metrics)
  return eval_results(merged, dataset.CLASSES), [(dataset.name, merged)]


def report(results: Mapping[str, float], tables, class_names: Sequence[str]) -> str:
  """The per-class tables and the summary line (percent) that training, ``--mode=eval`` and
  tools/test.py print."""
  lines = []
  for title, metrics in tables:
    lines += [title, format_table(metrics, class_names)]
  lines.append("  ".join(f"{k} {100 * v:.2f}" for k, v in results.items() if "." not in k))
  return "\n".join(lines)


# ---------------------------------------------------------------- save_best (mmcv's EvalHook)

# mmcv EvalHook's rule inference: a key is compared by 'greater' if it is (or contains, case
# insensitively) one of these, else by 'less' for 'loss'.
GREATER_KEYS = ("acc", "top", "AR@", "auc", "precision", "mAP", "mDice", "mIoU", "mAcc", "aAcc")
LESS_KEYS = ("loss",)


def best_rule(key: str, rule: str | None = None) -> str:
  """mmcv ``EvalHook._init_rule``: 'greater' or 'less' for metric ``key``."""
  if rule is not None:
    if rule not in ("greater", "less"):
      raise ValueError(f"evaluation.rule={rule!r}; expected 'greater', 'less' or None")
    return rule
  lower = key.lower()
  greater, less = [k.lower() for k in GREATER_KEYS], [k.lower() for k in LESS_KEYS]
  if lower in greater:
    return "greater"
  if lower in less:
    return "less"
  if any(k in lower for k in greater):
    return "greater"
  if any(k in lower for k in less):
    return "less"
  raise ValueError(f"evaluation.save_best={key!r}: cannot infer whether greater or less is better "
                   "(mmcv's rule); give evaluation.rule='greater' or 'less'")


class BestCheckpoint:
  """mmcv EvalHook's ``save_best``: after each evaluation, when the ``save_best`` result beats the
  best so far (strictly, by ``rule``), the weights (``params``, ``batch_stats``) are written to
  ``workdir/best_<key>_iter_<step>`` (readable by ``load_from``, tools/test.py and the API) and the
  previous best folder is removed. ``'auto'`` takes the first key of the results, as mmcv does
  (mmseg's results start with aAcc). The best score survives a resume in
  ``workdir/best_checkpoint.json`` (mmcv keeps it in the checkpoint's meta)."""

  def __init__(self, workdir: str, save_best: str, rule: str | None = None):
    self.workdir, self.key, self.rule = workdir, save_best, rule
    if save_best != "auto":
      self.rule = best_rule(save_best, rule)
    self.record_path = os.path.join(workdir, "best_checkpoint.json")
    self.record = {}
    if os.path.exists(self.record_path):
      with open(self.record_path) as f:
        self.record = json.load(f)

  def update(self, step: int, results: Mapping[str, float], variables) -> str | None:
    """Save ``variables`` if ``results`` is the best so far; returns the folder written, if any."""
    if self.key == "auto":
      self.key = next(iter(results))
      self.rule = best_rule(self.key, self.rule)
    if self.key not in results:
      raise KeyError(f"evaluation.save_best={self.key!r} is not among the evaluation results "
                     f"{[k for k in results if '.' not in k]} (nor the per-class keys)")
    score = float(results[self.key])
    best = self.record.get("score", -np.inf if self.rule == "greater" else np.inf)
    if not (score > best if self.rule == "greater" else score < best):
      return None
    import orbax.checkpoint as ocp
    folder = os.path.abspath(os.path.join(self.workdir, f"best_{self.key}_iter_{step}"))
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(folder, "state"), dict(variables), force=True)
    checkpointer.wait_until_finished()
    previous = self.record.get("path")
    self.record = {"key": self.key, "rule": self.rule, "score": score, "step": int(step), "path": folder}
    if jax.process_index() == 0:
      if previous and previous != folder and os.path.isdir(previous):
        shutil.rmtree(previous)
      with open(self.record_path + ".tmp", "w") as f:
        json.dump(self.record, f, indent=1)
      os.replace(self.record_path + ".tmp", self.record_path)
    return folder


# ------------------------------------------------------------- prediction and progressive scoring

def predict_and_score(variables, img, label, *, augs, model, test_cfg, threshold,
                      align_corners: bool, num_classes: int, ignore_index: int):
  """mmseg's ``simple_test`` / ``aug_test`` on a batch, scored: for each augmentation of
  ``MultiScaleFlipAug`` (``img`` is one (B, h, w, C) array or a tuple of them, ``augs`` gives
  each one's (h, w) before padding and its flip direction or None), test-mode logits with the
  padding cut off, resized to the label's (original) size, softmax (sigmoid for a one-channel
  head), flipped back; the mean over augmentations gives the label map (argmax, or > threshold).

  Returns (pred (B, H, W) int32, per-image areas (B, 4, num_classes))."""
  images = img if isinstance(img, tuple) else (img,)
  size = label.shape[1:3]
  total = 0.0
  for x, ((h, w), flip) in zip(images, augs):
    logits = inference_logits(model, variables, x, test_cfg)[:, :h, :w]
    if logits.shape[1:3] != size:
      logits = resize(logits, size, align_corners)
    probs = jax.nn.sigmoid(logits) if threshold is not None else jax.nn.softmax(logits, axis=-1)
    if flip == "horizontal":
      probs = probs[:, :, ::-1]
    elif flip == "vertical":
      probs = probs[:, ::-1]
    total = total + probs
  probs = total / len(images)
  if threshold is not None:
    pred = (probs[..., 0] > threshold).astype(jnp.int32)
  else:
    pred = jnp.argmax(probs, axis=-1).astype(jnp.int32)
  areas = jax.vmap(lambda p, l: batch_areas(p[None], l[None], num_classes, ignore_index))(pred, label)
  return pred, areas


def jit_predict_and_score(model, model_cfg: Mapping, num_classes: int, ignore_index: int):
  """``predict_and_score`` jitted (``augs`` static) with segjax's inference compiler options."""
  from segjax import xla_flags
  from segjax.models.segmentors.encoder_decoder import final_decode_head
  head = final_decode_head(model_cfg)
  return jax.jit(functools.partial(
      predict_and_score, model=model, test_cfg=model_cfg.get("test_cfg"),
      threshold=binary_threshold(head), align_corners=bool(head.get("align_corners", False)),
      num_classes=num_classes, ignore_index=ignore_index),
      static_argnames=("augs",), compiler_options=xla_flags.memory_options())


def dataset_group(dataset, index: int) -> int:
  """Which dataset of a ConcatDataset image ``index`` belongs to (0 for other datasets)."""
  offsets = getattr(dataset, "offsets", None)
  return 0 if offsets is None else int(np.searchsorted(offsets, index, side="right")) - 1


def evaluate_dataset(predict_fn, variables, dataset, host_batch_size: int, on_prediction=None,
                     labels: bool = True, progress: bool = True, desc: str = "evaluation") -> AreaTotals:
  """Predict and score this host's share of ``dataset`` (every ``process_count``-th image) in
  batches of ``host_batch_size`` split over this host's devices, adding each image's areas to the
  totals as it comes, then sum the totals over hosts. ``on_prediction(index, pred)`` receives
  each label map (numpy, original size) for writing it out; nothing is kept. ``labels=False``
  predicts a split without label files (areas stay zero). A tqdm bar on process 0 counts images."""
  from tqdm import tqdm
  from segjax import sharding
  from segjax.data import loader
  mesh = sharding.make_mesh(local=True)
  parts = getattr(dataset, "datasets", None)
  totals = AreaTotals(dataset.num_classes, len(parts) if parts is not None else 1)
  share = len(range(jax.process_index(), len(dataset), jax.process_count()))
  with tqdm(total=share, desc=desc, unit="img", disable=not progress or jax.process_index() != 0,
            dynamic_ncols=True) as bar:
    for batch in loader.eval_batches(dataset, host_batch_size, labels=labels):
      indices, augs = batch.pop("index"), batch.pop("augs")
      put = lambda a: jax.device_put(a, sharding.batch_sharding(mesh))
      img = tuple(map(put, batch["img"])) if isinstance(batch["img"], tuple) else put(batch["img"])
      pred, areas = predict_fn(variables, img, put(batch["gt_semantic_seg"]), augs=augs)
      areas = np.asarray(jax.device_get(areas))
      pred = np.asarray(jax.device_get(pred)) if on_prediction is not None else None
      for k, index in enumerate(indices):
        if index < 0:  # filler of a short batch
          continue
        totals.add(areas[k], dataset_group(dataset, int(index)))
        if on_prediction is not None:
          on_prediction(int(index), pred[k])
      bar.update(int((indices >= 0).sum()))
  totals.sum_over_processes()
  return totals


# ------------------------------------------------------------------- result formats (tools/test.py)

def format_result(dataset, index: int, pred: np.ndarray, prefix: str) -> str:
  """Write image ``index``'s label map as mmseg's ``format_results`` does, into ``prefix`` (a
  ConcatDataset's k-th dataset into ``prefix/k``, as mmseg), named after the image; returns the
  file. ADE20K: labels + 1 (the benchmark's 1..150, 0 = other); Cityscapes and the sets tested
  with its classes: train ids back to label ids, a palette PNG (the evaluation server's and the
  ``cityscapes`` metric's input); other datasets: the label map as a uint8 PNG."""
  from PIL import Image
  from segjax.data.cityscapes_ids import TRAIN_ID_TO_LABEL_ID
  from segjax.data.datasets import ADE20KDataset, CityscapesDataset
  if getattr(dataset, "offsets", None) is not None:
    prefix = os.path.join(prefix, str(dataset_group(dataset, index)))
  ds, j = dataset.locate(index)
  stem = os.path.splitext(os.path.basename(ds.img_infos[j]["filename"]))[0]
  path = os.path.join(prefix, stem + ".png")
  os.makedirs(prefix, exist_ok=True)
  if isinstance(ds, ADE20KDataset):
    image = Image.fromarray((pred + 1).astype(np.uint8))
  elif isinstance(ds, CityscapesDataset):
    label_ids = np.zeros(pred.shape, np.uint8)
    palette = np.zeros((256, 3), np.uint8)
    for train_id, label_id in TRAIN_ID_TO_LABEL_ID.items():
      label_ids[pred == train_id] = label_id
      palette[label_id] = CityscapesDataset.PALETTE[train_id]
    image = Image.fromarray(label_ids).convert("P")
    image.putpalette(palette.reshape(-1).tolist())
  else:
    image = Image.fromarray(pred.astype(np.uint8))
  image.save(path)
  return path


# Cityscapes' label table (cityscapesscripts.helpers.labels): label id -> (name, category). The 19
# ids with a train id are evaluated; the others are ignoreInEval (never a false positive's source).
CITYSCAPES_LABELS = {
    0: ("unlabeled", "void"), 1: ("ego vehicle", "void"), 2: ("rectification border", "void"),
    3: ("out of roi", "void"), 4: ("static", "void"), 5: ("dynamic", "void"), 6: ("ground", "void"),
    7: ("road", "flat"), 8: ("sidewalk", "flat"), 9: ("parking", "flat"), 10: ("rail track", "flat"),
    11: ("building", "construction"), 12: ("wall", "construction"), 13: ("fence", "construction"),
    14: ("guard rail", "construction"), 15: ("bridge", "construction"), 16: ("tunnel", "construction"),
    17: ("pole", "object"), 18: ("polegroup", "object"), 19: ("traffic light", "object"),
    20: ("traffic sign", "object"), 21: ("vegetation", "nature"), 22: ("terrain", "nature"),
    23: ("sky", "sky"), 24: ("person", "human"), 25: ("rider", "human"), 26: ("car", "vehicle"),
    27: ("truck", "vehicle"), 28: ("bus", "vehicle"), 29: ("caravan", "vehicle"),
    30: ("trailer", "vehicle"), 31: ("train", "vehicle"), 32: ("motorcycle", "vehicle"),
    33: ("bicycle", "vehicle")}


class CityscapesConfusion:
  """mmseg's ``cityscapes`` metric, cityscapesscripts' ``evalPixelLevelSemanticLabeling``
  computed in segjax (its 2.3.0 release calls ``np.in1d``, which numpy 2.4 removed): predictions
  in train ids go back to label ids and a (34, 34) confusion matrix over label ids (ground truth
  rows) is summed image by image against the ``*_gtFine_labelIds.png`` files. Class IoU is
  TP / (TP + FP + FN) where FN counts the class's ground-truth pixels predicted as anything else
  and FP the pixels predicted as the class whose ground truth is another evaluated class (not
  ignoreInEval); category IoU is the same over the category's evaluated classes (FP from other
  categories); the averages skip NaN (classes absent from both). The instance-weighted iIoU is
  not computed."""

  def __init__(self):
    self.matrix = np.zeros((len(CITYSCAPES_LABELS),) * 2, np.int64)

  def add(self, gt_label_ids: np.ndarray, pred_train_ids: np.ndarray, gt_file: str = "") -> None:
    from segjax.data.cityscapes_ids import TRAIN_ID_TO_LABEL_ID
    gt = np.asarray(gt_label_ids, np.int64)
    if gt.min(initial=0) < 0 or gt.max(initial=0) >= len(CITYSCAPES_LABELS):
      raise ValueError(f"{gt_file}: label ids {np.unique(gt[(gt < 0) | (gt >= 34)]).tolist()} are not "
                       "Cityscapes label ids 0-33")
    to_label_id = np.zeros(256, np.int64)
    for train_id, label_id in TRAIN_ID_TO_LABEL_ID.items():
      to_label_id[train_id] = label_id
    pred = to_label_id[np.asarray(pred_train_ids, np.int64)]
    n = len(CITYSCAPES_LABELS)
    self.matrix += np.bincount(gt.ravel() * n + pred.ravel(), minlength=n * n).reshape(n, n)

  def sum_over_processes(self) -> None:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      self.matrix = np.asarray(multihost_utils.process_allgather(self.matrix)).sum(0)

  def _iou(self, ids: list[int], others: list[int]) -> float:
    tp = self.matrix[np.ix_(ids, ids)].sum()
    fn = self.matrix[ids].sum() - tp
    fp = self.matrix[np.ix_(others, ids)].sum()
    return float(tp / (tp + fp + fn)) if tp + fp + fn else float("nan")

  def results(self) -> dict:
    """cityscapesscripts' result keys: ``classScores``, ``categoryScores`` (name -> IoU) and
    their NaN-skipping means ``averageScoreClasses``, ``averageScoreCategories``."""
    from segjax.data.cityscapes_ids import LABEL_ID_TO_TRAIN_ID
    evaluated = sorted(LABEL_ID_TO_TRAIN_ID)
    classes = {CITYSCAPES_LABELS[i][0]: self._iou([i], [j for j in evaluated if j != i]) for i in evaluated}
    categories = {}
    for category in dict.fromkeys(c for _, c in CITYSCAPES_LABELS.values()):
      ids = [i for i in evaluated if CITYSCAPES_LABELS[i][1] == category]
      if ids:
        categories[category] = self._iou(ids, [j for j in evaluated if CITYSCAPES_LABELS[j][1] != category])
    mean = lambda scores: float(np.nanmean(list(scores.values()))) if any(
        not np.isnan(v) for v in scores.values()) else float("nan")
    return {"averageScoreClasses": mean(classes), "averageScoreCategories": mean(categories),
            "classScores": classes, "categoryScores": categories}


def cityscapes_label_ids_file(dataset, index: int) -> str:
  """The ``*_gtFine_labelIds.png`` beside image ``index``'s train-id label file."""
  ds, j = dataset.locate(index)
  ann = ds.img_infos[j]["ann"]
  suffix = ds.seg_map_suffix
  if not ann["seg_map"].endswith(suffix) or "labelTrainIds" not in suffix:
    raise ValueError(f"the cityscapes metric reads *_gtFine_labelIds.png beside the *labelTrainIds.png "
                     f"labels; {type(ds).__name__} labels end in {suffix!r}")
  return os.path.join(ann["seg_prefix"], ann["seg_map"][:-len(suffix)] + suffix.replace("labelTrainIds", "labelIds"))
