"""tools/test.py evaluates a training workdir exactly as the training loop's evaluation does."""
import json
import os
import pickle
import subprocess
import sys

import pytest

from conftest import ROOT
from segjax.train import loop
from test_train import tiny_config

TINY_OVERRIDES = ["model.backbone.base_channels=8", "model.backbone.stem_channels=8",
                  "model.decode_head.in_channels=64", "model.decode_head.channels=16",
                  "model.auxiliary_head.in_channels=32", "model.auxiliary_head.channels=8"]


def test_tools_test_matches_training_evaluation(tiny_dataset, tmp_path):
  workdir = str(tmp_path / "run")
  c = tiny_config(tiny_dataset, total_iters=4)
  summary = loop.train_and_evaluate(c, workdir)
  out = str(tmp_path / "preds.pkl")
  r = subprocess.run([sys.executable, "tools/test.py", "configs/pspnet_synthetic.py", workdir,
                      "--eval", "mIoU", "mDice", "--out", out, "--show-dir", str(tmp_path / "show"),
                      "--cfg-options", *TINY_OVERRIDES, f"data.val.data_root={tiny_dataset}"],
                     cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  last = r.stdout.strip().splitlines()[-1]
  values = dict(zip(last.split()[::2], map(float, last.split()[1::2])))
  assert values["mIoU"] == pytest.approx(100 * summary["mIoU"], abs=0.006)
  assert values["aAcc"] == pytest.approx(100 * summary["aAcc"], abs=0.006)
  assert "mDice" in values
  preds = pickle.load(open(out, "rb"))
  assert len(preds) == 8 and preds[0].shape == (64, 64)
  assert len(os.listdir(tmp_path / "show")) == 8


def test_tools_test_rejects_unknown_override(tiny_dataset, tmp_path):
  r = subprocess.run([sys.executable, "tools/test.py", "configs/pspnet_synthetic.py", str(tmp_path),
                      "--eval", "mIoU", "--cfg-options", "model.nonexistent=1"],
                     cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode != 0 and "nonexistent" in r.stderr
