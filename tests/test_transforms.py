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


def test_random_cutout_fills_holes():
  r = build_pipeline([dict(type="RandomCutOut", prob=1.0, n_holes=3, cutout_shape=(4, 5),
                           fill_in=(1, 2, 3), seg_fill_in=255)])(_toy(), np.random.default_rng(1))
  holes = np.all(r["img"] == (1, 2, 3), axis=-1)
  assert 0 < holes.sum() <= 3 * 4 * 5
  np.testing.assert_array_equal(r["gt_semantic_seg"][holes], 255)
  with pytest.raises(ValueError, match="exactly one"):
    build_pipeline([dict(type="RandomCutOut", prob=1.0, n_holes=1)])
