"""Shared config pieces as plain functions (mmseg's ``_base_`` files, without inheritance magic)."""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

BN = dict(type="BN", requires_grad=True)
IMG_NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)


def sgd(lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4) -> dict:
  """mmseg's default optimizer: SGD lr 0.01, momentum 0.9, weight decay 5e-4 (added to the gradient)."""
  return dict(type="SGD", lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=False)


def poly(power: float = 0.9, min_lr: float = 1e-4) -> dict:
  """mmseg's ``lr_config = dict(policy='poly', power=0.9, min_lr=1e-4, by_epoch=False)``."""
  return dict(policy="poly", power=power, min_lr=min_lr, by_epoch=False)


def schedule(total_iters: int) -> dict:
  """mmseg's schedule_{20,40,80,160}k: evaluate and checkpoint every tenth of the run."""
  return dict(total_iters=total_iters, evaluation=dict(interval=total_iters // 10, metric="mIoU"),
              checkpoint=dict(interval=total_iters // 10, max_to_keep=3))


SCHEDULES = {name: schedule(iters) for name, iters in
             (("20k", 20000), ("40k", 40000), ("80k", 80000), ("160k", 160000))}


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


def test_pipeline(img_scale=None, reduce_zero_label: bool = False, img_norm=IMG_NORM) -> list[dict]:
  """Load, resize to ``img_scale`` keeping the ratio (if given), normalise."""
  steps = [dict(type="LoadImageFromFile"),
           dict(type="LoadAnnotations", reduce_zero_label=reduce_zero_label)]
  if img_scale is not None:
    steps.append(dict(type="Resize", img_scale=tuple(img_scale), keep_ratio=True))
  steps.append(dict(type="Normalize", **img_norm))
  return steps


def base_config() -> ml_collections.ConfigDict:
  """Fields every config has; a config fills model/data/schedule and returns it locked."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.optimizer = sgd()
  c.optimizer_config = dict(grad_clip=dict(max_norm=config_dict.placeholder(float)))
  c.lr_config = poly()
  c.log_interval = 50
  # A workdir's own checkpoints resume automatically; load_from only initialises weights.
  c.load_from = config_dict.placeholder(str)
  c.distributed = dict(enabled=False, coordinator_address=config_dict.placeholder(str),
                       num_processes=config_dict.placeholder(int),
                       process_id=config_dict.placeholder(int))
  return c
