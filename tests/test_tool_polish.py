"""Tools as a person uses them (issue 17): a printed config that pastes back, one unit per
metrics field, progress bars on a terminal only, and a named mistake for a file that is no config."""
import io
import json
import os
import runpy
import subprocess
import sys

import pytest

from conftest import ROOT


def _tool(name, *args):
  """Run tools/<name> in this process (argv as given), like `python tools/<name> ...`."""
  path = os.path.join(ROOT, "tools", name)
  old = sys.argv
  sys.argv = [path, *args]
  try:
    runpy.run_path(path, run_name="__main__")
  finally:
    sys.argv = old


# --- print_config ---------------------------------------------------------------------------

MMSEG_STYLE = """
crop = (32, 48)
pipeline = [dict(type='LoadImageFromFile'), dict(type='RandomCrop', crop_size=crop),
            dict(type='Pad', size=crop, pad_val=0, seg_pad_val=255)]
model = dict(type='EncoderDecoder', backbone=dict(type='ResNetV1c', depth=18, strides=(1, 2, 1, 1)),
             decode_head=dict(type='FCNHead', in_channels=512, channels=8, num_classes=3),
             test_cfg=dict(mode='whole'))
data = dict(samples_per_gpu=2, train=dict(type='CustomDataset', img_dir='a', pipeline=pipeline),
            val=dict(type='CustomDataset', img_dir='b', pipeline=pipeline))
"""


@pytest.mark.parametrize("spec", ["configs/pspnet_cityscapes.py:r18-d8_512x1024_80k", "mmseg_style.py"])
def test_print_config_prints_python_that_loads_back_equal(spec, tmp_path, capsys):
  from segjax.config import apply_overrides, load_config
  from segjax.convert.mmseg_config import load_mmseg_config
  if spec == "mmseg_style.py":  # a tuple shared by two dicts: YAML wrote it as &id001 / *id001
    spec = str(tmp_path / spec)
    with open(spec, "w") as f:
      f.write(MMSEG_STYLE)
  _tool("print_config.py", spec, "--cfg-options", "total_iters=123")
  printed = capsys.readouterr().out
  assert "!!python" not in printed and "&id" not in printed
  assert "total_iters = 123" in printed
  pasted = tmp_path / "pasted.py"
  pasted.write_text(printed)
  expected = load_config(spec)
  apply_overrides(expected, ["total_iters=123"])
  # The same dicts, lists and tuples: (32, 48) == [32, 48] is False, so tuples must stay tuples.
  assert load_mmseg_config(str(pasted)) == expected.to_dict()
  # And a config again, wherever CONFIG goes (main.py: --config=configs/mmseg.py:pasted.py).
  assert load_config(str(pasted)) == expected
  assert load_config(f"{ROOT}/configs/mmseg.py:{pasted}") == expected
  _tool("print_config.py", spec, "--format", "json")
  assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(load_config(spec).to_dict()))


def test_print_config_python_literals_of_every_kind():
  from segjax.config import to_python
  value = {"a": {"not-an-identifier": (1,), "class": [], "inf": float("inf"), "t": ()},
           "long": {"k%d" % i: ("x" * 10, i) for i in range(12)}}
  text = to_python(value, width=60)
  namespace = {}
  exec(text, namespace)  # noqa: S102 - what a pasted config does
  assert {k: namespace[k] for k in value} == value
  assert max(len(line) for line in text.splitlines()) <= 60


# --- a file that is not a config --------------------------------------------------------------

@pytest.fixture(scope="module")
def not_configs(tmp_path_factory):
  """A PyTorch checkpoint, binary junk, a missing file and a directory, each where CONFIG goes."""
  import torch
  root = tmp_path_factory.mktemp("not_configs")
  pth = str(root / "pspnet.pth")
  torch.save({"state_dict": {"w": torch.zeros(2)}, "meta": {}}, pth)
  junk = str(root / "junk.py")
  with open(junk, "wb") as f:
    f.write(bytes(range(256)))
  os.makedirs(root / "a_dir")
  return {"checkpoint": (pth, "is a PyTorch checkpoint, not a config: give the mmseg config"),
          "binary": (junk, "is not a text file"),
          "missing": (str(root / "nope.py"), "does not exist"),
          "directory": (str(root / "a_dir"), "is a directory")}


@pytest.mark.parametrize("kind", ["checkpoint", "binary", "missing", "directory"])
def test_load_config_names_a_file_that_is_no_config(kind, not_configs):
  from segjax import apis
  from segjax.config import load_config
  path, message = not_configs[kind]
  with pytest.raises((ValueError, OSError), match=message) as e:
    load_config(path)
  assert path in str(e.value)
  if kind != "directory":  # init_segmentor takes a directory: a converted one
    with pytest.raises((ValueError, OSError), match=message):
      apis.init_segmentor(path)


def test_every_tool_taking_config_names_a_checkpoint_given_as_config(not_configs, tmp_path):
  pth, message = not_configs["checkpoint"]
  out = str(tmp_path / "out")
  argvs = {"test.py": [pth, out, "--eval", "mIoU"], "benchmark.py": [pth], "export.py": [pth, out, "--shape", "8", "8", "--out", out],
           "pack_dataset.py": [pth, out], "confusion_matrix.py": [pth, out, out], "get_flops.py": [pth],
           "print_config.py": [pth], "check_dataset.py": [pth], "browse_dataset.py": [pth, "--output-dir", out],
           "convert_weights.py": [pth, out, "--mmseg-config", pth], "image_demo.py": ["img.png", pth, "--out-file", out]}
  takes_config = lambda source: 'add_argument("config"' in source or '"--mmseg-config"' in source
  assert {p for p in os.listdir(os.path.join(ROOT, "tools"))
          if p.endswith(".py") and takes_config(open(os.path.join(ROOT, "tools", p)).read())} == set(argvs)
  for tool, argv in argvs.items():
    with pytest.raises(ValueError, match=message):
      _tool(tool, *argv)
  assert not os.path.exists(out)


def test_image_demo_with_a_checkpoint_as_config_says_so(not_configs, tmp_path):
  # The command, as a user types it: the mistake named, not a UnicodeDecodeError.
  pth, message = not_configs["checkpoint"]
  r = subprocess.run([sys.executable, "tools/image_demo.py", "demo.png", pth, "--out-file", str(tmp_path / "o.png")],
                     cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode != 0
  assert message in r.stderr and "tools/convert_weights.py" in r.stderr
  assert "UnicodeDecodeError" not in r.stderr


@pytest.mark.parametrize("kind", ["checkpoint", "directory"])
def test_main_names_a_config_flag_that_is_no_config(kind, not_configs, tmp_path):
  # ml_collections would import the file: "source code string cannot contain null bytes" for a
  # .pth, and for a directory an error only when the config is first used.
  import main
  path, message = not_configs[kind]
  with pytest.raises(SystemExit, match=message):
    main.parse_flags(["main.py", f"--config={path}", f"--workdir={tmp_path}"])


# --- units of metrics.jsonl -------------------------------------------------------------------

def test_metrics_rows_name_their_time_unit(tmp_path):
  import time
  import jax.numpy as jnp
  from segjax.train import loop, writers
  writer = writers.MetricWriter(str(tmp_path))
  log = loop.LogMetrics(interval=2, total=2, writer=writer, schedule=lambda step: 0.01, train_set=None)
  before = time.time()
  for step in (1, 2):
    log(step, None, {"loss": jnp.float32(0.5), "decode.acc_seg": jnp.float32(80.0), "index": jnp.arange(2)})
  writer.write_scalars(2, {"aAcc": 0.9, "mIoU": 0.25}, mode="val")
  writer.close()
  train, val = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  # Train rows: seconds per step; every row: when it was written (Unix seconds); no field means both.
  assert "time" not in train and "time" not in val
  assert 0 <= train["sec_per_step"] < time.time() - before + 1
  assert before <= train["timestamp"] <= val["timestamp"] <= time.time()
  assert val["mIoU"] == 0.25 and train["loss"] == 0.5 and train["decode.acc_seg"] == 80.0


def test_analyze_logs_reads_rows_from_before_the_rename(tmp_path):
  # A run resumed across the rename has both kinds of rows in one metrics.jsonl.
  log = tmp_path / "metrics.jsonl"
  rows = [{"mode": "train", "step": 10, "time": 1.5, "loss": 2.0},
          {"mode": "val", "step": 10, "time": 1.7e9, "mIoU": 0.1},
          {"mode": "train", "step": 20, "timestamp": 1.8e9, "sec_per_step": 1.25, "loss": 1.0}]
  log.write_text("".join(json.dumps(r) + "\n" for r in rows))
  sys.path.insert(0, os.path.join(ROOT, "tools"))
  try:
    import analyze_logs
  finally:
    sys.path.pop(0)
  records = analyze_logs.read_records(str(log))
  assert analyze_logs.read_series(records, "sec_per_step") == ([10, 20], [1.5, 1.25])
  assert analyze_logs.read_series(records, "timestamp") == ([10, 20], [1.7e9, 1.8e9])
  with pytest.raises(SystemExit, match="no 'time' values; its keys: loss, mIoU, sec_per_step"):
    analyze_logs.main([str(log), "--keys", "time", "--out", str(tmp_path / "c.png")])


# --- progress bars ----------------------------------------------------------------------------

class _Terminal(io.StringIO):
  def isatty(self):
    return True


def _square(x):
  return x * x


def test_converters_show_progress_on_a_terminal_only(tmp_path, monkeypatch):
  import zipfile
  from segjax.data import prepare
  archive = str(tmp_path / "labels.zip")
  with zipfile.ZipFile(archive, "w") as z:
    for i in range(3):
      z.writestr(f"a/{i}.txt", str(i))
  for terminal in (True, False):
    stderr = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    # nproc=1: no fork of this JAX process (tests/test_convert_datasets.py runs --nproc 2).
    assert prepare.parallel([(_square, i) for i in range(5)], nproc=1, desc="squaring") == [0, 1, 4, 9, 16]
    assert prepare.parallel([(_square, i) for i in range(4)], nproc=1) == [0, 1, 4, 9]
    prepare.extract(archive, str(tmp_path / f"out{terminal}"))
    assert sorted(os.listdir(tmp_path / f"out{terminal}" / "a")) == ["0.txt", "1.txt", "2.txt"]
    shown = stderr.getvalue()
    if terminal:
      assert "squaring: 100%" in shown and "5/5" in shown and "converting: 100%" in shown and "4/4" in shown
      assert "unpacking labels.zip: 100%" in shown and "3/3" in shown
    else:
      assert shown == ""


def test_check_dataset_shows_progress_on_a_terminal_and_keeps_stdout(tiny_dataset, monkeypatch, capsys):
  argv = ["configs/pspnet_synthetic.py", "--cfg-options", f"data.train.data_root={tiny_dataset}",
          f"data.val.data_root={tiny_dataset}"]
  outputs = []
  for stderr in (_Terminal(), io.StringIO()):
    monkeypatch.setattr(sys, "stderr", stderr)
    with pytest.raises(SystemExit) as e:
      _tool("check_dataset.py", *argv)
    assert e.value.code == 0
    outputs.append((capsys.readouterr().out, stderr.getvalue()))
  (out_terminal, bars), (out_pipe, no_bars) = outputs
  assert "checking train: 100%" in bars and "16/16" in bars and "checking val: 100%" in bars and "8/8" in bars
  assert no_bars == "" and out_terminal == out_pipe
  assert "== train: 16 images" in out_pipe and "== val: 8 images" in out_pipe
