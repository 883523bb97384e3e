"""The one training loop: jit over a data-parallel mesh (the state optionally fsdp-sharded), then
periodic actions after each step.

``train_and_evaluate(config, workdir)`` resumes from the latest checkpoint in ``workdir`` when one
exists (state, step and data-iterator position), else starts from ``config.load_from`` weights or
from scratch. After every step the loop calls each periodic action in order: ``LogMetrics``,
``SaveCheckpoint``, ``Evaluate``; ``train_and_evaluate(..., extra_actions=[...])`` appends more
(any callable ``(step, state, logs) -> None``).

What keeps a run's work: the config is validated and both splits' files sampled before anything
compiles; the workdir is locked for the run and keeps the run's config, so a resume with another
config names the keys that differ (``workdir``); a step's checkpoint is complete on disk before
its evaluation starts, and an evaluation that fails saves the state first; a damaged checkpoint
is skipped for the newest one that reads (``checkpoint.restore_latest``).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import signal
import time
from typing import Any, Callable, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics as clu_metrics

from segjax import evaluation, losses, sharding, xla_flags
from segjax.data.datasets import build_split
from segjax.data import check, loader
from segjax.data.transforms import DataError
from segjax.config import to_plain, validate
from segjax.models import build_segmentor, init_compiler_options, init_variables
from segjax.models.segmentors.encoder_decoder import final_decode_head, training_rngs
from segjax.train import checkpoint, optim, workdir as workdir_lib
from segjax.train.writers import MetricWriter


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array


class NonFiniteLossError(RuntimeError):
  pass


class EvaluationError(RuntimeError):
  pass


def create_train_state(model, tx, rng, num_channels: int = 3) -> TrainState:
  init_rng, rng = jax.random.split(rng)
  variables = init_variables(model, init_rng, num_channels)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params), rng=rng)


def train_step(state: TrainState, batch: dict, *, model, tx, schedule,
               compute_dtype=jnp.float32, deterministic: bool = False):
  """One optimizer step on mmseg's ``forward_train`` losses (``_parse_losses``: the total is the
  sum of every ``loss`` term). ``compute_dtype=bfloat16`` runs the forward and backward pass on
  bf16 copies of the float32 parameters and image (mixed precision); losses (mmseg's
  ``force_fp32``), gradients, the optimizer and BatchNorm statistics stay float32.
  ``deterministic``: no dropout / drop path (BatchNorm still in training mode)."""
  rngs = training_rngs(jax.random.fold_in(state.rng, state.step), deterministic)
  cast = lambda tree: jax.tree.map(lambda a: a.astype(compute_dtype), tree)

  def loss_fn(params):
    loss_dict, new_vars = model.apply({"params": cast(params), "batch_stats": state.batch_stats},
                                      cast(batch["img"]), batch["gt_semantic_seg"], train=True,
                                      mode="loss", mutable=["batch_stats"], rngs=rngs)
    loss, logs = losses.parse_losses(jax.tree.map(losses.at_least_float32, loss_dict))
    return loss, (logs, new_vars.get("batch_stats", {}))

  grads, (logs, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = jax.tree.map(lambda p, u: p + u, state.params, updates)
  logs["lr"] = schedule(state.step)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state)
  return new_state, logs


def state_shardings(model, tx, rng, mesh):
  """(abstract train state carrying its shardings, the shardings): ``sharding.state_shardings``
  of ``create_train_state``'s shapes, for the jitted init, the train step and checkpoint restore."""
  abstract = jax.eval_shape(functools.partial(create_train_state, model, tx), rng)
  shardings = sharding.state_shardings(abstract, mesh)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
  return abstract, shardings


def jit_train_step(model, tx, schedule, mesh, state_sharding, compute_dtype=jnp.float32):
  """``train_step`` jitted for ``mesh``: the state in ``state_sharding`` (donated), the batch
  split over the batch axes, the logs replicated. XLA gathers fsdp-sharded parameters for the
  forward and backward pass and sums the gradients onto the shards."""
  return jax.jit(functools.partial(train_step, model=model, tx=tx, schedule=schedule,
                                   compute_dtype=compute_dtype),
                 in_shardings=(state_sharding, sharding.batch_sharding(mesh)),
                 out_shardings=(state_sharding, sharding.replicated(mesh)), donate_argnums=0)


def evaluate(eval_fn, variables, dataset, host_batch_size: int) -> evaluation.AreaTotals:
  """Per-class area totals over ``dataset`` (``evaluation.evaluate_dataset``: each host its share
  on its own devices, progressively, summed over hosts). ``eval_fn``:
  ``evaluation.jit_predict_and_score``."""
  mesh = sharding.make_mesh(local=True)
  # Training parameters (fsdp shards gathered) -> this host's copy, on this host's devices only.
  local_copy = lambda a: a.addressable_data(0) if isinstance(a, jax.Array) else a
  variables = jax.tree.map(local_copy, sharding.gather_sharded(variables))
  variables = jax.device_put(variables, sharding.replicated(mesh))
  return evaluation.evaluate_dataset(eval_fn, variables, dataset, host_batch_size)


def due(step: int, interval: int, total: int) -> bool:
  """Every ``interval`` steps and at the last step, as mmcv's iteration hooks."""
  return step % interval == 0 or step == total


class LogMetrics:
  """Averages every logged value over the interval on device (clu, no host sync per step) and
  writes the means, the lr the step used and the time per step; stops the run on a non-finite
  loss, naming the step and the batch's image files."""

  def __init__(self, interval: int, total: int, writer: MetricWriter, schedule, train_set):
    self.interval, self.total, self.writer, self.schedule = interval, total, writer, schedule
    self.train_set = train_set
    self.means, self.start, self.steps = None, time.time(), 0

  def __call__(self, step: int, state: TrainState, logs: dict) -> None:
    step_means = {k: clu_metrics.Average.from_model_output(v) for k, v in logs.items()
                  if k != "index"}
    self.means = step_means if self.means is None else {
        k: self.means[k].merge(m) for k, m in step_means.items()}
    self.steps += 1
    if not due(step, self.interval, self.total):
      return
    last_loss = float(logs["loss"])
    if not np.isfinite(last_loss):
      files = [(lambda ds, j: ds.img_infos[j]["filename"])(*self.train_set.locate(int(i)))
               for i in np.asarray(logs["index"])]
      raise NonFiniteLossError(f"loss is {last_loss} at step {step} (checked every "
                               f"{self.interval} steps); this step's batch files: {files}")
    out = {k: float(m.compute()) for k, m in self.means.items()}
    out["lr"] = float(self.schedule(step - 1))  # the lr this step used, not the interval mean
    out["sec_per_step"] = per_step = (time.time() - self.start) / max(self.steps, 1)
    self.writer.write_scalars(step, out)
    logging.info("step %d/%d  loss %.4f  lr %.3e  %.3f s/step  eta %s", step, self.total,
                 out["loss"], out["lr"], per_step, _hms(per_step * (self.total - step)))
    self.means, self.start, self.steps = None, time.time(), 0


class SaveCheckpoint:
  """Writes the state and the data iterator's position every ``interval`` steps, at the last
  step, and at once after SIGTERM (then exits with 128 + the signal). orbax writes in the
  background; ``complete`` waits for it."""

  def __init__(self, interval: int, total: int, manager, data_iter, stop: dict):
    self.interval, self.total, self.manager = interval, total, manager
    self.data_iter, self.stop = data_iter, stop
    self.saved_step: int | None = None

  def __call__(self, step: int, state: TrainState, logs: dict) -> None:
    if due(step, self.interval, self.total) or self.stop["signal"]:
      self.save(step, state, force=bool(self.stop["signal"]))
    if self.stop["signal"]:
      self.manager.wait_until_finished()
      logging.warning("signal %d: checkpoint written at step %d, exiting", self.stop["signal"], step)
      raise SystemExit(128 + self.stop["signal"])

  def save(self, step: int, state: TrainState, force: bool = False) -> None:
    checkpoint.save(self.manager, step, state, self.data_iter, force=force)
    self.saved_step = step

  def complete(self, step: int, state: TrainState) -> str:
    """Make sure step ``step`` is on disk, completely (saving it now if it was not due), and
    return its folder."""
    if self.saved_step != step:
      self.save(step, state, force=True)
    self.manager.wait_until_finished()
    return os.path.join(str(self.manager.directory), str(step))


class Evaluate:
  """mmseg's EvalHook: every ``interval`` steps and at the last step (never when ``interval`` is
  0, mmseg's ``--no-validate``), ``metric`` (mIoU, mDice, mFscore or a list) on the val set;
  ``summary`` holds the latest results (mmseg's keys: aAcc, mIoU, mAcc, ..., ``IoU.<class>``),
  which are also logged and written. ``best``: a ``evaluation.BestCheckpoint`` (``save_best``).

  With a ``saver``, the step's checkpoint (when one was due) is complete on disk before the
  evaluation starts, so even a crash that kills the process there (out of memory, a segfault in
  a decoder) loses no trained step; an evaluation that raises saves the step first."""

  def __init__(self, interval: int, total: int, eval_fn, val_set, host_batch: int,
               writer: MetricWriter, saver: SaveCheckpoint | None = None, metric="mIoU",
               best: evaluation.BestCheckpoint | None = None):
    self.interval, self.total, self.eval_fn = interval, total, eval_fn
    self.val_set, self.host_batch, self.writer = val_set, host_batch, writer
    self.saver, self.best = saver, best
    self.metrics = evaluation.metric_names(metric)
    self.summary: dict = {}

  def __call__(self, step: int, state: TrainState, logs: dict) -> None:
    if not self.interval or not due(step, self.interval, self.total):
      return
    if self.saver is not None:
      self.saver.manager.wait_until_finished()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    try:
      totals = evaluate(self.eval_fn, variables, self.val_set, self.host_batch)
    except Exception as e:
      if self.saver is None:
        raise
      folder = self.saver.complete(step, state)
      raise EvaluationError(
          f"evaluation at step {step} failed ({type(e).__name__}: {e}); the training state of step "
          f"{step} is saved in {folder} and the next run resumes from it. Check the val set with "
          "python tools/check_dataset.py CONFIG --split val") from e
    self.summary, tables = evaluation.dataset_results(totals, self.val_set, self.metrics)
    self.writer.write_scalars(step, self.summary, mode="val")
    logging.info("step %d val:\n%s", step,
                 evaluation.report(self.summary, tables, self.val_set.CLASSES))
    if self.best is not None:
      folder = self.best.update(step, self.summary, variables)
      if folder:
        logging.info("best %s %.4f at step %d: %s", self.best.key, self.best.record["score"], step,
                     folder)


def train_and_evaluate(config, workdir: str, extra_actions: Sequence[Callable] = ()) -> dict:
  """Train ``config`` in ``workdir``; returns the last evaluation summary. ``extra_actions``:
  callables ``(step, state, logs)`` run after the built-in actions at every step. The workdir
  is locked for the run (process 0 holds the lock for all hosts); a second run on it fails at
  once naming the first."""
  validate(config)
  os.makedirs(workdir, exist_ok=True)
  lock = workdir_lib.lock(workdir) if jax.process_index() == 0 else None
  try:
    return _train(config, workdir, extra_actions)
  finally:
    if lock is not None:
      lock.close()


def _train(config, workdir: str, extra_actions: Sequence[Callable]) -> dict:
  _log_to_file(workdir)
  mesh = sharding.make_mesh(config.get("mesh"))
  model_cfg = to_plain(config.model)
  model = build_segmentor(model_cfg)
  train_set = build_split(config.data, "train")
  # evaluation.interval=0 (main.py --no-validate): no val set is read, as mmseg's --no-validate.
  val_set = build_split(config.data, "val") if config.evaluation.interval else None
  num_classes = final_decode_head(model_cfg)["num_classes"]
  if train_set.num_classes != num_classes:
    raise ValueError(f"dataset has {train_set.num_classes} classes {train_set.CLASSES} but "
                     f"model.decode_head.num_classes={num_classes}")
  _check_sample(train_set, num_classes, config.data.check_samples, "training")
  if val_set is not None:
    _check_sample(val_set, num_classes, config.data.check_samples, "validation")
  host_batch = config.data.samples_per_gpu * jax.local_device_count()
  global_batch = host_batch * jax.process_count()
  logging.info("devices: %d (%d local), global batch %d", jax.device_count(),
               jax.local_device_count(), global_batch)
  mmseg_batch = config.data.get("mmseg_total_batch")
  if mmseg_batch and mmseg_batch != global_batch:
    logging.warning("global batch %d differs from the %d images per step mmseg trained this config "
                    "with (its published mIoU assumes that); set data.samples_per_gpu so that "
                    "samples_per_gpu x %d devices = %d", global_batch, mmseg_batch,
                    jax.device_count(), mmseg_batch)

  rng = jax.random.PRNGKey(config.seed)
  param_shapes = jax.eval_shape(lambda r: init_variables(model, r)["params"], rng)
  tx, schedule = optim.build_optimizer(config, param_shapes)
  abstract, state_sharding = state_shardings(model, tx, rng, mesh)

  manager = checkpoint.make_manager(workdir, config.checkpoint.max_to_keep)
  resuming = bool(manager.all_steps())
  if jax.process_index() == 0:
    workdir_lib.check_and_save_config(workdir, config, resuming)
  data_iter = loader.TrainIterator(train_set, host_batch, config.seed, config.data.workers_per_gpu)
  with contextlib.ExitStack() as cleanup:  # runs in reverse order, however the run ends
    cleanup.callback(data_iter.close)  # stops grain's worker processes now, not at interpreter exit
    state, start_step = checkpoint.restore_latest(manager, abstract, data_iter)
    if state is None:
      state = jax.jit(functools.partial(create_train_state, model, tx), out_shardings=state_sharding,
                      compiler_options=init_compiler_options())(rng)
      start_step = 0
      if pretrained := _backbone_pretrained(model_cfg):
        key, path, prefix = pretrained
        state = _load_pretrained_backbone(state, path, model_cfg["backbone"], prefix, key)
      if config.load_from:
        loaded = checkpoint.load_variables(config.load_from)
        state = state.replace(params=_fit(loaded["params"], state.params, "params", config.load_from),
                              batch_stats=_fit(loaded["batch_stats"], state.batch_stats, "batch_stats",
                                               config.load_from))
        logging.info("loaded weights from %s", config.load_from)
    else:
      logging.info("resumed from %s at step %d", manager.directory, start_step)

    step_fn = jit_train_step(model, tx, schedule, mesh, state_sharding,
                             jnp.dtype(config.compute_dtype))
    eval_fn = evaluation.jit_predict_and_score(model, model_cfg, num_classes, val_set.ignore_index) \
        if val_set is not None else None
    writer = MetricWriter(workdir)
    cleanup.callback(writer.close)
    stop = {"signal": None}
    previous_handler = signal.signal(signal.SIGTERM, lambda signum, _: stop.update(signal=signum))
    cleanup.callback(signal.signal, signal.SIGTERM, previous_handler)
    cleanup.callback(manager.wait_until_finished)
    total = config.total_iters
    saver = SaveCheckpoint(config.checkpoint.interval, total, manager, data_iter, stop)
    best = (evaluation.BestCheckpoint(workdir, config.evaluation.save_best,
                                      config.evaluation.get("rule"))
            if val_set is not None and config.evaluation.get("save_best") else None)
    evaluator = Evaluate(config.evaluation.interval, total, eval_fn, val_set, host_batch, writer,
                         saver, config.evaluation.metric, best)
    actions: list[Callable] = [LogMetrics(config.log_interval, total, writer, schedule, train_set),
                               saver, evaluator, *extra_actions]
    for step in range(start_step + 1, total + 1):
      batch = next(data_iter)
      indices = batch.pop("index")
      batch = sharding.global_batch(batch, mesh)
      if step == start_step + 1:  # compile apart from the first run (xla_flags.compile_and_trim)
        xla_flags.compile_and_trim(step_fn, state, batch)
      state, logs = step_fn(state, batch)
      logs["index"] = indices  # the batch's dataset indices, for messages naming its files
      for action in actions:
        action(step, state, logs)
  return evaluator.summary


def evaluate_checkpoint(config, workdir: str) -> dict:
  """``--mode=eval``: evaluate the latest checkpoint in ``workdir`` (or ``config.load_from``) on
  the val set with ``evaluation.metric``, as the training loop's evaluation does."""
  model_cfg = to_plain(config.model)
  model = build_segmentor(model_cfg)
  val_set = build_split(config.data, "val")
  variables = checkpoint.load_variables(config.load_from or workdir)
  eval_fn = evaluation.jit_predict_and_score(model, model_cfg, val_set.num_classes, val_set.ignore_index)
  totals = evaluate(eval_fn, variables, val_set, config.data.samples_per_gpu * jax.local_device_count())
  results, tables = evaluation.dataset_results(totals, val_set,
                                               evaluation.metric_names(config.evaluation.metric))
  writer = MetricWriter(workdir)
  writer.write_scalars(int(checkpoint.latest_step(config.load_from or workdir)), results, mode="eval")
  writer.close()
  logging.info("eval:\n%s", evaluation.report(results, tables, val_set.CLASSES))
  return results


def _fit(loaded, target, what: str, path: str):
  """Place loaded arrays like ``target``, failing with the names of keys that do not fit."""
  flat_l = flax.traverse_util.flatten_dict(loaded, sep="/")
  flat_t = flax.traverse_util.flatten_dict(target, sep="/")
  bad = [f"{k}: {np.shape(flat_l.get(k))} vs model {flat_t[k].shape}" for k in flat_t
         if k not in flat_l or np.shape(flat_l[k]) != flat_t[k].shape]
  extra = sorted(set(flat_l) - set(flat_t))
  if bad or extra:
    raise ValueError(f"load_from={path}: {what} do not fit the model:\n  " + "\n  ".join(
        bad + [f"{k}: not in the model" for k in extra]))
  return jax.tree.map(lambda t, v: jax.device_put(np.asarray(v, t.dtype), t.sharding), target,
                      flax.traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat_l.items()}))


def _check_sample(dataset, num_classes: int, samples: int, split: str) -> None:
  """Fail before compiling anything if a sample of the ``split`` set has bad files."""
  if samples <= 0:
    return
  indices = np.random.default_rng(0).permutation(len(dataset))[:samples]
  problems, _ = check.check_dataset(dataset, num_classes, sorted(indices.tolist()))
  if problems:
    raise DataError(f"{len(problems)} problem(s) in {len(indices)} sampled {split} images "
                    f"(python tools/check_dataset.py checks them all):\n  " + "\n  ".join(problems[:20]))


def _backbone_pretrained(model_cfg) -> tuple[str, str, str | None] | None:
  """(config key, path, key prefix) of the checkpoint mmseg initialises the backbone from, in any
  of the forms mmseg configs use: ``model.pretrained``, ``model.backbone.pretrained``, or
  ``model.backbone.init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...)`` (mmcls style:
  only the keys under ``prefix``, without it), or either of the latter two on the network a
  backbone wraps (``model.backbone.backbone_cfg``: BiSeNetV1, ICNet, STDC), whose family's rules
  place it; None when there is none."""
  init_cfg = model_cfg.get("init_cfg")
  if isinstance(init_cfg, dict) and init_cfg.get("type") == "Pretrained":
    raise ValueError(f"model.init_cfg=Pretrained({init_cfg.get('checkpoint')!r}) loads a whole segmentor, "
                     "which segjax does not read from init_cfg: set load_from to the checkpoint instead")
  backbone = model_cfg.get("backbone") or {}
  found = [("model.pretrained", model_cfg["pretrained"], None)] if model_cfg.get("pretrained") else []
  for where, cfg in (("model.backbone", backbone), ("model.backbone.backbone_cfg", backbone.get("backbone_cfg") or {})):
    if cfg.get("pretrained"):
      found.append((f"{where}.pretrained", cfg["pretrained"], None))
    init_cfgs = cfg.get("init_cfg") or []
    for init in init_cfgs if isinstance(init_cfgs, (list, tuple)) else [init_cfgs]:
      if init.get("type") == "Pretrained":
        if not init.get("checkpoint"):
          raise ValueError(f"{where}.init_cfg={init}: a Pretrained init_cfg needs checkpoint=PATH")
        found.append((f"{where}.init_cfg.checkpoint", init["checkpoint"], init.get("prefix")))
  if len(found) > 1:
    raise ValueError("the backbone's pretrained weights are set more than once, which mmseg refuses: "
                     + ", ".join(f"{key}={path!r}" for key, path, _ in found))
  return found[0] if found else None


def _load_pretrained_backbone(state: TrainState, path: str, backbone: str | dict, prefix: str | None = None,
                              key: str = "model.pretrained") -> TrainState:
  """Initialise the backbone (its config dict, or type name) from the local checkpoint ``path``
  (an original release such as an ImageNet classifier, mmseg's converted backbone file, or an
  mmseg segmentor checkpoint; the release is told by the backbone family's checkpoint rules), as
  mmseg's ``pretrained``/``init_cfg=Pretrained``; ``key`` is the config key that named it."""
  if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", path):
    raise FileNotFoundError(f"{key}={path!r} is a URL or model-zoo name; segjax does not download "
                            "weights: download the file and pass its local path")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{key}={path!r}: no such file")
  from segjax.convert import convert_backbone_checkpoint
  target = {"params": state.params["backbone"], "batch_stats": state.batch_stats.get("backbone", {})}
  try:
    loaded = convert_backbone_checkpoint(path, target, backbone, prefix=prefix)
  except ValueError as e:
    raise ValueError(f"{key}: {e}") from e
  params = dict(state.params, backbone=_fit(loaded["params"], state.params["backbone"], "params", path))
  batch_stats = dict(state.batch_stats)
  if "backbone" in batch_stats:
    batch_stats["backbone"] = _fit(loaded.get("batch_stats", {}), batch_stats["backbone"],
                                   "batch_stats", path)
  logging.info("backbone initialised from %s (%s)", path, key)
  return state.replace(params=params, batch_stats=batch_stats)


def _hms(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class _QuietLibraries(logging.Filter):
  """Drop orbax's and grain's per-save INFO chatter; their warnings and errors still show."""

  def filter(self, record: logging.LogRecord) -> bool:
    noisy = any(f"/{lib}/" in record.pathname for lib in ("orbax", "grain"))
    return record.levelno >= logging.WARNING or not noisy


def _log_to_file(workdir: str) -> None:
  """Mirror the log into ``workdir/train.log`` (process 0) without the libraries' chatter."""
  root = logging.getLogger()
  for handler in root.handlers:
    if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
      handler.addFilter(_QuietLibraries())
  if jax.process_index() != 0:
    return
  path = os.path.abspath(os.path.join(workdir, "train.log"))
  if any(getattr(h, "baseFilename", None) == path for h in root.handlers):
    return
  handler = logging.FileHandler(path)
  handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
  handler.addFilter(_QuietLibraries())
  root.addHandler(handler)
  root.setLevel(logging.INFO)
