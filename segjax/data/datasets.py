"""Dataset specs: classes, palette, folder layout and suffixes, as MMSegmentation's datasets.

``CustomDataset`` is mmseg's folder dataset: ``img_dir``/``ann_dir`` under ``data_root``,
matching file names by suffix, optionally restricted by ``split`` files. Other datasets are
subclasses that fix classes, palette, suffixes and ``reduce_zero_label``.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from segjax.data import synthetic
from segjax.data.transforms import DataError, build_pipeline


class CustomDataset:
  CLASSES: Sequence[str] | None = None
  PALETTE: Sequence[Sequence[int]] | None = None
  # How to obtain the data, shown when data_root is missing.
  PREPARE_HINT = "see README.md, 'Datasets'"

  def __init__(self, pipeline, img_dir, img_suffix=".jpg", ann_dir=None, seg_map_suffix=".png",
               split=None, data_root=None, test_mode=False, ignore_index=255,
               reduce_zero_label=False, classes=None, palette=None, label_map=None):
    self.data_root = data_root
    if data_root is not None and not os.path.isdir(data_root):
      raise DataError(f"{type(self).__name__}: data_root {data_root!r} does not exist. To prepare "
                      f"it: {self.PREPARE_HINT}")
    join = lambda p: p if p is None or os.path.isabs(p) or data_root is None else os.path.join(data_root, p)
    self.img_dir, self.ann_dir = join(img_dir), join(ann_dir)
    self.split = [join(s) for s in split] if isinstance(split, (list, tuple)) else join(split)
    self.img_suffix, self.seg_map_suffix = img_suffix, seg_map_suffix
    self.test_mode = test_mode
    self.ignore_index = ignore_index
    self.reduce_zero_label = reduce_zero_label
    self.CLASSES = tuple(classes) if classes is not None else self.CLASSES
    self.PALETTE = tuple(map(tuple, palette)) if palette is not None else self.PALETTE
    self.label_map = dict(label_map or {})
    if not os.path.isdir(self.img_dir):
      raise DataError(f"{type(self).__name__}: image folder {self.img_dir!r} does not exist. "
                      f"To prepare the dataset: {self.PREPARE_HINT}")
    self.pipeline = build_pipeline(pipeline)
    self.img_infos = self.load_annotations()
    if not self.img_infos:
      raise DataError(f"{type(self).__name__}: no '*{img_suffix}' images found in {self.img_dir!r}"
                      + (f" for split {self.split!r}" if self.split else ""))

  @property
  def num_classes(self) -> int:
    return len(self.CLASSES)

  def load_annotations(self) -> list[dict]:
    """mmseg ``load_annotations``: one record per image, ``ann.seg_map`` by suffix swap."""
    infos = []
    if self.split is not None:
      for split in (self.split if isinstance(self.split, list) else [self.split]):
        with open(split) as f:
          names = [line.strip() for line in f if line.strip()]
        for name in names:
          info = {"filename": name + self.img_suffix}
          if self.ann_dir is not None:
            info["ann"] = {"seg_map": name + self.seg_map_suffix}
          infos.append(info)
    else:
      for root, _, files in os.walk(self.img_dir, followlinks=True):
        for f in files:
          if f.endswith(self.img_suffix):
            rel = os.path.relpath(os.path.join(root, f), self.img_dir)
            info = {"filename": rel}
            if self.ann_dir is not None:
              info["ann"] = {"seg_map": rel[:-len(self.img_suffix)] + self.seg_map_suffix}
            infos.append(info)
      infos.sort(key=lambda x: x["filename"])
    return infos

  def __len__(self) -> int:
    return len(self.img_infos)

  def pre_pipeline(self, idx: int) -> dict:
    info = self.img_infos[idx]
    results = {"img_info": info, "ann_info": info.get("ann"), "seg_fields": [],
               "img_prefix": self.img_dir, "seg_prefix": self.ann_dir, "label_map": self.label_map}
    return results

  def prepare(self, idx: int, rng: np.random.Generator | None = None) -> dict:
    """Run the pipeline on image ``idx``; errors name the image."""
    try:
      return self.pipeline(self.pre_pipeline(idx), rng)
    except DataError:
      raise
    except Exception as e:
      raise DataError(f"{type(self).__name__}: pipeline failed on "
                      f"{os.path.join(self.img_dir, self.img_infos[idx]['filename'])}: "
                      f"{type(e).__name__}: {e}") from e

  def get_gt_seg_map(self, idx: int) -> np.ndarray:
    """The label map as evaluation sees it (label_map and reduce_zero_label applied)."""
    from segjax.data.transforms import LoadAnnotations
    return LoadAnnotations(self.reduce_zero_label)(self.pre_pipeline(idx))["gt_semantic_seg"]


class SyntheticDataset(CustomDataset):
  """segjax's embedded default (``segjax.data.synthetic``): generated on first use when
  ``data_root`` is None."""
  CLASSES = synthetic.CLASSES
  PALETTE = synthetic.PALETTE
  PREPARE_HINT = ("leave data_root unset (None) and segjax generates the dataset into "
                  "$SEGJAX_CACHE (default ~/.cache/segjax), or call "
                  "segjax.data.synthetic.ensure_dataset(root)")

  def __init__(self, pipeline, img_dir, ann_dir=None, data_root=None, **kwargs):
    if data_root is None:
      data_root = synthetic.ensure_dataset()
    kwargs.setdefault("img_suffix", ".png")
    kwargs.setdefault("seg_map_suffix", ".png")
    super().__init__(pipeline, img_dir, ann_dir=ann_dir, data_root=data_root, **kwargs)


DATASETS: dict[str, type] = {
    "CustomDataset": CustomDataset,
    "SyntheticDataset": SyntheticDataset,
}


def build_dataset(cfg: Mapping[str, Any]) -> CustomDataset:
  cfg = dict(cfg)
  kind = cfg.pop("type", None)
  if kind not in DATASETS:
    raise ValueError(f"dataset type={kind!r} is not available; expected one of {sorted(DATASETS)}")
  try:
    return DATASETS[kind](**cfg)
  except TypeError as e:
    raise ValueError(f"dataset {kind}: {e}") from None
