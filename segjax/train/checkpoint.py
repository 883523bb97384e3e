"""orbax checkpoints in ``workdir/checkpoints``: train state plus the data iterator's position.

orbax writes each step into a temporary folder and renames it when complete, so a run killed
mid-save leaves the previous checkpoint intact and ``restore_latest`` never sees a partial one
(the temporary folders of killed saves are removed when the next run opens the folder). A
complete checkpoint damaged later (a truncated or deleted file) is skipped by ``restore_latest``,
which falls back to the newest one that reads and keeps the damaged one aside.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import grain.python as grain
import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

DAMAGED_DIR = "checkpoints_damaged"


class CheckpointError(RuntimeError):
  pass


def make_manager(workdir: str, max_to_keep: int | None) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         cleanup_tmp_directories=True)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_iterator=None,
         force: bool = False) -> None:
  items = {"state": ocp.args.StandardSave(state)}
  if data_iterator is not None:
    items["data"] = grain.PyGrainCheckpointSave(data_iterator)
  manager.save(step, args=ocp.args.Composite(**items), force=force)


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any, data_iterator=None):
  """The newest checkpoint that reads, as (state, step) in ``abstract_state``'s shardings (and the
  data iterator set to its position), or (None, None) when there is none.

  A checkpoint that fails to read is skipped with a warning naming its folder and the error, and
  once an older one has restored, the skipped ones are moved (never deleted) to
  ``<workdir>/checkpoints_damaged/<step>``, out of the way of the steps the run saves again.
  When none reads, nothing is moved and the error lists each checkpoint's failure."""
  items = {"state": ocp.args.StandardRestore(abstract_state)}
  if data_iterator is not None:
    items["data"] = grain.PyGrainCheckpointRestore(data_iterator)
  failures: list[tuple[int, str]] = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # any unreadable file: orbax raises JSON, KeyError, ValueError, OSError...
      reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
      logging.warning("checkpoint %s does not read (%s); trying the previous one",
                      _step_dir(manager, step), reason)
      failures.append((step, reason))
      continue
    if failures:
      _set_aside(manager, [s for s, _ in failures], step)
    return restored["state"], step
  if failures:
    raise CheckpointError(f"no checkpoint in {manager.directory} reads:\n  " + "\n  ".join(
        f"step {s}: {reason}" for s, reason in failures) + "\nmove the workdir's 'checkpoints' "
        "folder away to start over, or give a new --workdir")
  return None, None


def _step_dir(manager: ocp.CheckpointManager, step: int) -> str:
  return os.path.join(str(manager.directory), str(step))


def _set_aside(manager: ocp.CheckpointManager, steps: list[int], restored_step: int) -> None:
  """Move the damaged ``steps`` to ``checkpoints_damaged/`` beside the checkpoints folder."""
  damaged = os.path.join(os.path.dirname(str(manager.directory)), DAMAGED_DIR)
  if jax.process_index() == 0:
    os.makedirs(damaged, exist_ok=True)
    for step in steps:
      target, n = os.path.join(damaged, str(step)), 1
      while os.path.exists(target):  # an earlier fall-back set the same step aside
        target, n = os.path.join(damaged, f"{step}.{n}"), n + 1
      os.rename(_step_dir(manager, step), target)
      logging.warning("resumed from step %d; the damaged checkpoint of step %d is kept in %s",
                      restored_step, step, target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("segjax_set_aside_damaged_checkpoints")
  manager.reload()


def _find(path: str):
  """(manager, step) of the newest checkpoint under a workdir, its ``checkpoints`` folder or a
  folder of step folders; (None, None) when there is none."""
  for candidate in (os.path.join(path, "checkpoints"), path):
    if os.path.isdir(candidate):
      mngr = ocp.CheckpointManager(candidate, item_handlers={
          "state": ocp.StandardCheckpointHandler(), "data": grain.PyGrainCheckpointHandler()})
      step = mngr.latest_step()
      if step is not None:
        return mngr, step
  return None, None


def latest_step(path: str) -> int:
  """The step of the checkpoint ``load_variables(path)`` reads (0 for a bare ``state`` folder)."""
  return _find(os.path.abspath(path))[1] or 0


def load_variables(path: str) -> dict:
  """``params`` and ``batch_stats`` from a segjax checkpoint: a workdir, its ``checkpoints``
  folder, one step folder, or a published ``.msgpack``. Used by ``load_from`` and the inference
  API."""
  path = os.path.abspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint {path!r} does not exist")
  if path.endswith(".msgpack"):  # written by tools/publish_model.py
    from flax import serialization
    with open(path, "rb") as f:
      return serialization.msgpack_restore(f.read())
  mngr, step = _find(path)
  if mngr is not None:
    # Restore onto this process's first device whatever mesh wrote the checkpoint.
    target = _on_one_device(mngr.item_metadata(step)["state"])
    state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
  elif os.path.isdir(os.path.join(path, "state")):
    checkpointer = ocp.StandardCheckpointer()
    state_dir = os.path.join(path, "state")
    state = checkpointer.restore(state_dir, _on_one_device(checkpointer.metadata(state_dir).item_metadata))
  else:
    raise FileNotFoundError(f"no segjax checkpoint found in {path!r} (expected a workdir, its "
                            "'checkpoints' folder or a step folder with a 'state' item)")
  return {"params": state["params"], "batch_stats": state.get("batch_stats", {})}


def _on_one_device(metadata):
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
