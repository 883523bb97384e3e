"""Metrics equal MMSegmentation's (../shared/oracle/metrics) and the device-side areas equal the
numpy ones."""
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ORACLE
from segjax import evaluation


def load_cases():
  path = os.path.join(ORACLE, "metrics", "metrics.json")
  if not os.path.exists(path):
    return []
  return json.load(open(path))["cases"]


def inputs(case):
  z = np.load(os.path.join(ORACLE, "metrics", f"{case['name']}_inputs.npz"))
  n = len([k for k in z if k.startswith("pred_")])
  return [z[f"pred_{i}"] for i in range(n)], [z[f"label_{i}"] for i in range(n)]


def assert_same(ours, theirs):
  assert set(ours) == set(theirs)
  for k, v in theirs.items():
    np.testing.assert_allclose(np.asarray(ours[k], np.float64),
                               np.array(v, np.float64), rtol=1e-9, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("case", load_cases(), ids=lambda c: c["name"])
def test_eval_metrics_match_mmseg(case):
  preds, labels = inputs(case)
  label_map = {int(k): v for k, v in case["label_map"].items()}
  kw = dict(num_classes=case["num_classes"], ignore_index=case["ignore_index"], label_map=label_map,
            reduce_zero_label=case["reduce_zero_label"])
  assert_same(evaluation.eval_metrics(preds, labels, metrics=case["metrics"], beta=case["beta"], **kw),
              case["result"])
  assert_same(evaluation.eval_metrics(preds, labels, metrics=["mIoU"], nan_to_num=-1, **kw),
              case["result_mIoU_nan_to_num_minus1"])
  for i, (p, l) in enumerate(zip(preds, labels)):
    inter, union, pred, lab = evaluation.intersect_and_union(p, l, **kw)
    np.testing.assert_array_equal(inter, case["per_image_area_intersect"][i])
    np.testing.assert_array_equal(union, case["per_image_area_union"][i])


@pytest.mark.parametrize("case", load_cases(), ids=lambda c: c["name"])
def test_device_areas_equal_numpy_areas(case):
  if case["label_map"] or case["reduce_zero_label"]:
    pytest.skip("device areas take labels already in training ids")
  preds, labels = inputs(case)
  for p, l in zip(preds, labels):
    ref = np.stack(evaluation.intersect_and_union(p, l, case["num_classes"], case["ignore_index"]))
    out = evaluation.batch_areas(jnp.asarray(p)[None], jnp.asarray(l.astype(np.int32))[None],
                                 case["num_classes"], case["ignore_index"])
    np.testing.assert_array_equal(np.asarray(out), ref)


def test_metric_formulas_by_hand():
  pred = np.array([[0, 0, 1, 1]])
  label = np.array([[0, 1, 1, 255]])
  m = evaluation.eval_metrics([pred], [label], 3, 255, metrics=["mIoU", "mDice", "mFscore"])
  # class 0: I=1, P=2, L=1 -> IoU 1/2; class 1: I=1, P=1, L=2 -> IoU 1/2; class 2 absent -> NaN
  np.testing.assert_allclose(m["IoU"], [0.5, 0.5, np.nan])
  np.testing.assert_allclose(m["Dice"], [2 / 3, 2 / 3, np.nan])
  np.testing.assert_allclose(m["Precision"], [0.5, 1.0, np.nan])
  assert m["aAcc"] == pytest.approx(2 / 3)
