"""Dataset specs: MMSegmentation's test fixtures load through the matching specs with the right
file pairs and class counts; class subsets remap labels as mmseg's get_classes_and_palette."""
import os

import numpy as np
import pytest
from PIL import Image

from conftest import FIXTURES
from segjax.data import datasets
from segjax.data.transforms import DataError

DATA = os.path.join(FIXTURES, "tests", "data")
needs_fixtures = pytest.mark.skipif(not os.path.isdir(DATA), reason="../shared fixtures absent")
LOAD = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations")]


def pairs(ds):
  return [(i["filename"], i["ann"]["seg_map"]) for i in ds.img_infos]


@needs_fixtures
def test_pseudo_dataset_with_split_files():
  root = os.path.join(DATA, "pseudo_dataset")
  ds = datasets.build_dataset(dict(type="CustomDataset", pipeline=[], data_root=root, img_dir="imgs",
                                   ann_dir="gts", img_suffix="_img.jpg", seg_map_suffix="_gt.png",
                                   split="splits/train.txt", classes=("a", "b", "c", "d")))
  with open(os.path.join(root, "splits", "train.txt")) as f:
    names = [n.strip() for n in f if n.strip()]
  assert pairs(ds) == [(n + "_img.jpg", n + "_gt.png") for n in names]
  assert ds.num_classes == 4 and len(ds.PALETTE) == 4


@needs_fixtures
@pytest.mark.parametrize("type_,folder,n_images,n_classes", [
    ("LoveDADataset", "pseudo_loveda_dataset", 3, 7),
    ("PotsdamDataset", "pseudo_potsdam_dataset", 1, 6),
    ("ISPRSDataset", "pseudo_vaihingen_dataset", 1, 6),
])
def test_remote_sensing_fixtures(type_, folder, n_images, n_classes):
  root = os.path.join(DATA, folder)
  ds = datasets.build_dataset(dict(type=type_, pipeline=LOAD, data_root=root, img_dir="img_dir",
                                   ann_dir="ann_dir"))
  assert len(ds) == n_images and ds.num_classes == n_classes and ds.reduce_zero_label
  assert all(img == seg for img, seg in pairs(ds))  # same name, both .png
  raw = np.array(Image.open(os.path.join(root, "ann_dir", pairs(ds)[0][1]))).astype(np.int64)
  expected = np.where(raw == 0, 255, raw - 1)  # reduce_zero_label: 0 ignored, the rest shift down
  np.testing.assert_array_equal(ds.get_gt_seg_map(0), expected)  # as evaluation reads it


@needs_fixtures
def test_isaid_fixture_pairs_by_split():
  root = os.path.join(DATA, "pseudo_isaid_dataset")
  ds = datasets.build_dataset(dict(type="iSAIDDataset", pipeline=[], data_root=root, img_dir="img_dir",
                                   ann_dir="ann_dir", split="splits/train.txt"))
  assert ds.num_classes == 16 and not ds.reduce_zero_label
  assert pairs(ds) == [("P0000_0_896_1536_2432.png", "P0000_0_896_1536_2432_instance_color_RGB.png")]
  for img, seg in pairs(ds):
    assert os.path.exists(os.path.join(root, "img_dir", img)) and os.path.exists(os.path.join(root, "ann_dir", seg))


@needs_fixtures
def test_cityscapes_fixture():
  root = os.path.join(DATA, "pseudo_cityscapes_dataset")
  ds = datasets.build_dataset(dict(type="CityscapesDataset", pipeline=LOAD, data_root=root,
                                   img_dir="leftImg8bit", ann_dir="gtFine"))
  assert pairs(ds) == [("frankfurt_000000_000294_leftImg8bit.png",
                        "frankfurt_000000_000294_gtFine_labelTrainIds.png")]
  seg = ds.prepare(0)["gt_semantic_seg"]
  assert set(np.unique(seg).tolist()) <= set(range(19)) | {255}


SPECS = {  # mmseg's fixed settings per dataset type
    "PascalContextDataset": (60, ".jpg", ".png", False),
    "PascalContextDataset59": (59, ".jpg", ".png", True),
    "COCOStuffDataset": (171, ".jpg", "_labelTrainIds.png", False),
    "DRIVEDataset": (2, ".png", "_manual1.png", False),
    "HRFDataset": (2, ".png", ".png", False),
    "STAREDataset": (2, ".png", ".ah.png", False),
    "ChaseDB1Dataset": (2, ".png", "_1stHO.png", False),
    "DarkZurichDataset": (19, "_rgb_anon.png", "_gt_labelTrainIds.png", False),
    "NightDrivingDataset": (19, "_leftImg8bit.png", "_gtCoarse_labelTrainIds.png", False),
    "LoveDADataset": (7, ".png", ".png", True),
    "PotsdamDataset": (6, ".png", ".png", True),
    "iSAIDDataset": (16, ".png", "_instance_color_RGB.png", False),
}


@pytest.mark.parametrize("type_", sorted(SPECS))
def test_spec_finds_its_files(type_, tmp_path):
  n, img_suffix, seg_suffix, rzl = SPECS[type_]
  cls = datasets.DATASETS[type_]
  assert len(cls.CLASSES) == len(cls.PALETTE) == n
  (tmp_path / "img").mkdir()
  (tmp_path / "ann").mkdir()
  Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "img" / f"a{img_suffix}")
  Image.fromarray(np.ones((4, 6), np.uint8)).save(tmp_path / "ann" / f"a{seg_suffix}")
  (tmp_path / "split.txt").write_text("a\n")
  ds = datasets.build_dataset(dict(type=type_, pipeline=LOAD, data_root=str(tmp_path), img_dir="img",
                                   ann_dir="ann", split="split.txt"))
  assert ds.reduce_zero_label == rzl and ds.ignore_index == 255
  seg = ds.get_gt_seg_map(0)
  assert seg.shape == (4, 6) and int(seg[0, 0]) == (0 if rzl else 1)


def test_split_required_where_mmseg_requires_it(tmp_path):
  (tmp_path / "img").mkdir()
  with pytest.raises(ValueError, match="split"):
    datasets.build_dataset(dict(type="PascalContextDataset", pipeline=[], img_dir=str(tmp_path / "img")))


def test_class_subset_builds_label_map_and_palette(tiny_dataset):
  ds = datasets.build_dataset(dict(type="SyntheticDataset", pipeline=LOAD, data_root=tiny_dataset,
                                   img_dir="img_dir/train", ann_dir="ann_dir/train",
                                   classes=[datasets.SyntheticDataset.CLASSES[3], datasets.SyntheticDataset.CLASSES[1]]))
  full = datasets.SyntheticDataset.CLASSES
  assert ds.CLASSES == (full[3], full[1])
  assert ds.label_map == {0: -1, 1: 1, 2: -1, 3: 0, 4: -1, 5: -1}
  assert ds.PALETTE == (datasets.SyntheticDataset.PALETTE[3], datasets.SyntheticDataset.PALETTE[1])
  plain = datasets.build_dataset(dict(type="SyntheticDataset", pipeline=LOAD, data_root=tiny_dataset,
                                      img_dir="img_dir/train", ann_dir="ann_dir/train"))
  raw, mapped = plain.prepare(0)["gt_semantic_seg"], ds.prepare(0)["gt_semantic_seg"]
  expected = np.full_like(raw, 255)
  expected[raw == 3], expected[raw == 1] = 0, 1
  np.testing.assert_array_equal(mapped, expected)
  with pytest.raises(ValueError, match="not among"):
    datasets.build_dataset(dict(type="SyntheticDataset", pipeline=[], data_root=tiny_dataset,
                                img_dir="img_dir/train", classes=["unicorn"]))


def test_classes_from_file_and_palette_override(tiny_dataset, tmp_path):
  names = tmp_path / "classes.txt"
  names.write_text(f"{datasets.SyntheticDataset.CLASSES[0]}\n")
  ds = datasets.build_dataset(dict(type="SyntheticDataset", pipeline=[], data_root=tiny_dataset,
                                   img_dir="img_dir/train", classes=str(names), palette=[[1, 2, 3]]))
  assert ds.CLASSES == (datasets.SyntheticDataset.CLASSES[0],) and ds.PALETTE == ((1, 2, 3),)


def test_missing_data_root_names_the_converter(tmp_path):
  with pytest.raises(DataError, match="tools/convert_datasets/loveda.py"):
    datasets.build_dataset(dict(type="LoveDADataset", pipeline=[], data_root=str(tmp_path / "none"),
                                img_dir="img_dir/train"))
