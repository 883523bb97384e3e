"""tools/test.py evaluates a training workdir exactly as the training loop's evaluation does."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from segjax.train import loop
from test_train import tiny_config

TINY_OVERRIDES = ["model.backbone.base_channels=8", "model.backbone.stem_channels=8",
                  "model.decode_head.in_channels=64", "model.decode_head.channels=16",
                  "model.auxiliary_head.in_channels=32", "model.auxiliary_head.channels=8"]


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("tools") / "run")
  summary = loop.train_and_evaluate(tiny_config(tiny_dataset, total_iters=4), workdir)
  return workdir, summary


def _run(*args):
  return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_tools_test_matches_training_evaluation(trained, tiny_dataset, tmp_path):
  workdir, summary = trained
  out = str(tmp_path / "preds.npz")
  r = subprocess.run([sys.executable, "tools/test.py", "configs/pspnet_synthetic.py", workdir,
                      "--eval", "mIoU", "mDice", "--out", out, "--show-dir", str(tmp_path / "show"),
                      "--cfg-options", *TINY_OVERRIDES, f"data.test.data_root={tiny_dataset}"],
                     cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  last = r.stdout.strip().splitlines()[-1]
  values = dict(zip(last.split()[::2], map(float, last.split()[1::2])))
  assert values["mIoU"] == pytest.approx(100 * summary["mIoU"], abs=0.006)
  assert values["aAcc"] == pytest.approx(100 * summary["aAcc"], abs=0.006)
  assert "mDice" in values
  import numpy as np
  with np.load(out, allow_pickle=False) as preds:
    assert len(preds["filenames"]) == 8 and preds["pred_00000"].shape == (64, 64)
  assert len(os.listdir(tmp_path / "show")) == 8


def test_image_demo_runs_a_model_trained_with_segjax(trained, tiny_dataset, tmp_path):
  # A workdir plus its config, as mmseg's demo takes a config and a checkpoint.
  workdir, _ = trained
  img = os.path.join(tiny_dataset, "img_dir", "val", sorted(os.listdir(os.path.join(tiny_dataset, "img_dir", "val")))[0])
  out = str(tmp_path / "overlay.png")
  config_file = tmp_path / "tiny.py"
  config_file.write_text("import sys\nsys.path.insert(0, %r)\nfrom test_train import tiny_config\n\n\n"
                         "def get_config():\n  return tiny_config(%r)\n" % (os.path.join(ROOT, "tests"), tiny_dataset))
  r = _run("tools/image_demo.py", img, str(config_file), workdir, "--out-file", out)
  assert r.returncode == 0, r.stderr
  import cv2
  assert cv2.imread(out).shape == cv2.imread(img).shape


def test_tools_test_rejects_unknown_override(tiny_dataset, tmp_path):
  r = subprocess.run([sys.executable, "tools/test.py", "configs/pspnet_synthetic.py", str(tmp_path),
                      "--eval", "mIoU", "--cfg-options", "model.nonexistent=1"],
                     cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode != 0 and "nonexistent" in r.stderr


def test_publish_model_strips_and_hashes(trained, tmp_path):
  import hashlib
  import jax
  import numpy as np
  from segjax.train.checkpoint import load_variables
  workdir, _ = trained
  r = _run("tools/publish_model.py", workdir, str(tmp_path / "tiny.msgpack"))
  assert r.returncode == 0, r.stderr[-2000:]
  path = r.stdout.strip().splitlines()[-1]
  digest = os.path.basename(path)[len("tiny-"):-len(".msgpack")]
  assert digest == hashlib.sha256(open(path, "rb").read()).hexdigest()[:8]
  published, original = load_variables(path), load_variables(workdir)
  assert set(published) == {"params", "batch_stats"}  # no optimizer state, no step
  for a, b in zip(jax.tree.leaves(published), jax.tree.leaves(original)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_analyze_logs_plots_and_names_missing_keys(trained, tmp_path):
  workdir, _ = trained
  log = os.path.join(workdir, "metrics.jsonl")
  r = _run("tools/analyze_logs.py", log, "--keys", "mIoU", "loss", "--out", str(tmp_path / "c.png"))
  assert r.returncode == 0, r.stderr[-2000:]
  assert open(tmp_path / "c.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  r = _run("tools/analyze_logs.py", log, "--keys", "nope", "--out", str(tmp_path / "d.png"))
  assert r.returncode != 0 and "nope" in r.stderr


def test_get_flops_params_match_release_checkpoint():
  # mmseg's own parameter count of the config (../shared/reference/mmseg_zoo/index.json).
  from conftest import SHARED
  index = os.path.join(SHARED, "reference", "mmseg_zoo", "index.json")
  if not os.path.exists(index):
    pytest.skip("mmseg zoo index not available")
  released = json.load(open(index))["pspnet/pspnet_r50-d8_512x1024_40k_cityscapes.py"]["params"]
  r = _run("tools/get_flops.py", "configs/pspnet_cityscapes.py:r50-d8_512x1024_40k", "--shape", "64", "128")
  assert r.returncode == 0, r.stderr[-2000:]
  params_line = [l for l in r.stdout.splitlines() if l.startswith("Params:")][0]
  assert params_line == f"Params: {released / 1e6:.2f} M"
  assert "Input shape: (3, 64, 128)" in r.stdout


def test_print_config_applies_overrides():
  r = _run("tools/print_config.py", "configs/pspnet_cityscapes.py:r18-d8_512x1024_80k",
           "--cfg-options", "total_iters=123")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "total_iters = 123" in r.stdout and "depth=18" in r.stdout


def test_export_reloads_and_reproduces_logits(trained, tmp_path):
  import numpy as np
  from jax import export
  from segjax import apis
  from segjax.config import apply_overrides, load_config
  workdir, _ = trained
  out = str(tmp_path / "m.jaxexport")
  r = _run("tools/export.py", "configs/pspnet_synthetic.py", workdir, "--shape", "2", "32", "48",
           "--out", out, "--cfg-options", *TINY_OVERRIDES)
  assert r.returncode == 0, r.stderr[-2000:]
  exported = export.deserialize(open(out, "rb").read())
  x = np.random.default_rng(0).normal(size=(2, 32, 48, 3)).astype(np.float32)
  config = load_config("configs/pspnet_synthetic.py")
  apply_overrides(config, TINY_OVERRIDES)
  ref = apis.inference_logits(apis.init_segmentor(config, workdir), x)
  np.testing.assert_allclose(np.asarray(exported.call(x)), np.asarray(ref), atol=1e-5)


def test_export_saved_model_with_tensorflow_or_a_clear_error(trained, tmp_path):
  import importlib.util
  import numpy as np
  workdir, _ = trained
  saved = str(tmp_path / "saved_model")
  r = _run("tools/export.py", "configs/pspnet_synthetic.py", workdir, "--shape", "1", "32", "48",
           "--out", str(tmp_path / "m.jaxexport"), "--saved-model", saved, "--cfg-options", *TINY_OVERRIDES)
  if importlib.util.find_spec("tensorflow") is None:
    assert r.returncode != 0 and "pip install tensorflow" in r.stderr
    return
  assert r.returncode == 0, r.stderr[-2000:]
  import tensorflow as tf
  from segjax import apis
  from segjax.config import apply_overrides, load_config
  x = np.random.default_rng(0).normal(size=(1, 32, 48, 3)).astype(np.float32)
  config = load_config("configs/pspnet_synthetic.py")
  apply_overrides(config, TINY_OVERRIDES)
  ref = apis.inference_logits(apis.init_segmentor(config, workdir), x)
  got = tf.saved_model.load(saved).signatures["serve"](images=tf.constant(x))
  np.testing.assert_allclose(list(got.values())[0].numpy(), np.asarray(ref), atol=1e-5)


def test_confusion_matrix_counts_by_hand():
  import numpy as np
  sys.path.insert(0, os.path.join(ROOT, "tools"))
  from confusion_matrix import confusion_matrix
  gt = np.array([[0, 0, 1, 2, 255]])
  pred = np.array([[0, 1, 1, 1, 0]])
  np.testing.assert_array_equal(confusion_matrix([pred], [gt], 3, 255),
                                [[1, 1, 0], [0, 1, 0], [0, 1, 0]])


def test_confusion_matrix_and_browse_tools_write_files(trained, tiny_dataset, tmp_path):
  import numpy as np
  workdir, _ = trained
  preds = str(tmp_path / "p.npz")
  data = [f"data.val.data_root={tiny_dataset}", f"data.train.data_root={tiny_dataset}"]
  r = _run("tools/test.py", "configs/pspnet_synthetic.py", workdir, "--out", preds, "--split", "val",
           "--cfg-options", *TINY_OVERRIDES, *data)
  assert r.returncode == 0, r.stderr[-2000:]
  r = _run("tools/confusion_matrix.py", "configs/pspnet_synthetic.py", preds, str(tmp_path / "cm"),
           "--cfg-options", *data)
  assert r.returncode == 0, r.stderr[-2000:]
  counts = np.load(tmp_path / "cm" / "confusion_matrix.npy")
  assert counts.shape == (6, 6) and counts.sum() > 0
  r = _run("tools/browse_dataset.py", "configs/pspnet_synthetic.py", "--output-dir",
           str(tmp_path / "browse"), "--num", "3", "--cfg-options", *data)
  assert r.returncode == 0, r.stderr[-2000:]
  files = sorted(os.listdir(tmp_path / "browse"))
  assert len(files) == 3 and files[0].startswith("00000_")
  import cv2
  assert cv2.imread(str(tmp_path / "browse" / files[0])).shape == (128, 256, 3)  # image | overlay


def test_every_tool_answers_help(capsys, monkeypatch):
  import glob
  import runpy
  paths = sorted(glob.glob(os.path.join(ROOT, "tools", "*.py")) + glob.glob(os.path.join(ROOT, "tools", "convert_datasets", "*.py")))
  assert len(paths) > 20
  for path in paths:
    monkeypatch.setattr(sys, "argv", [path, "--help"])
    with pytest.raises(SystemExit) as e:
      runpy.run_path(path, run_name="__main__")
    assert e.value.code in (0, None), path
    assert "usage:" in capsys.readouterr().out, path
