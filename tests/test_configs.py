"""Configs: every mmseg config file translates, the 37 short-name files are mmseg's files, the
zoo tables are generated from mmseg's metafiles. Expected values come from mmseg's config files
and metafiles (read here) or from the documented naming rules, never from segjax's output."""
import filecmp
import glob
import importlib
import os
import subprocess
import sys

import pytest

from conftest import ROOT, SHARED
from configs import zoo
from segjax.config import load_config
from segjax.convert.mmseg_config import config_from_file, load_mmseg_config, mmseg_total_batch

MMSEG = os.path.join(ROOT, "configs", "mmseg_configs")

# The variant strings configs/<algo>_<dataset>.py accepted before they became short names for
# mmseg's files (the first is each file's default); users' commands keep working with all of them.
OLD_VARIANTS = {
    "deeplabv3_ade20k": (
        "r50-d8_512x512_80k", "r101-d8_512x512_80k", "r50-d8_512x512_160k", "r101-d8_512x512_160k",),
    "deeplabv3_cityscapes": (
        "r50-d8_512x1024_40k", "r101-d8_512x1024_40k", "r50-d8_769x769_40k", "r101-d8_769x769_40k",
        "r18-d8_512x1024_80k", "r50-d8_512x1024_80k", "r101-d8_512x1024_80k", "r18-d8_769x769_80k",
        "r50-d8_769x769_80k", "r101-d8_769x769_80k", "r18b-d8_512x1024_80k", "r50b-d8_512x1024_80k",
        "r101b-d8_512x1024_80k", "r18b-d8_769x769_80k", "r50b-d8_769x769_80k",
        "r101b-d8_769x769_80k", "r101-d16-mg124_512x1024_40k", "r101-d16-mg124_512x1024_80k",),
    "deeplabv3_coco_stuff10k": (
        "r50-d8_512x512_4x4_20k", "r101-d8_512x512_4x4_20k", "r50-d8_512x512_4x4_40k",
        "r101-d8_512x512_4x4_40k",),
    "deeplabv3_coco_stuff164k": (
        "r50-d8_512x512_4x4_80k", "r101-d8_512x512_4x4_80k", "r50-d8_512x512_4x4_160k",
        "r101-d8_512x512_4x4_160k", "r50-d8_512x512_4x4_320k", "r101-d8_512x512_4x4_320k",),
    "deeplabv3_pascal_context": (
        "r101-d8_480x480_40k", "r101-d8_480x480_80k",),
    "deeplabv3_pascal_context_59": (
        "r101-d8_480x480_40k", "r101-d8_480x480_80k",),
    "deeplabv3_voc12aug": (
        "r50-d8_512x512_20k", "r101-d8_512x512_20k", "r50-d8_512x512_40k", "r101-d8_512x512_40k",),
    "deeplabv3plus_ade20k": (
        "r50-d8_512x512_80k", "r101-d8_512x512_80k", "r50-d8_512x512_160k", "r101-d8_512x512_160k",),
    "deeplabv3plus_cityscapes": (
        "r50-d8_512x1024_40k", "r101-d8_512x1024_40k", "r50-d8_769x769_40k", "r101-d8_769x769_40k",
        "r18-d8_512x1024_80k", "r50-d8_512x1024_80k", "r101-d8_512x1024_80k", "r18-d8_769x769_80k",
        "r50-d8_769x769_80k", "r101-d8_769x769_80k", "r18b-d8_512x1024_80k", "r50b-d8_512x1024_80k",
        "r101b-d8_512x1024_80k", "r18b-d8_769x769_80k", "r50b-d8_769x769_80k",
        "r101b-d8_769x769_80k", "r101-d16-mg124_512x1024_40k", "r101-d16-mg124_512x1024_80k",),
    "deeplabv3plus_isaid": (
        "r18-d8_4x4_896x896_80k", "r50-d8_4x4_896x896_80k",),
    "deeplabv3plus_loveda": (
        "r18-d8_512x512_80k", "r50-d8_512x512_80k", "r101-d8_512x512_80k",),
    "deeplabv3plus_pascal_context": (
        "r101-d8_480x480_40k", "r101-d8_480x480_80k",),
    "deeplabv3plus_pascal_context_59": (
        "r101-d8_480x480_40k", "r101-d8_480x480_80k",),
    "deeplabv3plus_potsdam": (
        "r18-d8_512x512_80k", "r50-d8_512x512_80k", "r101-d8_512x512_80k",),
    "deeplabv3plus_vaihingen": (
        "r18-d8_4x4_512x512_80k", "r50-d8_4x4_512x512_80k", "r101-d8_4x4_512x512_80k",),
    "deeplabv3plus_voc12aug": (
        "r50-d8_512x512_20k", "r101-d8_512x512_20k", "r50-d8_512x512_40k", "r101-d8_512x512_40k",),
    "fcn_ade20k": (
        "r50-d8_512x512_80k", "r101-d8_512x512_80k", "r50-d8_512x512_160k", "r101-d8_512x512_160k",),
    "fcn_cityscapes": (
        "r50-d8_512x1024_40k", "r101-d8_512x1024_40k", "r50-d8_769x769_40k", "r101-d8_769x769_40k",
        "r18-d8_512x1024_80k", "r50-d8_512x1024_80k", "r101-d8_512x1024_80k", "r18-d8_769x769_80k",
        "r50-d8_769x769_80k", "r101-d8_769x769_80k", "r18b-d8_512x1024_80k", "r50b-d8_512x1024_80k",
        "r101b-d8_512x1024_80k", "r18b-d8_769x769_80k", "r50b-d8_769x769_80k",
        "r101b-d8_769x769_80k", "d6_r50-d16_512x1024_40k", "d6_r50-d16_512x1024_80k",
        "d6_r50-d16_769x769_40k", "d6_r50-d16_769x769_80k", "d6_r101-d16_512x1024_40k",
        "d6_r101-d16_512x1024_80k", "d6_r101-d16_769x769_40k", "d6_r101-d16_769x769_80k",
        "d6_r50b-d16_512x1024_80k", "d6_r50b-d16_769x769_80k", "d6_r101b-d16_512x1024_80k",
        "d6_r101b-d16_769x769_80k",),
    "fcn_pascal_context": (
        "r101-d8_480x480_40k", "r101-d8_480x480_80k",),
    "fcn_pascal_context_59": (
        "r101-d8_480x480_40k", "r101-d8_480x480_80k",),
    "fcn_voc12aug": (
        "r50-d8_512x512_20k", "r101-d8_512x512_20k", "r50-d8_512x512_40k", "r101-d8_512x512_40k",),
    "pspnet_ade20k": (
        "r50-d8_512x512_80k", "r101-d8_512x512_80k", "r50-d8_512x512_160k", "r101-d8_512x512_160k",),
    "pspnet_cityscapes": (
        "r50-d8_512x1024_40k", "r101-d8_512x1024_40k", "r50-d8_769x769_40k", "r101-d8_769x769_40k",
        "r18-d8_512x1024_80k", "r50-d8_512x1024_80k", "r101-d8_512x1024_80k", "r18-d8_769x769_80k",
        "r50-d8_769x769_80k", "r101-d8_769x769_80k", "r18b-d8_512x1024_80k", "r50b-d8_512x1024_80k",
        "r101b-d8_512x1024_80k", "r18b-d8_769x769_80k", "r50b-d8_769x769_80k",
        "r101b-d8_769x769_80k",),
    "pspnet_coco_stuff10k": (
        "r50-d8_512x512_4x4_20k", "r101-d8_512x512_4x4_20k", "r50-d8_512x512_4x4_40k",
        "r101-d8_512x512_4x4_40k",),
    "pspnet_coco_stuff164k": (
        "r50-d8_512x512_4x4_80k", "r101-d8_512x512_4x4_80k", "r50-d8_512x512_4x4_160k",
        "r101-d8_512x512_4x4_160k", "r50-d8_512x512_4x4_320k", "r101-d8_512x512_4x4_320k",),
    "pspnet_dark": (
        "r50-d8_512x1024_40k", "r101-d8_512x1024_40k", "r101b-d8_512x1024_80k",),
    "pspnet_isaid": (
        "r18-d8_4x4_896x896_80k", "r50-d8_4x4_896x896_80k",),
    "pspnet_loveda": (
        "r18-d8_512x512_80k", "r50-d8_512x512_80k", "r101-d8_512x512_80k",),
    "pspnet_night_driving": (
        "r50-d8_512x1024_40k", "r101-d8_512x1024_40k", "r101b-d8_512x1024_80k",),
    "pspnet_pascal_context": (
        "r101-d8_480x480_40k", "r101-d8_480x480_80k",),
    "pspnet_pascal_context_59": (
        "r101-d8_480x480_40k", "r101-d8_480x480_80k",),
    "pspnet_potsdam": (
        "r18-d8_4x4_512x512_80k", "r50-d8_4x4_512x512_80k", "r101-d8_4x4_512x512_80k",),
    "pspnet_vaihingen": (
        "r18-d8_4x4_512x512_80k", "r50-d8_4x4_512x512_80k", "r101-d8_4x4_512x512_80k",),
    "pspnet_voc12aug": (
        "r50-d8_512x512_20k", "r101-d8_512x512_20k", "r50-d8_512x512_40k", "r101-d8_512x512_40k",),
    "upernet_ade20k": (
        "r50_512x512_80k", "r101_512x512_80k", "r50_512x512_160k", "r101_512x512_160k",),
    "upernet_cityscapes": (
        "r50_512x1024_40k", "r101_512x1024_40k", "r50_769x769_40k", "r101_769x769_40k",
        "r50_512x1024_80k", "r101_512x1024_80k", "r50_769x769_80k", "r101_769x769_80k",),
    "upernet_voc12aug": (
        "r50_512x512_20k", "r101_512x512_20k", "r50_512x512_40k", "r101_512x512_40k",),
}


# The file-name rule: configs/<algo>_<dataset>.py:<variant> is mmseg's
# <algo>/<algo>_<variant>_<dataset>.py, with COCO-Stuff spelt as mmseg spells it.
MMSEG_DATASET = {"coco_stuff10k": "coco-stuff10k", "coco_stuff164k": "coco-stuff164k"}


def mmseg_file(short: str, variant: str) -> str:
  algo, dataset = short.split("_", 1)
  return os.path.join(MMSEG, algo, f"{algo}_{variant}_{MMSEG_DATASET.get(dataset, dataset)}.py")


@pytest.mark.parametrize("short", sorted(OLD_VARIANTS))
def test_old_variant_strings_are_mmseg_files_translated(short):
  module = importlib.import_module(f"configs.{short}")
  for variant in OLD_VARIANTS[short]:
    assert module.get_config(variant).to_dict() == config_from_file(mmseg_file(short, variant)).to_dict()
  assert module.get_config().to_dict() == module.get_config(OLD_VARIANTS[short][0]).to_dict()


def test_short_name_docstrings_state_the_default_command_and_its_published_miou():
  for short in OLD_VARIANTS:
    doc = importlib.import_module(f"configs.{short}").__doc__
    default = OLD_VARIANTS[short][0]
    assert f"--config=configs/{short}.py:{default} " in doc
    config = os.path.relpath(mmseg_file(short, default), MMSEG)
    entry, = [e for e in zoo.entries() if e.config == config]
    assert f"Expected result: {default}: mIoU {entry.single_scale:.2f}." in doc, short


def test_unknown_variant_lists_the_available_ones():
  from configs import pspnet_cityscapes
  with pytest.raises(ValueError, match="r50-d8_512x1024_40k"):
    pspnet_cityscapes.get_config("r50-d8_1x1_1k")


def test_canonical_config_keeps_mmseg_settings():
  c = load_config("configs/pspnet_cityscapes.py")
  assert c.model.backbone.type == "ResNetV1c" and c.model.backbone.depth == 50
  assert c.model.decode_head.type == "PSPHead" and c.model.decode_head.num_classes == 19
  assert c.data.train.pipeline[3] == dict(type="RandomCrop", crop_size=(512, 1024), cat_max_ratio=0.75)
  assert c.total_iters == 40000 and c.evaluation.interval == 4000 and c.checkpoint.interval == 4000
  assert (c.optimizer.type, c.optimizer.lr, c.optimizer.momentum, c.optimizer.weight_decay) == \
      ("SGD", 0.01, 0.9, 0.0005)
  assert (c.lr_config.policy, c.lr_config.power, c.lr_config.min_lr) == ("poly", 0.9, 1e-4)
  assert c.model.test_cfg.mode == "whole"
  assert c.data.samples_per_gpu == 2 and c.data.mmseg_total_batch == 8  # 4 GPUs x 2
  assert c.model.pretrained == "open-mmlab://resnet50_v1c"  # mmseg's model dict, unchanged


def test_769_variant_aligns_corners_and_slides():
  from configs import pspnet_cityscapes
  c = pspnet_cityscapes.get_config("r101-d8_769x769_80k")
  assert c.model.backbone.depth == 101 and c.total_iters == 80000
  assert c.model.decode_head.align_corners and c.model.auxiliary_head.align_corners
  assert c.model.test_cfg.mode == "slide"
  assert tuple(c.model.test_cfg.crop_size) == (769, 769) and tuple(c.model.test_cfg.stride) == (513, 513)
  assert c.data.train.pipeline[3]["crop_size"] == (769, 769)
  c = pspnet_cityscapes.get_config("r18b-d8_512x1024_80k")
  assert c.model.backbone.type == "ResNet" and c.model.decode_head.channels == 128


def test_dataset_specific_settings_follow_mmseg():
  from configs import pspnet_coco_stuff10k, pspnet_dark, pspnet_isaid, pspnet_pascal_context_59
  c = pspnet_pascal_context_59.get_config("r101-d8_480x480_80k")
  assert c.model.decode_head.num_classes == 59 and c.data.train.type == "PascalContextDataset59"
  assert c.model.test_cfg.mode == "slide" and tuple(c.model.test_cfg.stride) == (320, 320)
  assert c.optimizer.lr == 0.004 and c.optimizer.weight_decay == 1e-4 and c.total_iters == 80000
  assert c.data.train.pipeline[1]["reduce_zero_label"]
  c = pspnet_coco_stuff10k.get_config("r101-d8_512x512_4x4_40k")  # mmseg's 4x4 (GPUs x images) token
  assert c.data.samples_per_gpu == 4 and c.model.decode_head.num_classes == 171 and c.total_iters == 40000
  assert c.data.mmseg_total_batch == 16
  c = pspnet_isaid.get_config("r18-d8_4x4_896x896_80k")
  assert c.data.train.pipeline[3]["crop_size"] == (896, 896) and c.model.decode_head.channels == 128
  # Trained on Cityscapes, tested on Dark Zurich: mmseg's file sets data.test (what its
  # tools/test.py evaluates); data.val stays Cityscapes, as mmseg evaluates during training.
  c = pspnet_dark.get_config("r101b-d8_512x1024_80k")
  assert c.data.train.type == "CityscapesDataset" and c.data.test.type == "DarkZurichDataset"
  assert c.data.val.type == "CityscapesDataset"


def test_mmseg_py_by_relative_path_bare_name_and_any_path(tmp_path, monkeypatch):
  rel = "pspnet/pspnet_r50-d8_512x1024_40k_cityscapes.py"
  expected = config_from_file(os.path.join(MMSEG, rel)).to_dict()
  spec = os.path.join(ROOT, "configs", "mmseg.py")
  assert load_config(f"{spec}:{rel}").to_dict() == expected
  assert load_config(f"{spec}:pspnet_r50-d8_512x1024_40k_cityscapes").to_dict() == expected
  assert load_config(f"{spec}:pspnet_r50-d8_512x1024_40k_cityscapes.py").to_dict() == expected
  assert load_config(os.path.join(MMSEG, rel)).to_dict() == expected  # tools take the file itself
  # A user's own mmseg-style file: absolute path, or relative to the current directory.
  user = tmp_path / "my_pspnet.py"
  user.write_text(f"_base_ = [{os.path.join(MMSEG, rel)!r}]\noptimizer = dict(lr=0.02)\n")
  c = load_config(f"{spec}:{user}")
  assert c.optimizer.lr == 0.02 and c.model.to_dict() == expected["model"]
  monkeypatch.chdir(tmp_path)
  assert load_config(f"{spec}:my_pspnet.py").optimizer.lr == 0.02
  with pytest.raises(FileNotFoundError, match="pspnet_r50-d8_512x1024_40k_cityscapes"):
    load_config(f"{spec}:pspnet_r50-d8_512x1024_40k_citiscapes")
  with pytest.raises(ValueError, match="no get_config"):
    load_config(f"{user}:r50")


def test_unknown_top_level_key_is_named_with_its_file(tmp_path):
  base = os.path.join(MMSEG, "pspnet", "pspnet_r50-d8_512x1024_40k_cityscapes.py")
  typo = tmp_path / "typo.py"
  typo.write_text(f"_base_ = [{base!r}]\noptimzer = dict(type='SGD', lr=0.1)\n")
  with pytest.raises(ValueError, match=r"typo\.py: top-level key 'optimzer'"):
    config_from_file(str(typo))
  # Helper variables used to build the translated keys are mmseg's idiom, not unknown keys.
  helper = tmp_path / "helper.py"
  helper.write_text(f"_base_ = [{base!r}]\nmy_stride = (300, 300)\n"
                    "model = dict(test_cfg=dict(mode='slide', crop_size=(512, 512), stride=my_stride))\n")
  assert tuple(config_from_file(str(helper)).model.test_cfg.stride) == (300, 300)


def test_every_mmseg_config_translates():
  files = sorted(glob.glob(os.path.join(MMSEG, "*", "*.py")))
  files = [f for f in files if os.path.basename(os.path.dirname(f)) != "_base_"]
  assert len(files) == 644
  for path in files:
    raw = load_mmseg_config(path)
    c = config_from_file(path)
    max_iters = raw["runner"]["max_iters"] if "runner" in raw else raw["total_iters"]
    assert c.total_iters == max_iters and c.evaluation.interval == raw["evaluation"]["interval"], path
    assert c.model.to_dict() == raw["model"], path  # mmseg's model dict, unchanged
    assert c.checkpoint.interval == raw["checkpoint_config"]["interval"], path
    assert c.log_interval == raw["log_config"]["interval"], path
    assert {"train", "val", "test"} <= set(c.data), path


def test_translation_of_mmseg_schedule_and_optimizer_keys():
  def both(rel):
    path = os.path.join(MMSEG, rel)
    return load_mmseg_config(path), config_from_file(path)
  raw, c = both("segformer/segformer_mit-b0_512x512_160k_ade20k.py")
  assert c.optimizer.to_dict() == raw["optimizer"]  # AdamW with paramwise_cfg, as written
  for key in ("warmup", "warmup_iters", "warmup_ratio", "power", "min_lr"):
    assert c.lr_config[key] == raw["lr_config"][key]
  assert c.data.mmseg_total_batch == 4 * raw["data"]["samples_per_gpu"]  # no GxS token: 4 GPUs
  raw, c = both("convnext/upernet_convnext_tiny_fp16_512x512_160k_ade20k.py")
  assert c.optimizer.constructor == raw["optimizer"]["constructor"]
  assert c.optimizer.paramwise_cfg.to_dict() == raw["optimizer"]["paramwise_cfg"]
  assert c.compute_dtype == "float32"  # mmseg's fp16 is not carried over (README: bfloat16)
  raw, c = both("knet/knet_s3_fcn_r50-d8_8x2_512x512_adamw_80k_ade20k.py")
  assert c.optimizer_config.grad_clip.max_norm == raw["optimizer_config"]["grad_clip"]["max_norm"]
  assert c.data.mmseg_total_batch == 16  # 8 GPUs x 2
  raw, c = both("beit/upernet_beit-large_fp16_8x1_640x640_160k_ade20k.py")
  assert c.optimizer_config.cumulative_iters == raw["optimizer_config"]["cumulative_iters"]
  raw, c = both("cgnet/cgnet_512x1024_60k_cityscapes.py")  # no runner: mmseg uses total_iters
  assert "runner" not in raw and c.total_iters == raw["total_iters"]
  raw, c = both("deeplabv3plus/deeplabv3plus_r101_512x512_C-CM+C-WO-NatOcc-SOT.py")
  assert c.data.train.type == "ConcatDataset" and len(c.data.train.datasets) == len(raw["data"]["train"])
  assert c.data.test.to_dict() == c.data.val.to_dict()  # no data.test in the file: val


def test_mmseg_total_batch_rule():
  assert mmseg_total_batch("pspnet_r50-d8_512x1024_40k_cityscapes", 2) == 8  # 4 GPUs x 2
  assert mmseg_total_batch("pspnet_r50-d8_512x512_4x4_20k_coco-stuff10k", 4) == 16
  assert mmseg_total_batch("segformer_mit-b0_8x1_1024x1024_160k_cityscapes", 1) == 8
  assert mmseg_total_batch("ocrnet_r101-d8_512x1024_40k_b16_cityscapes", 2) == 16
  assert mmseg_total_batch("fcn_unet_s5-d16_64x64_40k_drive", 4) == 16  # 64x64 is a crop


def test_mmseg_pipelines_run_on_segjax_datasets(tiny_dataset):
  """mmseg's standard cityscapes pipelines (MultiScaleFlipAug with ImageToTensor/Collect,
  DefaultFormatBundle) through segjax's loaders, scaled down to the 64 px test images."""
  from segjax.data import loader
  from segjax.data.datasets import build_dataset
  base = load_mmseg_config(os.path.join(MMSEG, "_base_", "datasets", "cityscapes.py"))
  train, test = base["train_pipeline"], base["test_pipeline"]
  train[2]["img_scale"], train[3]["crop_size"], train[7]["size"] = (128, 64), (32, 32), (32, 32)
  test[1]["img_scale"] = (128, 64)
  folders = lambda split: dict(type="SyntheticDataset", data_root=tiny_dataset,
                               img_dir=f"img_dir/{split}", ann_dir=f"ann_dir/{split}")
  batch = next(iter(loader.train_loader(build_dataset(dict(folders("train"), pipeline=train)), 2, 0)))
  assert batch["img"].shape == (2, 32, 32, 3) and batch["gt_semantic_seg"].shape == (2, 32, 32)
  val = build_dataset(dict(folders("val"), pipeline=test))
  batch = next(loader.eval_batches(val, 2))
  assert batch["img"].shape == (2, 64, 64, 3) and batch["gt_semantic_seg"].shape == (2, 64, 64)


def test_dataset_lists_are_concat_datasets(tiny_dataset, tmp_path):
  """mmseg's build_dataset: a list of dataset dicts (data.train=[...]), or one dict with several
  img_dirs or split files (ann_dirs paired by position; VOC aug), is a ConcatDataset;
  separate_eval (default True) is the ConcatDataset's, not the folder datasets'."""
  import ml_collections
  import numpy as np
  from segjax.data.datasets import ConcatDataset, CustomDataset, build_dataset, build_split
  steps = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations")]
  train = dict(type="SyntheticDataset", data_root=tiny_dataset, img_dir="img_dir/train",
               ann_dir="ann_dir/train", pipeline=steps)
  val = dict(train, img_dir="img_dir/val", ann_dir="ann_dir/val")
  data = ml_collections.ConfigDict(dict(train=[train, val]))  # as a segjax config holds it
  both = build_split(data, "train")
  assert isinstance(both, ConcatDataset) and len(both) == 16 + 8 and both.separate_eval is True
  np.testing.assert_array_equal(both.prepare(16)["img"], build_dataset(val).prepare(0)["img"])
  assert len(build_dataset(dict(type="RepeatDataset", times=2, dataset=[train, val]))) == 2 * 24
  dirs = build_dataset(dict(train, img_dir=["img_dir/train", "img_dir/val"],
                            ann_dir=["ann_dir/train", "ann_dir/val"], separate_eval=False))
  assert [len(d) for d in dirs.datasets] == [16, 8] and dirs.separate_eval is False
  (tmp_path / "a.txt").write_text("00000\n00003\n")
  (tmp_path / "b.txt").write_text("00001\n")
  splits = build_dataset(dict(train, split=[str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]))
  assert [d.img_infos[0]["filename"] for d in splits.datasets] == ["00000.png", "00001.png"]
  assert len(splits) == 3
  with pytest.raises(ValueError, match=r"img_dir \(2\), ann_dir \(3\)"):
    build_dataset(dict(train, img_dir=["img_dir/train"] * 2, ann_dir=["ann_dir/train"] * 3))
  with pytest.raises(ValueError, match="build_dataset"):
    CustomDataset(steps, img_dir=["img_dir/train"], data_root=tiny_dataset)


def test_zoo_entries_from_mmseg_metafiles():
  by_config = {e.config: e for e in zoo.entries()}
  assert len(by_config) == 644
  e = by_config["pspnet/pspnet_r50-d8_512x1024_40k_cityscapes.py"]  # pspnet.yml
  assert (e.family, e.dataset, e.crop, e.iters) == ("pspnet", "cityscapes", "512x1024", 40000)
  assert (e.metric, e.single_scale, e.multi_scale) == ("mIoU", 77.85, 79.18)
  e = by_config["unet/fcn_unet_s5-d16_64x64_40k_drive.py"]  # unet.yml: Dice 78.67
  assert (e.metric, e.single_scale, e.crop) == ("Dice", 78.67, "64x64")
  e = by_config["ocrnet/ocrnet_r101-d8_512x1024_40k_b16_cityscapes.py"]
  assert e.dataset == "cityscapes"
  assert e.command == ("python main.py --config=configs/mmseg.py:ocrnet/"
                       "ocrnet_r101-d8_512x1024_40k_b16_cityscapes.py "
                       "--workdir=work_dirs/ocrnet_r101-d8_512x1024_40k_b16_cityscapes")
  extra = zoo._results(zoo.RESULTS_NOT_IN_METAFILES)
  assert extra and all(os.path.exists(os.path.join(MMSEG, c)) for c in extra)


def test_readme_and_zoo_md_are_what_tools_zoo_table_writes():
  sys.path.insert(0, os.path.join(ROOT, "tools"))
  import zoo_table
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
  assert zoo_table.readme_with_section(readme) == readme, "run python tools/zoo_table.py"
  with open(os.path.join(ROOT, "configs", "ZOO.md")) as f:
    assert f.read() == zoo_table.zoo_md(), "run python tools/zoo_table.py"


def test_vendored_configs_are_mmseg_unchanged():
  reference = os.path.join(SHARED, "reference", "mmseg_configs")
  if not os.path.isdir(reference):
    pytest.skip(f"{reference} not available")
  ours = sorted(os.path.relpath(p, MMSEG) for p in glob.glob(os.path.join(MMSEG, "**", "*.*"), recursive=True)
                if p.endswith((".py", ".yml")))
  theirs = sorted(os.path.relpath(p, reference) for p in glob.glob(os.path.join(reference, "**", "*.*"),
                                                                     recursive=True) if p.endswith((".py", ".yml")))
  assert ours == theirs
  _, mismatch, errors = filecmp.cmpfiles(MMSEG, reference, ours, shallow=False)
  assert not mismatch and not errors
  assert not glob.glob(os.path.join(MMSEG, "**", "__init__.py"), recursive=True)


def test_canonical_config_builds_at_full_size():
  import jax
  import numpy as np
  from segjax.models import build_segmentor
  c = load_config("configs/pspnet_cityscapes.py")
  model = build_segmentor(c.model)
  x = jax.ShapeDtypeStruct((1, 512, 1024, 3), np.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
  out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
  assert out["decode"].shape == (1, 64, 128, 19)


def test_canonical_job_without_data_points_to_converter(tmp_path):
  if os.path.isdir(os.path.join(ROOT, "data", "cityscapes")):
    pytest.skip("data/cityscapes exists here")
  r = subprocess.run([sys.executable, "main.py", "--config=configs/pspnet_cityscapes.py",
                      f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode != 0
  assert "tools/convert_datasets/cityscapes.py" in r.stderr and "data/cityscapes" in r.stderr
