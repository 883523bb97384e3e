"""Bad data is reported by file before training starts."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from segjax.data.check import check_dataset
from segjax.data.datasets import SyntheticDataset
from segjax.data.transforms import DataError
from segjax.train import loop
from test_train import tiny_config


@pytest.fixture()
def broken(tiny_dataset, tmp_path):
  root = str(tmp_path / "broken")
  shutil.copytree(tiny_dataset, root)
  img, ann = os.path.join(root, "img_dir", "train"), os.path.join(root, "ann_dir", "train")
  Image.fromarray(np.full((64, 64), 9, np.uint8)).save(os.path.join(ann, "00000.png"))  # value 9
  Image.fromarray(np.zeros((32, 64), np.uint8)).save(os.path.join(ann, "00001.png"))  # size
  Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(os.path.join(ann, "00002.png"))  # RGB
  open(os.path.join(img, "00003.png"), "wb").write(b"not a png")  # unreadable
  os.remove(os.path.join(ann, "00004.png"))  # image without label
  shutil.copy(os.path.join(ann, "00005.png"), os.path.join(ann, "orphan.png"))  # label without image
  return root


def test_every_problem_names_its_file(broken):
  ds = SyntheticDataset([], img_dir="img_dir/train", ann_dir="ann_dir/train", data_root=broken)
  problems, counts = check_dataset(ds, num_classes=6)
  text = "\n".join(problems)
  ann = os.path.join(broken, "ann_dir", "train")
  img = os.path.join(broken, "img_dir", "train")
  assert f"{ann}/00000.png: label values [9] outside [0, 6)" in text
  assert f"{ann}/00001.png: label size 32x64 differs from image {img}/00001.png 64x64" in text
  assert f"{ann}/00002.png: label is an RGB image" in text
  assert f"{img}/00003.png: cannot decode image" in text
  assert f"{img}/00004.png: image without a label" in text
  assert f"{ann}/orphan.png: label without an image" in text
  assert len(problems) == 6
  assert counts.sum() > 0 and len(counts) == 6


def test_training_refuses_bad_data_before_compiling(broken, tmp_path):
  c = tiny_config(broken)
  c.data.check_samples = 100
  with pytest.raises(DataError, match="00000.png: label values"):
    loop.train_and_evaluate(c, str(tmp_path / "w"))


def test_check_dataset_tool_exit_status(broken, tiny_dataset):
  args = [sys.executable, "tools/check_dataset.py", "configs/pspnet_synthetic.py", "--split", "train",
          "--cfg-options"]
  bad = subprocess.run(args + [f"data.train.data_root={broken}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  good = subprocess.run(args + [f"data.train.data_root={tiny_dataset}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert bad.returncode == 1 and "orphan.png" in bad.stdout
  assert good.returncode == 0 and "0 problem(s)" in good.stdout and "background" in good.stdout


def test_loader_rejects_out_of_range_labels_and_size_mismatch(broken):
  from segjax.data import loader
  from configs.common import train_pipeline
  ds = SyntheticDataset(train_pipeline((64, 64), (48, 48)), img_dir="img_dir/train",
                        ann_dir="ann_dir/train", data_root=broken)
  pipe = loader._Pipeline(ds)
  rng = np.random.default_rng(0)
  with pytest.raises(DataError, match=r"00000.png in .*label values \[9\]"):
    pipe.random_map(0, rng)
  with pytest.raises(DataError, match=r"00001.png is 32x64 but image .*00001.png is 64x64"):
    pipe.random_map(1, rng)
  pipe.random_map(6, rng)  # a good pair passes


def test_repeat_and_concat_datasets(tiny_dataset):
  from segjax.data.datasets import build_dataset
  one = dict(type="SyntheticDataset", data_root=tiny_dataset, img_dir="img_dir/val",
             ann_dir="ann_dir/val", pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations")])
  rep = build_dataset(dict(type="RepeatDataset", times=3, dataset=one))
  cat = build_dataset(dict(type="ConcatDataset", datasets=[one, dict(one, img_dir="img_dir/train",
                                                                     ann_dir="ann_dir/train")]))
  assert len(rep) == 24 and len(cat) == 8 + 16
  assert rep.CLASSES == cat.CLASSES and rep.num_classes == 6
  a, b = rep.prepare(3), rep.prepare(3 + 8)
  np.testing.assert_array_equal(a["img"], b["img"])
  ds, j = cat.locate(10)
  assert ds.img_dir.endswith("img_dir/train") and j == 2
  np.testing.assert_array_equal(cat.prepare(10)["gt_semantic_seg"], ds.get_gt_seg_map(2))
  problems, _ = check_dataset(cat, 6)
  assert problems == []
