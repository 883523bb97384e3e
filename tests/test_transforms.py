"""build_pipeline reproduces MMSegmentation's transform outputs (../shared/oracle/transforms)."""
import json
import os

import numpy as np
import pytest

from conftest import FIXTURES, ORACLE
from segjax.data.transforms import build_pipeline

ORACLE_T = os.path.join(ORACLE, "transforms")


def _cases():
  path = os.path.join(ORACLE_T, "transforms.json")
  return sorted(json.load(open(path))["cases"].items()) if os.path.exists(path) else []


def _results(image):
  root = os.path.dirname(FIXTURES)  # .../fixtures
  img = os.path.join(root, image)
  ann = img.replace("leftImg8bit", "gtFine").replace("_gtFine.png", "_gtFine_labelTrainIds.png")
  return {"img_info": {"filename": img}, "ann_info": {"seg_map": ann}, "seg_fields": []}


@pytest.mark.parametrize("name,case", _cases(), ids=[n for n, _ in _cases()])
def test_pipeline_matches_mmseg(name, case):
  meta = json.load(open(os.path.join(ORACLE_T, "transforms.json")))
  results = _results(meta["image"])
  if not os.path.exists(results["ann_info"]["seg_map"]):
    pytest.skip(f"fixture {results['ann_info']['seg_map']} not available")
  out = build_pipeline(case["pipeline"])(results, np.random.default_rng(0))
  ref = np.load(os.path.join(ORACLE_T, f"{name}.npz"))
  for key in ("img_shape", "ori_shape", "pad_shape"):
    assert tuple(out[key]) == tuple(case[key]), key
  np.testing.assert_allclose(np.asarray(out["scale_factor"], np.float64),
                             np.asarray(case["scale_factor"], np.float64), rtol=1e-6)
  assert out["img"].dtype == np.dtype(case["img_dtype"])
  assert out.get("flip") == case["flip"]
  img, ref_img = out["img"].astype(np.float64), ref["img"].astype(np.float64)
  assert img.shape == ref_img.shape
  # Resize: within one grey level (cv2 builds may round differently); otherwise exact.
  tol = 1.0 if any(t["type"] == "Resize" for t in case["pipeline"]) else 1e-5
  assert np.abs(img - ref_img).max() <= tol
  np.testing.assert_array_equal(out["gt_semantic_seg"], ref["gt_semantic_seg"])


def _toy(h=30, w=45):
  rng = np.random.default_rng(0)
  img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
  seg = rng.integers(0, 5, (h, w), dtype=np.uint8)
  return {"img": img, "gt_semantic_seg": seg, "seg_fields": ["gt_semantic_seg"]}


def test_resize_to_multiple_rounds_up():
  import cv2
  r = build_pipeline([dict(type="ResizeToMultiple", size_divisor=32)])(_toy())
  assert r["img"].shape == (32, 64, 3) and r["gt_semantic_seg"].shape == (32, 64)
  np.testing.assert_array_equal(r["img"], cv2.resize(_toy()["img"], (64, 32), interpolation=cv2.INTER_LINEAR))


def test_random_rotate_is_mmcv_imrotate():
  import cv2
  r = build_pipeline([dict(type="RandomRotate", prob=1.0, degree=(30, 30), seg_pad_val=255)])(_toy())
  m = cv2.getRotationMatrix2D(((45 - 1) * 0.5, (30 - 1) * 0.5), -30, 1.0)  # mmcv rotates clockwise
  ref = cv2.warpAffine(_toy()["gt_semantic_seg"], m, (45, 30), flags=cv2.INTER_NEAREST,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=255)
  np.testing.assert_array_equal(r["gt_semantic_seg"], ref)
  assert r["gt_semantic_seg"][0, 0] == 255  # the rotated-in corner is padding
  unrotated = build_pipeline([dict(type="RandomRotate", prob=0.0, degree=30)])(_toy())
  np.testing.assert_array_equal(unrotated["img"], _toy()["img"])


def test_random_rotate_auto_bound_grows_the_canvas():
  # mmcv's imrotate(auto_bound=True): canvas (h cos + w sin) x (h sin + w cos), rounded, so a
  # quarter turn is exactly np.rot90 (positive angles turn clockwise) and nothing is cut off.
  import math
  seg = _toy()["gt_semantic_seg"]
  for angle, turns in ((90, -1), (-90, 1)):
    r = build_pipeline([dict(type="RandomRotate", prob=1.0, degree=(angle, angle), auto_bound=True)])(_toy())
    np.testing.assert_array_equal(r["gt_semantic_seg"], np.rot90(seg, turns))
    assert r["img"].shape == (45, 30, 3)
  r = build_pipeline([dict(type="RandomRotate", prob=1.0, degree=(30, 30), auto_bound=True)])(_toy())
  c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
  assert r["img"].shape[:2] == (round(30 * c + 45 * s), round(30 * s + 45 * c)) == r["gt_semantic_seg"].shape
  assert (r["gt_semantic_seg"] < 5).sum() == pytest.approx(30 * 45, rel=0.05)  # all pixels kept
  with pytest.raises(ValueError, match="auto_bound=True conflicts with center"):
    build_pipeline([dict(type="RandomRotate", prob=1.0, degree=30, auto_bound=True, center=(1, 1))])


def test_random_flip_takes_mmsegs_deprecated_flip_ratio():
  # the reference's tutorial config: dict(type='RandomFlip', flip_ratio=0.5)
  flipped = build_pipeline([dict(type="RandomFlip", flip_ratio=1.0)])(_toy())
  np.testing.assert_array_equal(flipped["gt_semantic_seg"], _toy()["gt_semantic_seg"][:, ::-1])
  assert flipped["flip"] is True
  kept = build_pipeline([dict(type="RandomFlip", flip_ratio=0.0)])(_toy())
  np.testing.assert_array_equal(kept["img"], _toy()["img"])
  with pytest.raises(ValueError, match="not both"):
    build_pipeline([dict(type="RandomFlip", prob=0.5, flip_ratio=0.5)])


def test_formatting_transforms_keep_channels_last():
  # mmseg's formatting steps make torch tensors and DataContainers; in segjax they keep the numpy
  # arrays channels-last, giving a 2-D image its channel axis as mmseg's ImageToTensor does.
  gray = {"img": np.arange(12, dtype=np.uint8).reshape(3, 4), "gt_semantic_seg": np.zeros((3, 4), np.uint8),
          "seg_fields": ["gt_semantic_seg"], "filename": "a.png", "ori_shape": (3, 4)}
  out = build_pipeline([
      dict(type="ImageToTensor", keys=["img"]),
      dict(type="ToTensor", keys=["gt_semantic_seg"]),
      dict(type="Transpose", keys=["img"], order=[2, 0, 1]),
      dict(type="ToDataContainer", fields=(dict(key="img", stack=True), dict(key="gt_semantic_seg"))),
      dict(type="Collect", keys=["img", "gt_semantic_seg"], meta_keys=["filename", "ori_shape"]),
  ])(dict(gray))
  assert out["img"].shape == (3, 4, 1) and out["gt_semantic_seg"].shape == (3, 4)
  np.testing.assert_array_equal(out["img"][..., 0], gray["img"])
  assert out["img_metas"] == {"filename": "a.png", "ori_shape": (3, 4)} and set(out) == {"img", "gt_semantic_seg", "img_metas"}
  assert build_pipeline([dict(type="DefaultFormatBundle")])(dict(gray))["img"].shape == (3, 4, 1)
  with pytest.raises(ValueError, match=r"Transpose\(order=\(1, 0, 2\)\)"):
    build_pipeline([dict(type="Transpose", keys=["img"], order=(1, 0, 2))])
  for step in (dict(type="ToTensor", keys=["gt"]), dict(type="Collect", keys=["img", "gt"]),
               dict(type="ToDataContainer", fields=[dict(key="gt")])):
    with pytest.raises(KeyError, match=r"results have no \['gt'\]"):
      build_pipeline([step])(dict(gray))


def test_random_cutout_fills_holes():
  r = build_pipeline([dict(type="RandomCutOut", prob=1.0, n_holes=3, cutout_shape=(4, 5),
                           fill_in=(1, 2, 3), seg_fill_in=255)])(_toy(), np.random.default_rng(1))
  holes = np.all(r["img"] == (1, 2, 3), axis=-1)
  assert 0 < holes.sum() <= 3 * 4 * 5
  np.testing.assert_array_equal(r["gt_semantic_seg"][holes], 255)
  with pytest.raises(ValueError, match="exactly one"):
    build_pipeline([dict(type="RandomCutOut", prob=1.0, n_holes=1)])


def mosaic_inputs(h=4, w=6):
  def one(k):
    img = (np.arange(h * w * 3).reshape(h, w, 3) + 50 * k).astype(np.uint8)
    return {"img": img, "gt_semantic_seg": np.full((h, w), k, np.uint8), "seg_fields": ["gt_semantic_seg"]}
  results = one(0)
  results["mix_results"] = [one(1), one(2), one(3)]
  return results


def test_random_mosaic_quadrants_follow_mmseg_combine():
  from segjax.data.transforms import RandomMosaic
  src = mosaic_inputs()
  imgs = [src["img"]] + [m["img"] for m in src["mix_results"]]
  # centre ratio 1: the four 4x6 images tile the 8x12 canvas exactly
  out = RandomMosaic(prob=1.0, img_scale=(4, 6), center_ratio_range=(1.0, 1.0))(mosaic_inputs(), np.random.default_rng(0))
  tiled = np.concatenate([np.concatenate(imgs[:2], axis=1), np.concatenate(imgs[2:], axis=1)], axis=0)
  np.testing.assert_array_equal(out["img"], tiled)
  np.testing.assert_array_equal(out["gt_semantic_seg"], np.kron([[0, 1], [2, 3]], np.ones((4, 6))))
  # centre (3, 2): each quadrant is cropped to what fits around the centre (mmseg's _mosaic_combine)
  out = RandomMosaic(prob=1.0, img_scale=(4, 6), center_ratio_range=(0.5, 0.5), pad_val=7)(mosaic_inputs(), np.random.default_rng(0))
  expected = np.full((8, 12, 3), 7, np.uint8)
  expected[0:2, 0:3] = imgs[0][2:4, 3:6]
  expected[0:2, 3:9] = imgs[1][2:4, 0:6]
  expected[2:6, 0:3] = imgs[2][0:4, 3:6]
  expected[2:6, 3:9] = imgs[3]
  np.testing.assert_array_equal(out["img"], expected)
  assert out["gt_semantic_seg"][7, 11] == 255 and out["gt_semantic_seg"][3, 1] == 2


def test_random_mosaic_resizes_keeping_ratio_and_respects_prob():
  from segjax.data.transforms import RandomMosaic
  src = mosaic_inputs(8, 12)
  out = RandomMosaic(prob=1.0, img_scale=(4, 6), center_ratio_range=(1.0, 1.0))(src, np.random.default_rng(0))
  assert out["img"].shape == (8, 12, 3)  # each 8x12 image scaled by 0.5 into its 4x6 quadrant
  np.testing.assert_array_equal(out["gt_semantic_seg"], np.kron([[0, 1], [2, 3]], np.ones((4, 6))))
  same = RandomMosaic(prob=0.0)(mosaic_inputs(), np.random.default_rng(0))
  assert same["img"].shape == (4, 6, 3)


def test_multi_image_mix_dataset(tiny_dataset):
  from segjax.data.datasets import build_dataset
  cfg = dict(type="MultiImageMixDataset",
             dataset=dict(type="SyntheticDataset", data_root=tiny_dataset, img_dir="img_dir/train",
                          ann_dir="ann_dir/train",
                          pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations")]),
             pipeline=[dict(type="RandomMosaic", prob=1.0, img_scale=(32, 32)),
                       dict(type="RandomFlip", prob=0.5)])
  ds = build_dataset(cfg)
  a, b = ds.prepare(3, np.random.default_rng(5)), ds.prepare(3, np.random.default_rng(5))
  assert a["img"].shape == (64, 64, 3) and a["gt_semantic_seg"].shape == (64, 64)
  np.testing.assert_array_equal(a["img"], b["img"])  # reproducible from the seed
  assert "mix_results" not in a and len(ds) == 16 and ds.num_classes == 6
  ds.update_skip_type_keys(["RandomMosaic"])
  plain, skipped = ds.dataset.prepare(3)["img"], ds.prepare(3, np.random.default_rng(5))["img"]
  assert np.array_equal(skipped, plain) or np.array_equal(skipped, plain[:, ::-1])  # flip only
