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
              # mmseg trained these configs on 4 GPUs: its global batch, which the loop compares
              # with samples_per_gpu x devices (results are comparable only when equal).
              mmseg_total_batch=4 * samples_per_gpu,
              packed_dir=config_dict.placeholder(str),  # tools/pack_dataset.py output, if used
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


def pascal_context(crop_size=(480, 480), classes: int = 60) -> dict:
  """_base_/datasets/pascal_context.py (60 classes) and pascal_context_59.py (background dropped
  via reduce_zero_label): images scaled to 520x520, 4 images per GPU."""
  return _data_block(
      "PascalContextDataset" if classes == 60 else "PascalContextDataset59", "data/VOCdevkit/VOC2010",
      dict(img_dir="JPEGImages", ann_dir="SegmentationClassContext",
           split="ImageSets/SegmentationContext/train.txt"),
      dict(img_dir="JPEGImages", ann_dir="SegmentationClassContext",
           split="ImageSets/SegmentationContext/val.txt"),
      samples_per_gpu=4, img_scale=(520, 520), crop_size=crop_size, reduce_zero_label=classes == 59)


def coco_stuff10k(crop_size=(512, 512)) -> dict:
  """_base_/datasets/coco-stuff10k.py: labels 1..171 (0 ignored via reduce_zero_label)."""
  return _data_block(
      "COCOStuffDataset", "data/coco_stuff10k",
      dict(img_dir="images/train2014", ann_dir="annotations/train2014", split="imagesLists/train.txt"),
      dict(img_dir="images/test2014", ann_dir="annotations/test2014", split="imagesLists/test.txt"),
      samples_per_gpu=4, img_scale=(2048, 512), crop_size=crop_size, reduce_zero_label=True)


def coco_stuff164k(crop_size=(512, 512)) -> dict:
  """_base_/datasets/coco-stuff164k.py: labels 0..170, 255 ignored."""
  return _data_block("COCOStuffDataset", "data/coco_stuff164k",
                     dict(img_dir="images/train2017", ann_dir="annotations/train2017"),
                     dict(img_dir="images/val2017", ann_dir="annotations/val2017"),
                     samples_per_gpu=4, img_scale=(2048, 512), crop_size=crop_size)


def _tiles(type, data_root, img_scale, crop_size, reduce_zero_label) -> dict:
  """The remote-sensing sets: img_dir/{train,val} and ann_dir/{train,val}, 4 images per GPU."""
  return _data_block(type, data_root, dict(img_dir="img_dir/train", ann_dir="ann_dir/train"),
                     dict(img_dir="img_dir/val", ann_dir="ann_dir/val"), samples_per_gpu=4,
                     img_scale=img_scale, crop_size=crop_size, reduce_zero_label=reduce_zero_label)


def loveda(crop_size=(512, 512)) -> dict:
  """_base_/datasets/loveda.py: 1024x1024 tiles, label 0 ignored."""
  return _tiles("LoveDADataset", "data/loveDA", (1024, 1024), crop_size, True)


def potsdam(crop_size=(512, 512)) -> dict:
  """_base_/datasets/potsdam.py: 512x512 clips, label 0 (boundary) ignored."""
  return _tiles("PotsdamDataset", "data/potsdam", (512, 512), crop_size, True)


def vaihingen(crop_size=(512, 512)) -> dict:
  """_base_/datasets/vaihingen.py: 512x512 clips, label 0 (boundary) ignored."""
  return _tiles("ISPRSDataset", "data/vaihingen", (512, 512), crop_size, True)


def isaid(crop_size=(896, 896)) -> dict:
  """_base_/datasets/isaid.py: 896x896 patches, 16 classes incl. background."""
  return _tiles("iSAIDDataset", "data/iSAID", (896, 896), crop_size, False)


def night_val(type, data_root, img_dir, ann_dir) -> dict:
  """Dark Zurich / Nighttime Driving: test sets for Cityscapes-trained models at 1920x1080."""
  return dict(type=type, data_root=data_root, img_dir=img_dir, ann_dir=ann_dir,
              pipeline=test_pipeline((1920, 1080)))


# name -> (data block for a crop size, number of classes); the name is mmseg's config suffix.
DATASETS = {
    "cityscapes": (cityscapes, 19), "ade20k": (ade20k, 150), "voc12aug": (voc12aug, 21),
    "pascal_context": (pascal_context, 60),
    "pascal_context_59": (lambda crop: pascal_context(crop, classes=59), 59),
    "coco-stuff10k": (coco_stuff10k, 171), "coco-stuff164k": (coco_stuff164k, 171),
    "loveda": (loveda, 7), "potsdam": (potsdam, 6), "vaihingen": (vaihingen, 6), "isaid": (isaid, 16),
}
# mmseg's ``*_dark.py`` / ``*_night_driving.py``: the Cityscapes config, tested on another set.
CITYSCAPES_TEST_SETS = {
    "dark": night_val("DarkZurichDataset", "data/dark_zurich", "rgb_anon/val/night", "gt/val/night"),
    "night_driving": night_val("NightDrivingDataset", "data/NighttimeDrivingTest",
                               "leftImg8bit/test/night", "gtCoarse_daytime_trainvaltest/test/night"),
}


# ------------------------------------------------------------------- mmseg's _base_/models

def resnet_v1c(depth: int, output_stride: int = 8, v1b: bool = False, multi_grid=None) -> dict:
  """ResNetV1c with mmseg's dilation for output stride 8 (dilations 1,1,2,4; strides 1,2,1,1),
  16 (1,1,1,2; 1,2,2,1) or 32 (plain, for UPerNet); ``v1b`` is mmseg's 'rXb' (torchvision-style
  ResNet with a 7x7 stem); ``multi_grid`` the last stage's unit rates ('mg124')."""
  dilations, strides = {8: ((1, 1, 2, 4), (1, 2, 1, 1)), 16: ((1, 1, 1, 2), (1, 2, 2, 1)),
                        32: ((1, 1, 1, 1), (1, 2, 2, 2))}[output_stride]
  backbone = dict(type="ResNet" if v1b else "ResNetV1c", depth=depth, num_stages=4,
                  out_indices=(0, 1, 2, 3), dilations=dilations, strides=strides, norm_cfg=BN,
                  norm_eval=False, style="pytorch", contract_dilation=True)
  if multi_grid:
    backbone["multi_grid"] = tuple(multi_grid)
  return backbone


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
  """'r101b-d8_769x769_80k' -> depth 101, v1b, output stride 8, crop (769, 769), 80k iterations.
  UPerNet names have no '-d8' ('r50_512x1024_40k'); FCN-D6 names start with the head dilation
  ('d6_r50-d16_512x1024_40k'); 'r101-d16-mg124' adds multi-grid; some names carry mmseg's GPUs x
  images token ('r50-d8_512x512_4x4_20k', 'r18-d8_4x4_512x512_80k'), which the data block sets."""
  form = "[d<dilation>_]r<depth>[b][-d8|-d16][-mg124][_4x4]_<H>x<W>[_4x4]_<N>k"
  tokens = variant.split("_")
  head_dilation = int(tokens.pop(0)[1:]) if tokens[0][:1] == "d" and tokens[0][1:].isdigit() else 1
  try:
    backbone, *sizes, iters = tokens
    name, *mods = backbone.split("-")
    depth = int(name[1:].rstrip("b"))
    dims = [tuple(int(v) for v in size.split("x")) for size in sizes]
    (h, w), = [d for d in dims if min(d) >= 64]  # the crop; '4x4' is GPUs x images
    total = int(iters.rstrip("k")) * 1000
  except ValueError:
    raise ValueError(f"variant {variant!r} is not of the form {form}") from None
  output_stride, multi_grid = 32, None
  for mod in mods:
    if mod in ("d8", "d16"):
      output_stride = int(mod[1:])
    elif mod == "mg124":
      multi_grid = (1, 2, 4)
    else:
      raise ValueError(f"variant {variant!r}: unknown backbone modifier {mod!r} (form {form})")
  return dict(depth=depth, v1b=name.endswith("b"), output_stride=output_stride,
              multi_grid=multi_grid, head_dilation=head_dilation, crop=(h, w), total_iters=total)


def mmseg_config(algo: str, dataset: str, variant: str, published_miou) -> ml_collections.ConfigDict:
  """The segjax config equal to mmseg's ``configs/<algo>/<algo>_<variant>_<dataset>.py``;
  ``published_miou`` maps the file's variants to mmseg's published single-scale mIoU."""
  if variant not in published_miou:
    raise ValueError(f"{algo}_{dataset} has no variant {variant!r}; available: {', '.join(published_miou)}")
  v = parse_variant(variant)
  data_fn, num_classes = DATASETS["cityscapes" if dataset in CITYSCAPES_TEST_SETS else dataset]
  width = 512 if v["depth"] in (18, 34) else 2048
  slide_769 = v["crop"] == (769, 769)  # mmseg's 769x769 configs: align_corners and slide test
  context = dataset.startswith("pascal_context")  # slide test with 480 crops, lr 0.004, wd 1e-4
  test_cfg = dict(mode="whole")
  if slide_769:
    test_cfg = dict(mode="slide", crop_size=(769, 769), stride=(513, 513))
  elif context:
    test_cfg = dict(mode="slide", crop_size=(480, 480), stride=(320, 320))
  head = decode_head(algo, width, num_classes, slide_769)
  aux = fcn_aux_head(width // 2, 64 if width == 512 else 256, num_classes, slide_769)
  if v["head_dilation"] != 1:  # FCN-D6
    head["dilation"] = aux["dilation"] = v["head_dilation"]
  if v["multi_grid"]:  # mmseg's r101-d16-mg124 configs: smaller ASPP rates and OHEM by loss
    head.update(dilations=(1, 6, 12, 18), sampler=dict(type="OHEMPixelSampler", min_kept=100000))
  model = dict(
      type="EncoderDecoder", pretrained=config_dict.placeholder(str),
      backbone=resnet_v1c(v["depth"], v["output_stride"], v["v1b"], v["multi_grid"]),
      decode_head=head, auxiliary_head=aux, train_cfg=dict(), test_cfg=test_cfg)
  c = base_config()
  c.model = model
  c.data = data_fn(v["crop"])
  if dataset in CITYSCAPES_TEST_SETS:
    c.data.val = CITYSCAPES_TEST_SETS[dataset]
  c.update(schedule(v["total_iters"]))
  if context:
    c.optimizer = sgd(lr=0.004, weight_decay=1e-4)
  c.lock()
  return c
