"""Pipeline helpers for segjax's own configs (pspnet_synthetic.py). Configs of mmseg's zoo are
mmseg's own files (configs/mmseg_configs), translated by segjax.convert.mmseg_config."""
from __future__ import annotations

from segjax.config import base_config, poly, schedule, sgd  # noqa: F401  (shared schema)

BN = dict(type="BN", requires_grad=True)
IMG_NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)


def train_pipeline(img_scale, crop_size, cat_max_ratio: float = 0.75, ratio_range=(0.5, 2.0),
                   reduce_zero_label: bool = False, img_norm=IMG_NORM) -> list[dict]:
  """mmseg's standard training pipeline (random resize, crop, flip, photometric, normalise, pad)."""
  return [
      dict(type="LoadImageFromFile"),
      dict(type="LoadAnnotations", reduce_zero_label=reduce_zero_label),
      dict(type="Resize", img_scale=tuple(img_scale), ratio_range=tuple(ratio_range)),
      dict(type="RandomCrop", crop_size=tuple(crop_size), cat_max_ratio=cat_max_ratio),
      dict(type="RandomFlip", prob=0.5),
      dict(type="PhotoMetricDistortion"),
      dict(type="Normalize", **img_norm),
      dict(type="Pad", size=tuple(crop_size), pad_val=0, seg_pad_val=255),
  ]


def test_pipeline(img_scale=None, img_norm=IMG_NORM) -> list[dict]:
  """mmseg's test pipeline: load the image, then ``MultiScaleFlipAug`` (one scale, no flip) around
  a keep-ratio resize to ``img_scale`` (the image's own size if None) and normalisation. Labels
  are not loaded: evaluation reads them from the label files at the original size, as mmseg."""
  return [dict(type="LoadImageFromFile"),
          dict(type="MultiScaleFlipAug", img_scale=None if img_scale is None else tuple(img_scale),
               img_ratios=[1.0] if img_scale is None else None, flip=False,
               transforms=[dict(type="Resize", keep_ratio=True), dict(type="RandomFlip"),
                           dict(type="Normalize", **img_norm), dict(type="ImageToTensor", keys=["img"]),
                           dict(type="Collect", keys=["img"])])]
