"""Dataset validation: every problem names the file.

``check_dataset`` looks at image/label pairs (all, or a sample) and reports images without labels,
labels without images, unreadable files, image/label size mismatches, RGB label images where class
indices are expected, and label values outside ``[0, num_classes) U {ignore_index}`` after
``label_map``/``reduce_zero_label``; it also counts labelled pixels per class. Training runs it on
a sample before the first step; ``tools/check_dataset.py`` runs it on everything.
"""
from __future__ import annotations

import io
import os
from typing import Sequence

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from segjax.data.datasets import CustomDataset


def _unpaired(dataset: CustomDataset) -> list[str]:
  """Label files in a single ann_dir with no image (images without labels show as missing files)."""
  if not isinstance(dataset, CustomDataset):  # Repeat/Concat wrappers
    inner = getattr(dataset, "datasets", None) or [dataset.dataset]
    return sorted({p for d in inner for p in _unpaired(d)})
  if dataset.split is not None or not isinstance(dataset.ann_dir, str) or not os.path.isdir(dataset.ann_dir):
    return []
  images = {info["ann"]["seg_map"] for info in dataset.img_infos if "ann" in info}
  problems = []
  for root, _, files in os.walk(dataset.ann_dir):
    for f in files:
      rel = os.path.relpath(os.path.join(root, f), dataset.ann_dir)
      if f.endswith(dataset.seg_map_suffix) and rel not in images:
        problems.append(f"{os.path.join(dataset.ann_dir, rel)}: label without an image "
                        f"(no {rel[:-len(dataset.seg_map_suffix)] + dataset.img_suffix} in {dataset.img_dir})")
  return sorted(problems)


def check_pair(dataset: CustomDataset, idx: int, num_classes: int) -> tuple[list[str], np.ndarray | None]:
  """Problems of record ``idx`` and its label map (None when unreadable)."""
  img_path, ann_path = dataset.file_name(idx, "img"), dataset.file_name(idx, "seg")
  problems = []
  img_shape = None
  data = dataset.file_bytes(idx, "img")
  if data is None:
    problems.append(f"{img_path}: image file not found")
  else:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
      problems.append(f"{img_path}: cannot decode image")
    else:
      img_shape = img.shape[:2]
  if ann_path is None:
    return problems, None
  data = dataset.file_bytes(idx, "seg")
  if data is None:
    return problems + [f"{img_path}: image without a label ({ann_path} not found)"], None
  try:
    with Image.open(io.BytesIO(data)) as im:
      mode, size = im.mode, im.size
  except OSError as e:
    return problems + [f"{ann_path}: cannot read label: {e}"], None
  if mode in ("RGB", "RGBA"):
    return problems + [f"{ann_path}: label is an {mode} image; expected class indices (mode L or P). "
                       "Convert colour-coded labels with the dataset's converter"], None
  if img_shape is not None and (size[1], size[0]) != img_shape:
    problems.append(f"{ann_path}: label size {size[1]}x{size[0]} differs from image "
                    f"{img_path} {img_shape[0]}x{img_shape[1]}")
  seg = dataset.get_gt_seg_map(idx)
  bad = np.unique(seg[(seg >= num_classes) & (seg != dataset.ignore_index)])
  if bad.size:
    problems.append(f"{ann_path}: label values {bad.tolist()} outside [0, {num_classes}) and not "
                    f"ignore_index {dataset.ignore_index}"
                    + (" (after reduce_zero_label)" if dataset.reduce_zero_label else ""))
  return problems, seg


def check_dataset(dataset: CustomDataset, num_classes: int, indices: Sequence[int] | None = None,
                  progress: str | None = None) -> tuple[list[str], np.ndarray]:
  """(problems, labelled pixels per class) over ``indices`` (default: all records); ``progress``:
  the label of a progress bar on stderr, shown when stderr is a terminal."""
  indices = range(len(dataset)) if indices is None else indices  # Repeat: every repeat is checked
  problems = _unpaired(dataset) if len(indices) == len(dataset) else []
  counts = np.zeros(num_classes, np.int64)
  for i in tqdm(indices, desc=progress, unit="image", disable=None if progress else True):
    p, seg = check_pair(*dataset.locate(i), num_classes)
    problems += p
    if seg is not None:
      valid = seg[seg < num_classes]
      counts += np.bincount(valid.ravel(), minlength=num_classes)[:num_classes]
  return problems, counts


def class_table(classes: Sequence[str], counts: np.ndarray) -> str:
  total = max(int(counts.sum()), 1)
  width = max(len("class"), *(len(c) for c in classes))
  lines = [f"{'class'.ljust(width)}  {'pixels':>12}  {'share':>7}"]
  lines += [f"{c.ljust(width)}  {int(n):>12}  {100 * n / total:6.2f}%" for c, n in zip(classes, counts)]
  return "\n".join(lines)
