"""The training loop: a step lowers the loss, a killed run resumes to the same parameters, and
config / data errors name what is wrong."""
import functools
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import traverse_util

from conftest import ROOT
from configs import pspnet_synthetic
from segjax import sharding
from segjax.config import to_plain
from segjax.models import build_segmentor
from segjax.train import checkpoint, loop, optim


def tiny_config(data_root, total_iters=4):
  c = pspnet_synthetic.get_config()
  m = c.model
  m.backbone.stem_channels = m.backbone.base_channels = 8
  m.decode_head.in_channels, m.decode_head.channels = 64, 16
  m.auxiliary_head.in_channels, m.auxiliary_head.channels = 32, 8
  for split in (c.data.train, c.data.val, c.data.test):
    split.data_root = data_root
  c.data.train.pipeline[2]["img_scale"] = (64, 64)
  c.data.train.pipeline[3]["crop_size"] = (48, 48)
  c.data.train.pipeline[-1]["size"] = (48, 48)
  c.data.samples_per_gpu = 4
  c.data.workers_per_gpu = 0
  c.total_iters = total_iters
  c.log_interval = 1
  c.evaluation.interval = 4
  c.checkpoint.interval = 2
  return c


def tiny_step(c, **kwargs):
  """(initial train state, unjitted train step) of config ``c``'s model."""
  model = build_segmentor(to_plain(c.model))
  tx, schedule = optim.build_optimizer(c)
  state = loop.create_train_state(model, tx, jax.random.PRNGKey(0))
  return state, functools.partial(loop.train_step, model=model, tx=tx, schedule=schedule, **kwargs)


def test_train_steps_reduce_loss(tiny_dataset):
  c = tiny_config(tiny_dataset, total_iters=1000)  # the poly lr stays near its base value
  state, step = tiny_step(c)
  step = jax.jit(step)
  from segjax.data.datasets import build_dataset
  from segjax.data import loader
  batch = next(iter(loader.train_loader(build_dataset(c.data.train), 4, seed=0)))
  batch.pop("index")
  losses = []
  for _ in range(15):
    state, logs = step(state, batch)
    losses.append(float(logs["loss"]))
  assert losses[-1] < 0.7 * losses[0]
  assert int(state.step) == 15


def _assert_same_params(workdir_a, workdir_b):
  """The two runs' final checkpoints hold bitwise-equal variables."""
  a = traverse_util.flatten_dict(checkpoint.load_variables(workdir_a))
  b = traverse_util.flatten_dict(checkpoint.load_variables(workdir_b))
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg="/".join(k))


def test_killed_run_resumes_to_identical_parameters(tiny_dataset, tmp_path, monkeypatch):
  full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
  summary = loop.train_and_evaluate(tiny_config(tiny_dataset), full)
  assert 0.0 <= summary["mIoU"] <= 1.0
  assert os.path.exists(os.path.join(full, "metrics.jsonl"))
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(full, "tb")))

  calls = {"n": 0}
  real_global_batch = sharding.global_batch

  def sigterm_during_third_step(batch, mesh):
    calls["n"] += 1
    if calls["n"] == 3:
      os.kill(os.getpid(), signal.SIGTERM)
    return real_global_batch(batch, mesh)

  monkeypatch.setattr(sharding, "global_batch", sigterm_during_third_step)
  with pytest.raises(SystemExit):
    loop.train_and_evaluate(tiny_config(tiny_dataset), killed)
  assert checkpoint.make_manager(killed, None).latest_step() == 3  # SIGTERM saved step 3
  monkeypatch.setattr(sharding, "global_batch", real_global_batch)
  loop.train_and_evaluate(tiny_config(tiny_dataset), killed)  # resumes at step 3

  _assert_same_params(full, killed)


def test_sigkilled_run_resumes_to_identical_parameters(tiny_dataset, tmp_path):
  """SIGKILL (no chance to save) after the step-2 checkpoint: the resumed run repeats the lost
  steps from that checkpoint and its data position, and ends bitwise equal to an unbroken run.
  All three runs are processes of their own with one environment, so they compile alike."""
  full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
  total = 12

  def run(workdir):
    script = (f"import sys; sys.path[:0] = [{ROOT!r}, {os.path.join(ROOT, 'tests')!r}]\n"
              "from test_train import tiny_config\nfrom segjax.train import loop\n"
              f"loop.train_and_evaluate(tiny_config({tiny_dataset!r}, total_iters={total}), {workdir!r})\n")
    return subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)

  assert run(full).wait(timeout=600) == 0
  proc = run(killed)
  ckpt_dir = os.path.join(killed, "checkpoints")

  def finished_steps():  # orbax renames a step's folder to the bare number once it is complete
    names = os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []
    return sorted(int(n) for n in names if n.isdigit())

  deadline = time.monotonic() + 300
  while not finished_steps() and proc.poll() is None and time.monotonic() < deadline:
    time.sleep(0.05)
  proc.kill()
  proc.wait()
  assert finished_steps() and max(finished_steps()) < total, finished_steps()
  assert run(killed).wait(timeout=600) == 0
  _assert_same_params(full, killed)


def _main(*args, timeout=300):
  return subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


def test_unknown_config_key_is_named(tmp_path):
  r = _main("--config=configs/pspnet_synthetic.py", f"--workdir={tmp_path}", "--config.nonexistent=1")
  assert r.returncode != 0
  assert "nonexistent" in r.stderr


def test_missing_data_root_names_path_and_preparation(tmp_path):
  missing = str(tmp_path / "no_such_data")
  r = _main("--config=configs/pspnet_synthetic.py", f"--workdir={tmp_path / 'w'}",
            f"--config.data.train.data_root={missing}")
  assert r.returncode != 0
  assert missing in r.stderr and "ensure_dataset" in r.stderr


def test_bfloat16_step_keeps_float32_state(tiny_dataset):
  import jax.numpy as jnp
  c = tiny_config(tiny_dataset, total_iters=1000)
  rng = np.random.default_rng(0)
  batch = {"img": rng.normal(size=(2, 48, 48, 3)).astype(np.float32),
           "gt_semantic_seg": rng.integers(0, 6, size=(2, 48, 48)).astype(np.int32)}
  out = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    state, step = tiny_step(c, compute_dtype=dtype)
    out[dtype] = jax.jit(step)(state, batch)
  (s16, logs16), (_, logs32) = out[jnp.bfloat16], out[jnp.float32]
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves((s16.params, s16.batch_stats)))
  assert float(logs16["loss"]) == pytest.approx(float(logs32["loss"]), rel=0.05)
  assert float(logs16["loss"]) != float(logs32["loss"])  # it really computed in bf16


def test_pretrained_backbone_from_imagenet_style_pth(tiny_dataset, tmp_path):
  torch = pytest.importorskip("torch")
  c = tiny_config(tiny_dataset)
  model = build_segmentor(to_plain(c.model))
  tx, _ = optim.build_optimizer(c)
  source = loop.create_train_state(model, tx, jax.random.PRNGKey(1))
  fresh = loop.create_train_state(model, tx, jax.random.PRNGKey(2))
  # An ImageNet-style checkpoint of the source backbone: mmseg names, OIHW kernels, and an fc.
  state_dict = {"fc.weight": torch.zeros(10, 64), "fc.bias": torch.zeros(10)}
  for path, value in traverse_util.flatten_dict(source.params["backbone"]).items():
    value = np.array(value)
    value = np.ascontiguousarray(value.transpose(3, 2, 0, 1)) if value.ndim == 4 else value
    state_dict[optim.torch_name(path)] = torch.from_numpy(value)
  for path, value in traverse_util.flatten_dict(source.batch_stats["backbone"]).items():
    name = ".".join(path[:-1]) + {"mean": ".running_mean", "var": ".running_var"}[path[-1]]
    state_dict[name] = torch.from_numpy(np.array(value))
  pth = str(tmp_path / "resnet_imagenet.pth")
  torch.save(state_dict, pth)
  loaded = loop._load_pretrained_backbone(fresh, pth, "ResNetV1c")
  for a, b in zip(jax.tree.leaves(loaded.params["backbone"]), jax.tree.leaves(source.params["backbone"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for a, b in zip(jax.tree.leaves(loaded.params["decode_head"]), jax.tree.leaves(fresh.params["decode_head"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # heads keep their init
  with pytest.raises(FileNotFoundError, match="does not download"):
    loop._load_pretrained_backbone(fresh, "open-mmlab://resnet50_v1c", "ResNetV1c")


def test_nan_loss_stops_with_step_and_files(tiny_dataset, tmp_path, monkeypatch):
  real_global_batch = sharding.global_batch

  def poisoned(batch, mesh):
    batch = dict(batch, img=np.full_like(batch["img"], np.nan))
    return real_global_batch(batch, mesh)

  monkeypatch.setattr(sharding, "global_batch", poisoned)
  with pytest.raises(loop.NonFiniteLossError, match=r"at step 1 .*batch files: \['0"):
    loop.train_and_evaluate(tiny_config(tiny_dataset), str(tmp_path / "nan"))
