"""orbax checkpoints in ``workdir/checkpoints``: train state plus the data iterator's position.

orbax writes each step into a temporary folder and renames it when complete, so a run killed
mid-save leaves the previous checkpoint intact and ``restore_latest`` never sees a partial one.
"""
from __future__ import annotations

import os
from typing import Any

import grain.python as grain
import jax
import orbax.checkpoint as ocp


def make_manager(workdir: str, max_to_keep: int | None) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_iterator=None,
         force: bool = False) -> None:
  items = {"state": ocp.args.StandardSave(state)}
  if data_iterator is not None:
    items["data"] = grain.PyGrainCheckpointSave(data_iterator)
  manager.save(step, args=ocp.args.Composite(**items), force=force)


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any, data_iterator=None):
  """The latest (state, step) restored into ``abstract_state``'s shardings, or (None, None)."""
  step = manager.latest_step()
  if step is None:
    return None, None
  items = {"state": ocp.args.StandardRestore(abstract_state)}
  if data_iterator is not None:
    items["data"] = grain.PyGrainCheckpointRestore(data_iterator)
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  return restored["state"], step


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
