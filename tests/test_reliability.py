"""A training run never loses work and every failure says what to do (issue 18): evaluation and
checkpoints, damaged checkpoints, the workdir lock, loader workers outliving a killed run, resume
after a config change, bad config values, untrusted result files, conversion targets and slide
inference's memory. What kills or locks runs in a process of its own."""
import copy
import functools
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from segjax import apis
from segjax.config import schedule, to_plain, validate
from segjax.data import datasets, loader
from segjax.data.transforms import DataError
from segjax.models import build_segmentor
from segjax.train import checkpoint, loop, optim, workdir as workdir_lib
from test_train import tiny_config


def _finished_steps(workdir):
  """Step folders orbax has finalised (it renames a step's temporary folder once complete)."""
  folder = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []


@pytest.fixture(scope="module")
def failed_run(tiny_dataset, tmp_path_factory):
  """A run (checkpoint every 2 steps, evaluation every step) whose evaluation fails at step 3, a
  step without a checkpoint of its own; it records, at each evaluation, whether orbax was still
  writing. Leaves checkpoints 2 and 3: the workdir the other tests damage and resume."""
  workdir = str(tmp_path_factory.mktemp("reliability") / "run")
  c = tiny_config(tiny_dataset, total_iters=4)
  c.evaluation.interval, c.checkpoint.interval = 1, 2
  seen, managers = [], []
  real_make_manager, real_evaluate = checkpoint.make_manager, loop.evaluate

  def keep_manager(*args):
    managers.append(real_make_manager(*args))
    return managers[-1]

  def evaluation_failing_at_step_3(eval_fn, variables, dataset, host_batch):
    seen.append({"saving": managers[0].is_saving_in_progress(), "steps": _finished_steps(workdir)})
    if len(seen) == 3:
      raise OSError("val image 00003.png: cannot identify image file")
    return real_evaluate(eval_fn, variables, dataset, host_batch)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(checkpoint, "make_manager", keep_manager)
    mp.setattr(loop, "evaluate", evaluation_failing_at_step_3)
    with pytest.raises(loop.EvaluationError) as error:
      loop.train_and_evaluate(c, workdir)
  return workdir, c, seen, str(error.value)


def test_evaluation_runs_on_a_complete_checkpoint_and_a_failing_one_saves_first(failed_run):
  workdir, _, seen, message = failed_run
  # Step 2's checkpoint was finished on disk before its evaluation began.
  assert seen[1] == {"saving": False, "steps": [2]}, seen
  # Step 3 had no checkpoint due; its failing evaluation saved one and says so.
  assert _finished_steps(workdir) == [2, 3]
  assert "evaluation at step 3 failed" in message and os.path.join(workdir, "checkpoints", "3") in message
  assert "00003.png" in message


def test_val_split_is_checked_before_training(tiny_dataset, tmp_path):
  data = str(tmp_path / "data")
  shutil.copytree(tiny_dataset, data)
  val_dir = os.path.join(data, "img_dir", "val")
  broken = sorted(os.listdir(val_dir))[0]
  with open(os.path.join(val_dir, broken), "wb") as f:
    f.write(b"not an image")
  with pytest.raises(DataError, match=rf"sampled validation images(.|\n)*{broken}"):
    loop.train_and_evaluate(tiny_config(data), str(tmp_path / "run"))
  assert _finished_steps(str(tmp_path / "run")) == []


def _abstract_state(c):
  model = build_segmentor(to_plain(c.model))
  tx, _ = optim.build_optimizer(c)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shapes = jax.eval_shape(functools.partial(loop.create_train_state, model, tx), jax.random.PRNGKey(0))
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), shapes)


@pytest.mark.parametrize("damage", ["truncate state/_METADATA", "delete state", "delete data"])
def test_damaged_latest_checkpoint_falls_back_and_is_kept(failed_run, tmp_path, damage, caplog):
  source, c, _, _ = failed_run
  workdir = str(tmp_path / "run")
  shutil.copytree(source, workdir)
  newest = os.path.join(workdir, "checkpoints", "3")
  verb, target = damage.split(" ")
  if verb == "truncate":
    os.truncate(os.path.join(newest, target), 0)
  else:
    shutil.rmtree(os.path.join(newest, target))
  kept = sorted(os.path.relpath(os.path.join(d, f), newest) for d, _, fs in os.walk(newest) for f in fs)

  train_set = datasets.build_split(c.data, "train")
  data_iter = loader.TrainIterator(train_set, 4, c.seed)
  state, step = checkpoint.restore_latest(checkpoint.make_manager(workdir, None), _abstract_state(c),
                                          data_iter)
  assert step == 2 and int(state.step) == 2
  assert loader.elements_consumed(data_iter.get_state()) == 2 * 4
  assert f"checkpoint {newest} does not read" in caplog.text
  # Kept, file for file, out of the way of the step the resumed run saves again.
  moved = os.path.join(workdir, checkpoint.DAMAGED_DIR, "3")
  assert sorted(os.path.relpath(os.path.join(d, f), moved) for d, _, fs in os.walk(moved) for f in fs) == kept
  assert _finished_steps(workdir) == [2]


def test_no_readable_checkpoint_fails_listing_each_and_moves_nothing(failed_run, tmp_path):
  source, c, _, _ = failed_run
  workdir = str(tmp_path / "run")
  shutil.copytree(source, workdir)
  for step in (2, 3):
    shutil.rmtree(os.path.join(workdir, "checkpoints", str(step), "state"))
  with pytest.raises(checkpoint.CheckpointError, match=r"step 3: .*\n  step 2: "):
    checkpoint.restore_latest(checkpoint.make_manager(workdir, None), _abstract_state(c))
  assert _finished_steps(workdir) == [2, 3]


def test_resume_with_another_config_names_the_keys(failed_run, tmp_path):
  source, run_config, _, _ = failed_run
  workdir = str(tmp_path / "run")
  shutil.copytree(source, workdir)
  c = copy.deepcopy(run_config)
  c.model.decode_head.channels = 32
  c.optimizer.lr = 0.03
  with pytest.raises(workdir_lib.ConfigMismatchError) as error:
    loop.train_and_evaluate(c, workdir)
  message = str(error.value)
  assert "model.decode_head.channels: 16 in the run, 32 now" in message
  assert "optimizer.lr: 0.02 in the run, 0.03 now" in message
  assert f"--config.load_from={workdir}" in message
  # The number of workers, the length and the intervals are the run's to change.
  saved = workdir_lib._as_json(tiny_config(c.data.train.data_root, total_iters=4))
  changed = tiny_config(c.data.train.data_root, total_iters=8)
  changed.data.workers_per_gpu, changed.evaluation.interval = 2, 1
  assert workdir_lib.config_differences(saved, changed) == []


def test_data_position_restores_under_another_worker_count(tiny_dataset):
  train_set = datasets.build_split(tiny_config(tiny_dataset).data, "train")
  serial = loader.TrainIterator(train_set, 3, seed=1)
  parallel = loader.TrainIterator(train_set, 3, seed=1, worker_count=2)
  batches = []
  for n in range(3):  # batches of 3 leave the 2 workers' round robin mid-cycle every other batch
    # grain's own states are what state_at computes from the position alone.
    assert serial.get_state() == loader.state_at(3 * n, 0)
    assert parallel.get_state() == loader.state_at(3 * n, 2), (n, parallel.get_state())
    batches.append(next(serial))
    np.testing.assert_array_equal(next(parallel)["img"], batches[-1]["img"])
  # A state written with 2 workers resumes serially, and a serial one with 2 workers.
  resumed = loader.TrainIterator(train_set, 3, seed=1)
  resumed.set_state(parallel.get_state())
  np.testing.assert_array_equal(next(resumed)["img"], next(serial)["img"])
  parallel.set_state(loader.state_at(3, 0))
  np.testing.assert_array_equal(next(parallel)["img"], batches[1]["img"])
  parallel.close()


def test_second_run_on_a_workdir_is_refused_and_a_killed_holder_does_not_block(tiny_dataset, tmp_path):
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  holder = subprocess.Popen(
      [sys.executable, "-c", f"import sys, time; sys.path.insert(0, {ROOT!r})\n"
       "from segjax.train import workdir\n"
       f"lock = workdir.lock({workdir!r}); print('locked', flush=True); time.sleep(600)"],
      stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    start = time.monotonic()
    with pytest.raises(workdir_lib.WorkdirBusyError, match=rf"{workdir} is in use by pid {holder.pid} "):
      loop.train_and_evaluate(tiny_config(tiny_dataset), workdir)
    assert time.monotonic() - start < 10  # at once, not at the first save
  finally:
    holder.kill()
    holder.wait()
  workdir_lib.lock(workdir).close()  # the kernel dropped the killed holder's lock


def _descendants(pid):
  """Live (non-zombie) processes below ``pid``, from /proc."""
  parents = {}
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        with open(f"/proc/{entry}/stat") as f:
          fields = f.read().rsplit(")", 1)[1].split()
      except OSError:
        continue
      if fields[0] != "Z":
        parents[int(entry)] = int(fields[1])
  found, frontier = set(), {pid}
  while frontier:
    frontier = {p for p, parent in parents.items() if parent in frontier} - found
    found |= frontier
  return found


def _alive(pid):
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


def test_loader_workers_end_when_the_training_process_is_killed(tiny_dataset):
  script = (f"import sys, time; sys.path[:0] = [{ROOT!r}, {os.path.join(ROOT, 'tests')!r}]\n"
            "from segjax.data import datasets, loader\nfrom test_train import tiny_config\n"
            "if __name__ == '__main__':\n"
            f"  it = loader.TrainIterator(datasets.build_split(tiny_config({tiny_dataset!r}).data, 'train'), 4, 0, 2)\n"
            "  next(it); print('running', flush=True); time.sleep(600)\n")
  trainer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
  try:
    assert trainer.stdout.readline().strip() == "running"
    workers = _descendants(trainer.pid)
    assert len(workers) >= 2, workers  # two grain workers (and multiprocessing's resource tracker)
  finally:
    trainer.send_signal(signal.SIGKILL)
    trainer.wait()
  deadline = time.monotonic() + 20
  while any(map(_alive, workers)) and time.monotonic() < deadline:
    time.sleep(0.2)
  assert not [p for p in workers if _alive(p)], "loader processes outlived the killed trainer"


@pytest.mark.parametrize("key, value, expected", [
    ("checkpoint.interval", 0, "checkpoint.interval=0: expected an integer >= 1"),
    # 0 means no evaluation, as mmseg's --no-validate (tests/test_eval_conformance.py).
    ("evaluation.interval", -1, "evaluation.interval=-1: expected an integer >= 0"),
    ("total_iters", -3, "total_iters=-3: expected an integer >= 1"),
    ("compute_dtype", "foo", "compute_dtype='foo': expected one of float32, bfloat16"),
    ("data.workers_per_gpu", -1, "data.workers_per_gpu=-1: expected an integer >= 0")])
def test_bad_config_values_are_refused_by_name(tiny_dataset, key, value, expected):
  c = tiny_config(tiny_dataset)
  *parents, leaf = key.split(".")
  node = c
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
    validate(c)
  assert schedule(5)["checkpoint"]["interval"] == schedule(5)["evaluation"]["interval"] == 1


def test_main_prints_one_line_for_bad_flags(tmp_path):
  for flag, expected in [("--config.checkpoint.interval=0", "checkpoint.interval=0"),
                         ("--config.foo=1", "--config.foo=1: the config has no key 'foo'")]:
    r = subprocess.run([sys.executable, "main.py", "--config=configs/pspnet_synthetic.py",
                        f"--workdir={tmp_path}", flag], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    errors = [line for line in r.stderr.splitlines() if "Warning" not in line and line.strip()]
    assert r.returncode != 0 and len(errors) == 1 and expected in errors[0], r.stderr


def test_confusion_matrix_refuses_pickles(tiny_dataset, tmp_path):
  sys.path.insert(0, os.path.join(ROOT, "tools"))
  import confusion_matrix
  marker = tmp_path / "code_ran"

  class RunsCode:
    def __reduce__(self):
      return (open, (str(marker), "w"))

  crafted = tmp_path / "results.pkl"
  crafted.write_bytes(pickle.dumps([RunsCode()]))
  objects = tmp_path / "objects.npz"
  np.savez(objects, filenames=np.array(["a.png"]), pred_00000=np.array([RunsCode()], dtype=object))
  for path in (crafted, objects):
    with pytest.raises(SystemExit, match="refused|tools/test.py --out"):
      confusion_matrix.main(["configs/pspnet_synthetic.py", str(path), str(tmp_path / "cm"),
                             "--cfg-options", f"data.val.data_root={tiny_dataset}"])
  assert not marker.exists()


def test_convert_weights_refuses_a_training_workdir(failed_run, tmp_path):
  source, _, _, _ = failed_run
  workdir = str(tmp_path / "run")
  shutil.copytree(source, workdir)
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  variables = {"params": {"w": np.zeros(2, np.float32)}}
  with pytest.raises(FileExistsError, match=rf"{workdir} is not empty and is not an earlier conversion"):
    apis.save_converted(workdir, {"type": "EncoderDecoder"}, variables)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before
  converted = str(tmp_path / "converted")  # new, then again over itself: both fine
  apis.save_converted(converted, {"type": "EncoderDecoder"}, variables)
  apis.save_converted(converted, {"type": "EncoderDecoder"}, variables)


def test_slide_inference_memory_is_the_crop_batch_plus_the_output():
  """Slide inference on an image 30x the crop: XLA's scratch memory is the crop's encode_decode
  plus a crop of logits, and the program holds no image-sized constant (the per-pixel crop count
  was one, embedded and constant-folded: +290 MB and 3x the compile time at 4000x3000)."""
  from segjax.models.segmentors.inference import encode_decode, slide_inference
  from test_models import BN, backbone
  model = build_segmentor(dict(type="EncoderDecoder", backbone=backbone(base=8), decode_head=dict(
      type="FCNHead", in_channels=64, in_index=3, channels=8, num_convs=1, num_classes=5, norm_cfg=BN)))
  crop, stride = (64, 64), (48, 48)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *crop, 3))))
  image = lambda h, w: jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)
  slide = jax.jit(lambda v, x: slide_inference(model, v, x, crop, stride))
  small, large = slide.lower(variables, image(112, 112)), slide.lower(variables, image(384, 512))
  assert len(large.as_text()) - len(small.as_text()) < 10_000
  crop_temp = jax.jit(lambda v, x: encode_decode(model, v, x)).lower(
      variables, image(*crop)).compile().memory_analysis().temp_size_in_bytes
  memory = large.compile().memory_analysis()
  assert memory.output_size_in_bytes == 384 * 512 * 5 * 4
  assert memory.temp_size_in_bytes <= crop_temp + 2 * 64 * 64 * 5 * 4, (memory.temp_size_in_bytes, crop_temp)
