"""Dataset specs: classes, palette, folder layout and suffixes, as MMSegmentation's datasets.

``CustomDataset`` is mmseg's folder dataset: ``img_dir``/``ann_dir`` under ``data_root``,
matching file names by suffix, optionally restricted by ``split`` files. Other datasets are
subclasses that fix classes, palette, suffixes and ``reduce_zero_label``.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Mapping, Sequence

import numpy as np

from segjax.data import synthetic
from segjax.data.transforms import DataError, LoadAnnotations, build_from, build_pipeline
from segjax.config import to_plain


class CustomDataset:
  CLASSES: Sequence[str] | None = None
  PALETTE: Sequence[Sequence[int]] | None = None
  # How to obtain the data, shown when data_root is missing.
  PREPARE_HINT = "see README.md, 'Datasets'"

  # What a dataset type fixes in mmseg (suffixes, reduce_zero_label, ...); a config may override.
  DEFAULTS: Mapping[str, Any] = {}
  REQUIRES_SPLIT = False

  def __init__(self, pipeline, img_dir, img_suffix=None, ann_dir=None, seg_map_suffix=None,
               split=None, data_root=None, test_mode=False, ignore_index=None,
               reduce_zero_label=None, classes=None, palette=None, label_map=None):
    fixed = {"img_suffix": ".jpg", "seg_map_suffix": ".png", "ignore_index": 255,
             "reduce_zero_label": False, **self.DEFAULTS}
    pick = lambda value, key: fixed[key] if value is None else value
    img_suffix, seg_map_suffix = pick(img_suffix, "img_suffix"), pick(seg_map_suffix, "seg_map_suffix")
    if self.REQUIRES_SPLIT and split is None:
      raise ValueError(f"{type(self).__name__} needs split= (a text file listing the image names)")
    self.data_root = data_root
    if data_root is not None and not os.path.isdir(data_root):
      raise DataError(f"{type(self).__name__}: data_root {data_root!r} does not exist. To prepare "
                      f"it: {self.PREPARE_HINT}")
    join = lambda p: p if p is None or os.path.isabs(p) or data_root is None else os.path.join(data_root, p)
    for key, value in (("img_dir", img_dir), ("ann_dir", ann_dir), ("split", split)):
      if isinstance(value, (list, tuple)):  # build_dataset makes these a ConcatDataset, as mmseg
        raise ValueError(f"{type(self).__name__}: {key} is a list {value!r}; several folders or "
                         "split files are a ConcatDataset: build it with build_dataset (img_dir or "
                         "split lists, ann_dir paired with them by position)")
    self.img_dir, self.ann_dir, self.split = join(img_dir), join(ann_dir), join(split)
    self.img_suffix, self.seg_map_suffix = img_suffix, seg_map_suffix
    self.test_mode = test_mode
    self.ignore_index = pick(ignore_index, "ignore_index")
    self.reduce_zero_label = pick(reduce_zero_label, "reduce_zero_label")
    self.label_map = {int(k): int(v) for k, v in dict(label_map or {}).items()}
    self.CLASSES, self.PALETTE = self._classes_and_palette(classes, palette)
    if not os.path.isdir(self.img_dir):
      raise DataError(f"{type(self).__name__}: image folder {self.img_dir!r} does not exist. "
                      f"To prepare the dataset: {self.PREPARE_HINT}")
    self.pipeline = build_pipeline(pipeline)
    self.img_infos = self.load_annotations()
    if not self.img_infos:
      raise DataError(f"{type(self).__name__}: no '*{img_suffix}' images found in {self.img_dir!r}"
                      + (f" for split {self.split!r}" if self.split else ""))

  def _classes_and_palette(self, classes, palette):
    """mmseg's ``get_classes_and_palette``: ``classes`` (names or a file of names) that are a
    subset of the dataset's classes keep their colours and get a ``label_map`` old id -> new id
    (-1, i.e. ignored, for the classes left out)."""
    if classes is None:
      return self.CLASSES, (tuple(map(tuple, palette)) if palette is not None else self.PALETTE)
    if isinstance(classes, str):
      with open(classes) as f:
        classes = [line.strip() for line in f if line.strip()]
    classes = tuple(classes)
    if self.CLASSES:
      unknown = [c for c in classes if c not in self.CLASSES]
      if unknown:
        raise ValueError(f"{type(self).__name__}: classes {unknown} are not among its classes "
                         f"{list(self.CLASSES)}")
      self.label_map = {i: (classes.index(c) if c in classes else -1) for i, c in enumerate(self.CLASSES)}
      if palette is None and self.PALETTE:
        palette = [self.PALETTE[self.CLASSES.index(c)] for c in classes]
    if palette is None:  # mmseg draws a random palette; a fixed seed keeps it the same every run
      palette = np.random.default_rng(42).integers(0, 255, (len(classes), 3)).tolist()
    return classes, tuple(map(tuple, palette))

  @property
  def num_classes(self) -> int:
    return len(self.CLASSES)

  @property
  def name(self) -> str:
    """Identifies the data (checkpointed with the loader's position)."""
    return self.img_dir

  def locate(self, idx: int) -> tuple["CustomDataset", int]:
    """The folder dataset and its record index behind ``idx`` (wrappers map through)."""
    return self, idx

  def load_annotations(self) -> list[dict]:
    """mmseg ``load_annotations``: one record per image, ``ann.seg_map`` by suffix swap; each
    record keeps its label folder (``seg_prefix``)."""
    infos = []
    if self.split is not None:
      if not os.path.exists(self.split):
        raise DataError(f"{type(self).__name__}: split file {self.split!r} does not exist. To "
                        f"prepare the dataset: {self.PREPARE_HINT}")
      with open(self.split) as f:
        names = [line.strip() for line in f if line.strip()]
      for name in names:
        info = {"filename": name + self.img_suffix}
        if self.ann_dir is not None:
          info["ann"] = {"seg_map": name + self.seg_map_suffix, "seg_prefix": self.ann_dir}
        infos.append(info)
    else:
      for root, _, files in os.walk(self.img_dir, followlinks=True):
        for f in files:
          if f.endswith(self.img_suffix):
            rel = os.path.relpath(os.path.join(root, f), self.img_dir)
            info = {"filename": rel}
            if self.ann_dir is not None:
              info["ann"] = {"seg_map": rel[:-len(self.img_suffix)] + self.seg_map_suffix,
                             "seg_prefix": self.ann_dir}
            infos.append(info)
      infos.sort(key=lambda x: x["filename"])
    return infos

  def __len__(self) -> int:
    return len(self.img_infos)

  def pre_pipeline(self, idx: int) -> dict:
    info = self.img_infos[idx]
    ann = info.get("ann") or {}
    results = {"img_info": info, "ann_info": ann or None, "seg_fields": [],
               "img_prefix": self.img_dir, "seg_prefix": ann.get("seg_prefix"),
               "label_map": self.label_map}
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

  def file_name(self, idx: int, kind: str) -> str | None:
    """Where record ``idx``'s image (``kind='img'``) or label (``'seg'``) lives, for messages."""
    info = self.img_infos[idx]
    if kind == "img":
      return os.path.join(self.img_dir, info["filename"])
    return os.path.join(info["ann"]["seg_prefix"], info["ann"]["seg_map"]) if "ann" in info else None

  def file_bytes(self, idx: int, kind: str) -> bytes | None:
    """The encoded image or label file of record ``idx``; None when it does not exist."""
    path = self.file_name(idx, kind)
    if path is None or not os.path.exists(path):
      return None
    with open(path, "rb") as f:
      return f.read()

  def get_gt_seg_map(self, idx: int) -> np.ndarray:
    """The label map as evaluation sees it (label_map and reduce_zero_label applied)."""
    return LoadAnnotations(self.reduce_zero_label)(self.pre_pipeline(idx))["gt_semantic_seg"]


class SyntheticDataset(CustomDataset):
  """segjax's embedded default (``segjax.data.synthetic``): generated on first use when
  ``data_root`` is None."""
  CLASSES = synthetic.CLASSES
  PALETTE = synthetic.PALETTE
  PREPARE_HINT = ("leave data_root unset (None) and segjax generates the dataset into "
                  "$SEGJAX_CACHE (default ~/.cache/segjax), or call "
                  "segjax.data.synthetic.ensure_dataset(root)")

  DEFAULTS = dict(img_suffix=".png", seg_map_suffix=".png")

  def __init__(self, pipeline, img_dir, ann_dir=None, data_root=None, **kwargs):
    if data_root is None:
      data_root = synthetic.ensure_dataset()
    super().__init__(pipeline, img_dir, ann_dir=ann_dir, data_root=data_root, **kwargs)


class CityscapesDataset(CustomDataset):
  """Cityscapes with 19 train ids; labels are ``*_gtFine_labelTrainIds.png`` written by
  ``tools/convert_datasets/cityscapes.py``."""
  CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
             "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
             "bus", "train", "motorcycle", "bicycle")
  PALETTE = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
             (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
             (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
             (0, 80, 100), (0, 0, 230), (119, 11, 32))
  PREPARE_HINT = ("download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
                  "https://www.cityscapes-dataset.com into data/cityscapes, then run "
                  "python tools/convert_datasets/cityscapes.py data/cityscapes --nproc 8")

  DEFAULTS = dict(img_suffix="_leftImg8bit.png", seg_map_suffix="_gtFine_labelTrainIds.png")


class ADE20KDataset(CustomDataset):
  """ADE20K (SceneParsing, 150 classes); label 0 is 'other' and is ignored via reduce_zero_label."""
  CLASSES = (
      "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed ", "windowpane", "grass",
      "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
      "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
      "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
      "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
      "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
      "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
      "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
      "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
      "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
      "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
      "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
      "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel",
      "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step",
      "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
      "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
      "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
      "clock", "flag")
  PALETTE = (
      (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
      (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
      (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
      (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
      (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
      (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
      (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
      (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
      (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
      (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
      (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133),
      (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0),
      (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153),
      (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
      (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
      (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
      (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255),
      (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255),
      (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255),
      (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
      (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
      (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255),
      (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0),
      (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
      (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255))
  PREPARE_HINT = ("download ADEChallengeData2016.zip (http://sceneparsing.csail.mit.edu) and "
                  "unzip it into data/ade (data/ade/ADEChallengeData2016/{images,annotations})")

  DEFAULTS = dict(reduce_zero_label=True)


class PascalVOCDataset(CustomDataset):
  """Pascal VOC 2012 (21 classes incl. background); ``split`` lists the image ids."""
  CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
             "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
             "sheep", "sofa", "train", "tvmonitor")
  PALETTE = ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128),
             (0, 128, 128), (128, 128, 128), (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0),
             (64, 0, 128), (192, 0, 128), (64, 128, 128), (192, 128, 128), (0, 64, 0), (128, 64, 0),
             (0, 192, 0), (128, 192, 0), (0, 64, 128))
  PREPARE_HINT = ("download VOCtrainval_11-May-2012.tar into data/VOCdevkit/VOC2012; for the "
                  "aug set also SBD, then python tools/convert_datasets/voc_aug.py "
                  "data/VOCdevkit data/VOCdevkit/VOCaug --nproc 8")
  REQUIRES_SPLIT = True


_CONTEXT_HINT = ("download VOCtrainval_03-May-2010.tar into data/VOCdevkit/VOC2010 and "
                 "trainval_merged.json, then python tools/convert_datasets/pascal_context.py "
                 "data/VOCdevkit data/VOCdevkit/VOC2010/trainval_merged.json")


class PascalContextDataset(CustomDataset):
  """Pascal Context, 60 classes with background as class 0."""
  CLASSES = (
      "background", "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat",
      "book", "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth",
      "computer", "cow", "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food",
      "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person",
      "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign",
      "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall",
      "water", "window", "wood")
  PALETTE = ADE20KDataset.PALETTE[:60]  # mmseg reuses ADE20K's first 60 colours
  PREPARE_HINT = _CONTEXT_HINT
  REQUIRES_SPLIT = True


class PascalContextDataset59(CustomDataset):
  """Pascal Context without background: label 0 is ignored via reduce_zero_label."""
  CLASSES = PascalContextDataset.CLASSES[1:]
  PALETTE = PascalContextDataset.PALETTE[1:]
  DEFAULTS = dict(reduce_zero_label=True)
  PREPARE_HINT = _CONTEXT_HINT
  REQUIRES_SPLIT = True


class COCOStuffDataset(CustomDataset):
  """COCO-Stuff, 171 classes. Labels ``*_labelTrainIds.png`` from
  ``tools/convert_datasets/coco_stuff{10k,164k}.py``: the 10k version writes 1..171 with 0 ignored
  (configs set reduce_zero_label=True), the 164k version 0..170 with 255 ignored."""
  CLASSES = (
      "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
      "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
      "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
      "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
      "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
      "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
      "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
      "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
      "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
      "teddy bear", "hair drier", "toothbrush", "banner", "blanket", "branch", "bridge",
      "building-other", "bush", "cabinet", "cage", "cardboard", "carpet", "ceiling-other",
      "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff",
      "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile",
      "floor-wood", "flower", "fog", "food-other", "fruit", "furniture-other", "grass", "gravel",
      "ground-other", "hill", "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss",
      "mountain", "mud", "napkin", "net", "paper", "pavement", "pillow", "plant-other", "plastic",
      "platform", "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug",
      "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs",
      "stone", "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree",
      "vegetable", "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone",
      "wall-tile", "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood")
  PALETTE = (
      (0, 192, 64), (0, 192, 64), (0, 64, 96), (128, 192, 192), (0, 64, 64), (0, 192, 224),
      (0, 192, 192), (128, 192, 64), (0, 192, 96), (128, 192, 64), (128, 32, 192), (0, 0, 224),
      (0, 0, 64), (0, 160, 192), (128, 0, 96), (128, 0, 192), (0, 32, 192), (128, 128, 224),
      (0, 0, 192), (128, 160, 192), (128, 128, 0), (128, 0, 32), (128, 32, 0), (128, 0, 128),
      (64, 128, 32), (0, 160, 0), (0, 0, 0), (192, 128, 160), (0, 32, 0), (0, 128, 128),
      (64, 128, 160), (128, 160, 0), (0, 128, 0), (192, 128, 32), (128, 96, 128), (0, 0, 128),
      (64, 0, 32), (0, 224, 128), (128, 0, 0), (192, 0, 160), (0, 96, 128), (128, 128, 128),
      (64, 0, 160), (128, 224, 128), (128, 128, 64), (192, 0, 32), (128, 96, 0), (128, 0, 192),
      (0, 128, 32), (64, 224, 0), (0, 0, 64), (128, 128, 160), (64, 96, 0), (0, 128, 192),
      (0, 128, 160), (192, 224, 0), (0, 128, 64), (128, 128, 32), (192, 32, 128), (0, 64, 192),
      (0, 0, 32), (64, 160, 128), (128, 64, 64), (128, 0, 160), (64, 32, 128), (128, 192, 192),
      (0, 0, 160), (192, 160, 128), (128, 192, 0), (128, 0, 96), (192, 32, 0), (128, 64, 128),
      (64, 128, 96), (64, 160, 0), (0, 64, 0), (192, 128, 224), (64, 32, 0), (0, 192, 128),
      (64, 128, 224), (192, 160, 0), (0, 192, 0), (192, 128, 96), (192, 96, 128), (0, 64, 128),
      (64, 0, 96), (64, 224, 128), (128, 64, 0), (192, 0, 224), (64, 96, 128), (128, 192, 128),
      (64, 0, 224), (192, 224, 128), (128, 192, 64), (192, 0, 96), (192, 96, 0), (128, 64, 192),
      (0, 128, 96), (0, 224, 0), (64, 64, 64), (128, 128, 224), (0, 96, 0), (64, 192, 192),
      (0, 128, 224), (128, 224, 0), (64, 192, 64), (128, 128, 96), (128, 32, 128), (64, 0, 192),
      (0, 64, 96), (0, 160, 128), (192, 0, 64), (128, 64, 224), (0, 32, 128), (192, 128, 192),
      (0, 64, 224), (128, 160, 128), (192, 128, 0), (128, 64, 32), (128, 32, 64), (192, 0, 128),
      (64, 192, 32), (0, 160, 64), (64, 0, 0), (192, 192, 160), (0, 32, 64), (64, 128, 128),
      (64, 192, 160), (128, 160, 64), (64, 128, 0), (192, 192, 32), (128, 96, 192), (64, 0, 128),
      (64, 64, 32), (0, 224, 192), (192, 0, 0), (192, 64, 160), (0, 96, 192), (192, 128, 128),
      (64, 64, 160), (128, 224, 192), (192, 128, 64), (192, 64, 32), (128, 96, 64), (192, 0, 192),
      (0, 192, 32), (64, 224, 64), (64, 0, 64), (128, 192, 160), (64, 96, 64), (64, 128, 192),
      (0, 192, 160), (192, 224, 64), (64, 128, 64), (128, 192, 32), (192, 32, 192), (64, 64, 192),
      (0, 64, 32), (64, 160, 192), (192, 64, 64), (128, 64, 160), (64, 32, 192), (192, 192, 192),
      (0, 64, 160), (192, 160, 192), (192, 192, 0), (128, 64, 96), (192, 32, 64), (192, 64, 128),
      (64, 192, 96), (64, 160, 64), (64, 64, 0))
  DEFAULTS = dict(seg_map_suffix="_labelTrainIds.png")
  PREPARE_HINT = ("unzip cocostuff-10k-v1.1.zip into data/coco_stuff10k and run "
                  "python tools/convert_datasets/coco_stuff10k.py data/coco_stuff10k --nproc 8; or "
                  "unzip train2017.zip, val2017.zip and stuffthingmaps_trainval2017.zip into "
                  "data/coco_stuff164k/{images,annotations} and run "
                  "python tools/convert_datasets/coco_stuff164k.py data/coco_stuff164k --nproc 8")


_VESSEL_CLASSES = ("background", "vessel")
_VESSEL_PALETTE = ((120, 120, 120), (6, 230, 230))


class DRIVEDataset(CustomDataset):
  """DRIVE retinal vessels: 2 classes, labels ``*_manual1.png`` (0/1)."""
  CLASSES, PALETTE = _VESSEL_CLASSES, _VESSEL_PALETTE
  DEFAULTS = dict(img_suffix=".png", seg_map_suffix="_manual1.png")
  PREPARE_HINT = "python tools/convert_datasets/drive.py training.zip test.zip"


class HRFDataset(CustomDataset):
  """HRF retinal vessels: 2 classes, labels ``*.png`` (0/1)."""
  CLASSES, PALETTE = _VESSEL_CLASSES, _VESSEL_PALETTE
  DEFAULTS = dict(img_suffix=".png", seg_map_suffix=".png")
  PREPARE_HINT = ("python tools/convert_datasets/hrf.py healthy.zip healthy_manualsegm.zip "
                  "glaucoma.zip glaucoma_manualsegm.zip diabetic_retinopathy.zip "
                  "diabetic_retinopathy_manualsegm.zip")


class STAREDataset(CustomDataset):
  """STARE retinal vessels: 2 classes, labels ``*.ah.png`` (0/1)."""
  CLASSES, PALETTE = _VESSEL_CLASSES, _VESSEL_PALETTE
  DEFAULTS = dict(img_suffix=".png", seg_map_suffix=".ah.png")
  PREPARE_HINT = ("python tools/convert_datasets/stare.py stare-images.tar labels-ah.tar "
                  "labels-vk.tar")


class ChaseDB1Dataset(CustomDataset):
  """CHASE_DB1 retinal vessels: 2 classes, labels ``*_1stHO.png`` (0/1)."""
  CLASSES, PALETTE = _VESSEL_CLASSES, _VESSEL_PALETTE
  DEFAULTS = dict(img_suffix=".png", seg_map_suffix="_1stHO.png")
  PREPARE_HINT = "python tools/convert_datasets/chase_db1.py CHASEDB1.zip"


class DarkZurichDataset(CityscapesDataset):
  """Dark Zurich val (night), Cityscapes' 19 classes; for testing Cityscapes-trained models."""
  DEFAULTS = dict(img_suffix="_rgb_anon.png", seg_map_suffix="_gt_labelTrainIds.png")
  PREPARE_HINT = "unzip Dark_Zurich_val_anon.zip into data/dark_zurich"


class NightDrivingDataset(CityscapesDataset):
  """Nighttime Driving test, Cityscapes' 19 classes; for testing Cityscapes-trained models."""
  DEFAULTS = dict(img_suffix="_leftImg8bit.png", seg_map_suffix="_gtCoarse_labelTrainIds.png")
  PREPARE_HINT = "unzip NighttimeDrivingTest.zip into data/NighttimeDrivingTest"


class LoveDADataset(CustomDataset):
  """LoveDA: 7 classes; label 0 is 'no data' and is ignored via reduce_zero_label."""
  CLASSES = ("background", "building", "road", "water", "barren", "forest", "agricultural")
  PALETTE = ((255, 255, 255), (255, 0, 0), (255, 255, 0), (0, 0, 255), (159, 129, 183),
             (0, 255, 0), (255, 195, 128))
  DEFAULTS = dict(img_suffix=".png", seg_map_suffix=".png", reduce_zero_label=True)
  PREPARE_HINT = ("put Train.zip, Val.zip and Test.zip in a folder and run "
                  "python tools/convert_datasets/loveda.py FOLDER -o data/loveDA")


class ISPRSDataset(CustomDataset):
  """ISPRS Vaihingen: 6 classes; label 0 (boundary) is ignored via reduce_zero_label."""
  CLASSES = ("impervious_surface", "building", "low_vegetation", "tree", "car", "clutter")
  PALETTE = ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0))
  DEFAULTS = dict(img_suffix=".png", seg_map_suffix=".png", reduce_zero_label=True)
  PREPARE_HINT = ("put ISPRS_semantic_labeling_Vaihingen.zip and "
                  "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip in a folder "
                  "and run python tools/convert_datasets/vaihingen.py FOLDER -o data/vaihingen")


class PotsdamDataset(ISPRSDataset):
  """ISPRS Potsdam: Vaihingen's 6 classes; label 0 (boundary) ignored via reduce_zero_label."""
  PREPARE_HINT = ("put 2_Ortho_RGB.zip and 5_Labels_all_noBoundary.zip in a folder and run "
                  "python tools/convert_datasets/potsdam.py FOLDER -o data/potsdam")


class iSAIDDataset(CustomDataset):  # noqa: N801  (mmseg's name)
  """iSAID: 16 classes incl. background; labels ``*_instance_color_RGB.png`` hold class indices
  (written by ``tools/convert_datasets/isaid.py`` from the RGB masks)."""
  CLASSES = ("background", "ship", "store_tank", "baseball_diamond", "tennis_court",
             "basketball_court", "Ground_Track_Field", "Bridge", "Large_Vehicle", "Small_Vehicle",
             "Helicopter", "Swimming_pool", "Roundabout", "Soccer_ball_field", "plane", "Harbor")
  PALETTE = ((0, 0, 0), (0, 0, 63), (0, 63, 63), (0, 63, 0), (0, 63, 127), (0, 63, 191),
             (0, 63, 255), (0, 127, 63), (0, 127, 127), (0, 0, 127), (0, 0, 191), (0, 0, 255),
             (0, 191, 127), (0, 127, 191), (0, 127, 255), (0, 100, 155))
  DEFAULTS = dict(img_suffix=".png", seg_map_suffix="_instance_color_RGB.png")
  PREPARE_HINT = ("arrange the DOTA images and iSAID masks as train|val|test/images/*.zip and "
                  "train|val/Semantic_masks/*.zip, then python tools/convert_datasets/isaid.py "
                  "FOLDER -o data/iSAID")


class FaceOccludedDataset(CustomDataset):
  """Occlusion-aware face segmentation (NatOcc / RandOcc / RealOcc): background and face;
  ``split`` lists the image names."""
  CLASSES = ("background", "face")
  PALETTE = ((0, 0, 0), (128, 0, 0))
  REQUIRES_SPLIT = True
  PREPARE_HINT = ("build NatOcc_hand_sot, NatOcc_object, RandOcc and RealOcc under "
                  "data/occlusion-aware-face-dataset as mmseg 0.30's docs/en/dataset_prepare.md "
                  "('Occlusion-aware Face Dataset') describes")


_OPENING_PACKED_SOURCE = threading.Lock()


class PackedDataset(CustomDataset):
  """A dataset written by ``tools/pack_dataset.py`` (``segjax.data.packed``): TFDS array_record
  shards holding the original files, read by random access; ``path`` is the folder with
  ``dataset_info.json`` (local or any ``etils.epath`` URL). Classes, palette, ignore_index and
  reduce_zero_label come from the packed spec unless given here."""

  def __init__(self, pipeline, path, split="train", test_mode=False, ignore_index=None,
               reduce_zero_label=None, classes=None, palette=None, label_map=None):
    from segjax.data import packed
    self.path, self.packed_split = str(path), split
    try:
      source, spec = packed.open_split(self.path, split)
    except (FileNotFoundError, KeyError) as e:
      raise DataError(f"PackedDataset: {e}") from None
    self.CLASSES, self.PALETTE = tuple(spec["classes"]), tuple(map(tuple, spec["palette"]))
    self.img_dir = self.data_root = f"{self.path}:{split}"
    self.split, self.ann_dir, self.test_mode = None, self.img_dir, test_mode
    self.ignore_index = spec["ignore_index"] if ignore_index is None else ignore_index
    self.reduce_zero_label = spec["reduce_zero_label"] if reduce_zero_label is None else reduce_zero_label
    self.label_map = {int(k): int(v) for k, v in dict(label_map or spec.get("label_map") or {}).items()}
    self.CLASSES, self.PALETTE = self._classes_and_palette(classes, palette)
    self.pipeline = build_pipeline(pipeline)
    self._source = source
    self.img_infos = [{"filename": str(r["file_name"], "utf-8") if isinstance(r["file_name"], bytes) else r["file_name"],
                       "ann": {"seg_map": str(r["seg_map"], "utf-8") if isinstance(r["seg_map"], bytes) else r["seg_map"],
                               "seg_prefix": self.img_dir}}
                      for r in (source[i] for i in range(len(source)))]

  def __getstate__(self):  # the TFDS source is reopened in each grain worker
    return {k: v for k, v in self.__dict__.items() if k != "_source"}

  def _record(self, idx: int) -> dict:
    if getattr(self, "_source", None) is None:
      # A grain worker's prefetch threads all arrive here first: one imports TFDS and opens the
      # source. Concurrent first imports of TFDS deadlocked in its lazy imports (Python 3.11's
      # functools.cached_property lock against the import lock; a test run hung on it).
      with _OPENING_PACKED_SOURCE:
        if getattr(self, "_source", None) is None:
          from segjax.data import packed
          self._source, _ = packed.open_split(self.path, self.packed_split)
    return self._source[idx]

  def file_name(self, idx: int, kind: str) -> str:
    info = self.img_infos[idx]
    return f"{self.img_dir}/{info['filename'] if kind == 'img' else info['ann']['seg_map']}"

  def file_bytes(self, idx: int, kind: str) -> bytes:
    return self._record(idx)["image" if kind == "img" else "segmentation_mask"]

  def pre_pipeline(self, idx: int) -> dict:
    results = super().pre_pipeline(idx)
    record = self._record(idx)
    results.update(img_bytes=record["image"], seg_bytes=record["segmentation_mask"])
    return results


class RepeatDataset:
  """mmseg ``RepeatDataset``: ``dataset`` seen ``times`` over (small sets such as DRIVE)."""

  def __init__(self, dataset, times: int):
    self.dataset = build_dataset(dataset) if isinstance(dataset, (Mapping, list, tuple)) else dataset
    self.times = int(times)

  def __len__(self) -> int:
    return self.times * len(self.dataset)

  def __getattr__(self, attr):  # CLASSES, PALETTE, ignore_index, num_classes, ...
    return getattr(self.dataset, attr)

  @property
  def name(self) -> str:
    return f"Repeat{self.times}({self.dataset.name})"

  def locate(self, idx: int):
    return self.dataset.locate(idx % len(self.dataset))

  def prepare(self, idx: int, rng=None):
    ds, j = self.locate(idx)
    return ds.prepare(j, rng)


class ConcatDataset:
  """mmseg ``ConcatDataset``: several datasets with the same classes, one index space;
  ``separate_eval`` (mmseg's default True): evaluated one dataset at a time."""

  def __init__(self, datasets, separate_eval: bool = True):
    if separate_eval not in (True, False):
      raise ValueError(f"ConcatDataset: separate_eval must be True or False, got {separate_eval!r}")
    self.separate_eval = separate_eval
    self.datasets = [build_dataset(d) if isinstance(d, (Mapping, list, tuple)) else d for d in datasets]
    classes = {tuple(d.CLASSES) for d in self.datasets}
    if len(classes) != 1:
      raise ValueError(f"ConcatDataset: the datasets' classes differ: {sorted(classes)}")
    self.offsets = np.cumsum([0] + [len(d) for d in self.datasets])

  def __len__(self) -> int:
    return int(self.offsets[-1])

  def __getattr__(self, attr):
    return getattr(self.datasets[0], attr)

  @property
  def name(self) -> str:
    return "Concat(" + ", ".join(d.name for d in self.datasets) + ")"

  def locate(self, idx: int):
    k = int(np.searchsorted(self.offsets, idx, side="right")) - 1
    return self.datasets[k].locate(idx - int(self.offsets[k]))

  def prepare(self, idx: int, rng=None):
    ds, j = self.locate(idx)
    return ds.prepare(j, rng)


class MultiImageMixDataset:
  """mmseg ``MultiImageMixDataset``: ``dataset`` loads images (its pipeline), then ``pipeline``
  runs on them; a transform with ``get_indexes`` (RandomMosaic) first receives those other
  images as ``results['mix_results']``. ``skip_type_keys`` switches transforms off by type."""

  def __init__(self, dataset, pipeline, skip_type_keys=None):
    self.dataset = build_dataset(dataset) if isinstance(dataset, (Mapping, list, tuple)) else dataset
    self.pipeline = build_pipeline(pipeline)
    self.types = [step["type"] for step in pipeline]
    self.skip_type_keys = tuple(skip_type_keys or ())

  def __len__(self) -> int:
    return len(self.dataset)

  def __getattr__(self, attr):
    return getattr(self.dataset, attr)

  @property
  def name(self) -> str:
    return f"MultiImageMix({self.dataset.name})"

  def locate(self, idx: int):
    return self.dataset.locate(idx)

  def update_skip_type_keys(self, skip_type_keys) -> None:
    self.skip_type_keys = tuple(skip_type_keys or ())

  def prepare(self, idx: int, rng=None):
    rng = rng if rng is not None else np.random.default_rng()
    results = self.dataset.prepare(idx, rng)
    for transform, kind, takes_rng in zip(self.pipeline.transforms, self.types, self.pipeline._takes_rng):
      if kind in self.skip_type_keys:
        continue
      if hasattr(transform, "get_indexes"):
        results["mix_results"] = [self.dataset.prepare(i, rng)
                                  for i in transform.get_indexes(len(self.dataset), rng)]
      results = transform(results, rng) if takes_rng else transform(results)
      results.pop("mix_results", None)
    return results


DATASETS: dict[str, type] = {
    "RepeatDataset": RepeatDataset,
    "MultiImageMixDataset": MultiImageMixDataset,
    "ConcatDataset": ConcatDataset,
    "CustomDataset": CustomDataset,
    "SyntheticDataset": SyntheticDataset,
    "CityscapesDataset": CityscapesDataset,
    "ADE20KDataset": ADE20KDataset,
    "PascalVOCDataset": PascalVOCDataset,
    "PascalContextDataset": PascalContextDataset,
    "PascalContextDataset59": PascalContextDataset59,
    "COCOStuffDataset": COCOStuffDataset,
    "DRIVEDataset": DRIVEDataset,
    "HRFDataset": HRFDataset,
    "STAREDataset": STAREDataset,
    "ChaseDB1Dataset": ChaseDB1Dataset,
    "DarkZurichDataset": DarkZurichDataset,
    "NightDrivingDataset": NightDrivingDataset,
    "LoveDADataset": LoveDADataset,
    "ISPRSDataset": ISPRSDataset,
    "PotsdamDataset": PotsdamDataset,
    "iSAIDDataset": iSAIDDataset,
    "FaceOccludedDataset": FaceOccludedDataset,
    "PackedDataset": PackedDataset,
}


def _concat_dataset(cfg: dict) -> ConcatDataset:
  """mmseg's ``_concat_dataset``: a dataset dict whose ``img_dir`` or ``split`` is a list is one
  dataset per entry (``ann_dir``/``split`` lists pair with it by position), concatenated."""
  img_dir, ann_dir, split = cfg.get("img_dir"), cfg.get("ann_dir"), cfg.get("split")
  count = lambda v: 0 if v is None else len(v) if isinstance(v, (list, tuple)) else 1
  n_img, n_ann, n_split = count(img_dir), count(ann_dir), count(split)
  if (n_img > 1 and (n_ann not in (0, n_img) or n_split not in (0, n_img))) or (
      n_img <= 1 and not (n_split == n_ann or n_ann <= 1)):
    raise ValueError(f"dataset {cfg.get('type')}: img_dir ({n_img}), ann_dir ({n_ann}) and split "
                     f"({n_split}) lists must have the same length (mmseg pairs them by position)")
  separate_eval = cfg.pop("separate_eval", True)
  datasets = []
  for i in range(max(n_split, n_img)):
    one = dict(cfg)
    for key, value in (("img_dir", img_dir), ("ann_dir", ann_dir), ("split", split)):
      if isinstance(value, (list, tuple)):
        one[key] = value[i]
    datasets.append(build_dataset(one))
  return ConcatDataset(datasets, separate_eval)


def build_dataset(cfg: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> CustomDataset:
  """mmseg's ``build_dataset``: a dict by its ``type``; a list of dicts, or a dict with several
  ``img_dir``s or ``split`` files, is their ConcatDataset."""
  cfg = to_plain(cfg)
  if isinstance(cfg, (list, tuple)):
    return ConcatDataset([build_dataset(c) for c in cfg])
  if not isinstance(cfg, Mapping):
    raise ValueError(f"a dataset config is a dict with a 'type' (or a list of them), got {cfg!r}")
  if cfg.get("type") not in ("RepeatDataset", "MultiImageMixDataset", "ConcatDataset") and (
      isinstance(cfg.get("img_dir"), (list, tuple)) or isinstance(cfg.get("split"), (list, tuple))):
    return _concat_dataset(dict(cfg))
  return build_from(DATASETS, cfg, "dataset")


def build_split(data_cfg: Mapping[str, Any], split: str) -> CustomDataset:
  """``config.data[split]``, read from the packed copy when ``config.data.packed_dir`` is set
  (the split's pipeline is kept; its folder arguments are not needed)."""
  if data_cfg.get("packed_dir"):
    cfg = to_plain(data_cfg[split])
    return PackedDataset(cfg["pipeline"], data_cfg["packed_dir"], split=split,
                         test_mode=cfg.get("test_mode", False))
  return build_dataset(data_cfg[split])
