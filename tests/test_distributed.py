"""One loop, any mesh: a step over 8 devices equals the single-device step (BatchNorm over the
global batch), and two processes on 127.0.0.1 train, checkpoint and evaluate like one."""
import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import ROOT


def _env(devices):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def test_sharded_step_equals_single_device_step():
  r = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "sharded_step_check.py"), ROOT],
                     env=_env(8), capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  out = json.loads(r.stdout.strip().splitlines()[-1])
  assert out["devices"] == 8
  assert out["loss"][0] == pytest.approx(out["loss"][1], rel=1e-6)
  # The step moves parameters by ~1e-4; the two meshes agree to float32 rounding. Per-device
  # BatchNorm statistics would differ by orders of magnitude more.
  assert out["param_change"] > 1e-5
  assert out["params"] < 1e-6 and out["params_4x2"] < 1e-6
  assert out["batch_stats"] < 1e-5


WINOGRAD_ON_TWO_DEVICES = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from segjax import layers
mesh = Mesh(np.asarray(jax.devices()), ("data",))
x = np.random.default_rng(0).normal(size=(4, 32, 40, 64)).astype(np.float32)
kernel = np.random.default_rng(1).normal(size=(3, 3, 64, 64)).astype(np.float32) / 24
batch = NamedSharding(mesh, P("data"))
args = jax.device_put(x, batch), jax.device_put(kernel, NamedSharding(mesh, P()))
compiled = jax.jit(layers.conv3x3, out_shardings=batch).lower(*args).compile()
out = compiled(*args)
print(len(jax.devices()), any(op in compiled.as_text() for op in ("all-gather", "all-to-all", "collective-permute")),
      float(np.abs(np.asarray(out) - np.asarray(jax.jit(layers.conv3x3)(x, kernel))).max()))
"""


def test_winograd_convolution_keeps_a_sharded_batch_on_its_devices():
  """``layers.conv3x3`` steps through tile rows, each step over the whole batch, so a
  batch-sharded input stays sharded: no device gathers the others' images."""
  r = subprocess.run([sys.executable, "-c", WINOGRAD_ON_TWO_DEVICES], cwd=ROOT, env=_env(2),
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  devices, communicates, difference = r.stdout.split()
  assert devices == "2" and communicates == "False"
  assert float(difference) <= 1e-5


TINY = ["--config.model.backbone.base_channels=8", "--config.model.backbone.stem_channels=8",
        "--config.model.decode_head.in_channels=64", "--config.model.decode_head.channels=16",
        "--config.model.auxiliary_head.in_channels=32", "--config.model.auxiliary_head.channels=8",
        "--config.total_iters=4", "--config.log_interval=1", "--config.evaluation.interval=4",
        "--config.checkpoint.interval=2", "--config.data.samples_per_gpu=2",
        "--config.data.workers_per_gpu=0"]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _records(workdir, mode):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["mode"] == mode]


def test_two_processes_train_checkpoint_and_evaluate_like_one(tiny_dataset, tmp_path):
  workdir = str(tmp_path / "run")
  data = [f"--config.data.train.data_root={tiny_dataset}", f"--config.data.val.data_root={tiny_dataset}"]
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, "main.py", "--config=configs/pspnet_synthetic.py", f"--workdir={workdir}",
       "--config.distributed.enabled=True", f"--config.distributed.coordinator_address=127.0.0.1:{port}",
       "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}", *TINY, *data],
      cwd=ROOT, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert "devices: 4 (2 local), global batch 8" in outs[0][1]
  step_dir = os.path.join(workdir, "checkpoints", "4")
  assert sorted(os.listdir(os.path.join(step_dir, "data")))[-2:] == ["process_0-of-2.json", "process_1-of-2.json"]
  distributed_val = _records(workdir, "val")[-1]
  # Evaluating the same checkpoint in one process on one device gives the same metrics.
  r = subprocess.run([sys.executable, "main.py", "--config=configs/pspnet_synthetic.py",
                      f"--workdir={workdir}", "--mode=eval", *TINY, *data],
                     cwd=ROOT, env=_env(1), capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  single = _records(workdir, "eval")[-1]
  for key in ("aAcc", "mIoU", "mAcc"):
    assert single[key] == pytest.approx(distributed_val[key], abs=1e-9), key


def test_dead_peer_makes_the_other_process_exit(tiny_dataset, tmp_path):
  import time
  port = _free_port()
  data = [f"--config.data.train.data_root={tiny_dataset}", f"--config.data.val.data_root={tiny_dataset}"]
  long_run = [a for a in TINY if not a.startswith(("--config.total_iters", "--config.evaluation",
                                                  "--config.checkpoint"))]
  long_run += ["--config.total_iters=100000", "--config.evaluation.interval=100000",
               "--config.checkpoint.interval=100000"]
  procs = [subprocess.Popen(
      [sys.executable, "main.py", "--config=configs/pspnet_synthetic.py", f"--workdir={tmp_path / 'run'}",
       "--config.distributed.enabled=True", f"--config.distributed.coordinator_address=127.0.0.1:{port}",
       "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}",
       "--config.distributed.heartbeat_timeout_seconds=10", *long_run, *data],
      cwd=ROOT, env=_env(1), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  log = tmp_path / "run" / "metrics.jsonl"
  deadline = time.time() + 300
  while not (log.exists() and log.read_text().count("\n") >= 2):  # both are training
    assert time.time() < deadline and procs[0].poll() is None, "training did not start"
    time.sleep(1)
  procs[1].kill()
  try:
    _, err = procs[0].communicate(timeout=120)  # hangs forever without the heartbeat
  finally:
    for p in procs:
      p.kill()
  assert procs[0].returncode != 0
  assert "heartbeat timeout" in err or "Gloo" in err


def test_mesh_from_config_names_what_does_not_fit():
  from segjax import sharding
  assert sharding.mesh_shape({"data": -1, "fsdp": 2, "model": 1}, 8) == {"data": 4, "fsdp": 2, "model": 1}
  assert sharding.mesh_shape(None, 8) == {"data": 8}
  with pytest.raises(ValueError, match="does not fit 8 devices"):
    sharding.mesh_shape({"data": 3}, 8)
  with pytest.raises(ValueError, match="does not fit"):
    sharding.mesh_shape({"data": -1, "fsdp": -1}, 8)
  with pytest.raises(ValueError, match=r"\['model'\] > 1"):
    sharding.mesh_shape({"data": -1, "model": 2}, 8)
  mesh = sharding.make_mesh({"data": -1, "model": 1})
  assert mesh.axis_names == ("data", "model")
