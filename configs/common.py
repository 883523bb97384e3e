"""Shared config pieces as plain functions (mmseg's ``_base_`` files, without inheritance magic)."""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

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


def test_pipeline(img_scale=None, reduce_zero_label: bool = False, img_norm=IMG_NORM) -> list[dict]:
  """Load, resize to ``img_scale`` keeping the ratio (if given), normalise."""
  steps = [dict(type="LoadImageFromFile"),
           dict(type="LoadAnnotations", reduce_zero_label=reduce_zero_label)]
  if img_scale is not None:
    steps.append(dict(type="Resize", img_scale=tuple(img_scale), keep_ratio=True))
  steps.append(dict(type="Normalize", **img_norm))
  return steps


# ----------------------------------------------------------------- mmseg's _base_/datasets

def _data_block(type, data_root, train, val, samples_per_gpu, img_scale, crop_size,
                reduce_zero_label=False, **extra):
  train_pipe = train_pipeline(img_scale, crop_size, reduce_zero_label=reduce_zero_label)
  test_pipe = test_pipeline(img_scale, reduce_zero_label=reduce_zero_label)
  common_kw = dict(type=type, data_root=data_root, **extra)
  return dict(samples_per_gpu=samples_per_gpu, workers_per_gpu=2, check_samples=64,
              train=dict(common_kw, pipeline=train_pipe, **train),
              val=dict(common_kw, pipeline=test_pipe, **val))


def cityscapes(crop_size=(512, 1024)) -> dict:
  """_base_/datasets/cityscapes.py (and cityscapes_769x769.py): 2 images per GPU."""
  return _data_block("CityscapesDataset", "data/cityscapes",
                     dict(img_dir="leftImg8bit/train", ann_dir="gtFine/train"),
                     dict(img_dir="leftImg8bit/val", ann_dir="gtFine/val"),
                     samples_per_gpu=2, img_scale=(2048, 1024), crop_size=crop_size)


def ade20k(crop_size=(512, 512)) -> dict:
  """_base_/datasets/ade20k.py: 4 images per GPU, reduce_zero_label."""
  return _data_block("ADE20KDataset", "data/ade/ADEChallengeData2016",
                     dict(img_dir="images/training", ann_dir="annotations/training"),
                     dict(img_dir="images/validation", ann_dir="annotations/validation"),
                     samples_per_gpu=4, img_scale=(2048, 512), crop_size=crop_size,
                     reduce_zero_label=True)


def voc12aug(crop_size=(512, 512)) -> dict:
  """_base_/datasets/pascal_voc12_aug.py: VOC 2012 train + SBD aug, 4 images per GPU."""
  return _data_block(
      "PascalVOCDataset", "data/VOCdevkit/VOC2012",
      dict(img_dir="JPEGImages", ann_dir=["SegmentationClass", "SegmentationClassAug"],
           split=["ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/aug.txt"]),
      dict(img_dir="JPEGImages", ann_dir="SegmentationClass", split="ImageSets/Segmentation/val.txt"),
      samples_per_gpu=4, img_scale=(2048, 512), crop_size=crop_size)


DATASETS = {"cityscapes": (cityscapes, 19), "ade20k": (ade20k, 150), "voc12aug": (voc12aug, 21)}


# ------------------------------------------------------------------- mmseg's _base_/models

def resnet_v1c(depth: int, dilated: bool = True, v1b: bool = False) -> dict:
  """ResNetV1c-D8 (dilations 1,1,2,4; strides 1,2,1,1) or the plain stride-32 ResNet for UPerNet;
  ``v1b`` is mmseg's 'rXb' (torchvision-style ResNet with a 7x7 stem)."""
  return dict(type="ResNet" if v1b else "ResNetV1c", depth=depth, num_stages=4,
              out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4) if dilated else (1, 1, 1, 1),
              strides=(1, 2, 1, 1) if dilated else (1, 2, 2, 2), norm_cfg=BN, norm_eval=False,
              style="pytorch", contract_dilation=True)


def _ce(weight: float) -> dict:
  return dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=weight)


def fcn_aux_head(in_channels: int, channels: int, num_classes: int, align_corners: bool) -> dict:
  return dict(type="FCNHead", in_channels=in_channels, in_index=2, channels=channels, num_convs=1,
              concat_input=False, dropout_ratio=0.1, num_classes=num_classes, norm_cfg=BN,
              align_corners=align_corners, loss_decode=_ce(0.4))


def decode_head(algo: str, width: int, num_classes: int, align_corners: bool) -> dict:
  """The decode head of mmseg's ``_base_/models/<algo>_r50-d8.py`` for a backbone whose last
  stage has ``width`` channels (2048 for R50/R101, 512 for R18)."""
  small = width == 512
  channels = 128 if small else 512
  head = dict(dropout_ratio=0.1, num_classes=num_classes, norm_cfg=BN, align_corners=align_corners,
              loss_decode=_ce(1.0))
  if algo == "fcn":
    return dict(head, type="FCNHead", in_channels=width, in_index=3, channels=channels,
                num_convs=2, concat_input=True)
  if algo == "pspnet":
    return dict(head, type="PSPHead", in_channels=width, in_index=3, channels=channels,
                pool_scales=(1, 2, 3, 6))
  if algo == "deeplabv3":
    return dict(head, type="ASPPHead", in_channels=width, in_index=3, channels=channels,
                dilations=(1, 12, 24, 36))
  if algo == "deeplabv3plus":
    return dict(head, type="DepthwiseSeparableASPPHead", in_channels=width, in_index=3,
                channels=channels, dilations=(1, 12, 24, 36), c1_in_channels=width // 8,
                c1_channels=12 if small else 48)
  if algo == "upernet":
    return dict(head, type="UPerHead", in_channels=tuple(width // 8 * 2**i for i in range(4)),
                in_index=(0, 1, 2, 3), pool_scales=(1, 2, 3, 6), channels=channels)
  raise ValueError(f"unknown algorithm {algo!r}")


def parse_variant(variant: str) -> dict:
  """'r101b-d8_769x769_80k' -> depth 101, v1b, dilated, crop (769, 769), 80k iterations.
  UPerNet names have no '-d8' ('r50_512x1024_40k')."""
  try:
    backbone, crop, iters = variant.split("_")
    depth = int(backbone[1:].split("-")[0].rstrip("b"))
    h, w = (int(v) for v in crop.split("x"))
    total = int(iters.rstrip("k")) * 1000
  except ValueError:
    raise ValueError(f"variant {variant!r} is not of the form r<depth>[b][-d8]_<H>x<W>_<N>k") from None
  return dict(depth=depth, v1b=backbone.split("-")[0].endswith("b"), dilated="-d8" in backbone,
              crop=(h, w), total_iters=total)


def mmseg_config(algo: str, dataset: str, variant: str, variants) -> ml_collections.ConfigDict:
  """The segjax config equal to mmseg's ``configs/<algo>/<algo>_<variant>_<dataset>.py``."""
  if variant not in variants:
    raise ValueError(f"{algo}_{dataset} has no variant {variant!r}; available: {', '.join(variants)}")
  v = parse_variant(variant)
  data_fn, num_classes = DATASETS[dataset]
  width = 512 if v["depth"] in (18, 34) else 2048
  slide_769 = v["crop"] == (769, 769)  # mmseg's 769x769 configs: align_corners and slide test
  model = dict(
      type="EncoderDecoder", pretrained=config_dict.placeholder(str),
      backbone=resnet_v1c(v["depth"], dilated=(algo != "upernet"), v1b=v["v1b"]),
      decode_head=decode_head(algo, width, num_classes, slide_769),
      auxiliary_head=fcn_aux_head(width // 2, 64 if width == 512 else 256, num_classes, slide_769),
      train_cfg=dict(),
      test_cfg=dict(mode="slide", crop_size=(769, 769), stride=(513, 513)) if slide_769 else dict(mode="whole"))
  c = base_config()
  c.model = model
  c.data = data_fn(v["crop"])
  c.update(schedule(v["total_iters"]))
  c.lock()
  return c
