"""orbax checkpoints in ``workdir/checkpoints``: train state plus the data iterator's position.

orbax writes each step into a temporary folder and renames it when complete, so a run killed
mid-save leaves the previous checkpoint intact and ``restore_latest`` never sees a partial one.
"""
from __future__ import annotations

import os
from typing import Any

import grain.python as grain
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


def load_variables(path: str) -> dict:
  """``params`` and ``batch_stats`` from a segjax checkpoint: a workdir, its ``checkpoints``
  folder, or one step folder. Used by ``load_from`` and the inference API."""
  path = os.path.abspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint {path!r} does not exist")
  for candidate in (os.path.join(path, "checkpoints"), path):
    if os.path.isdir(candidate):
      mngr = ocp.CheckpointManager(candidate)
      step = mngr.latest_step()
      if step is not None:
        state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
        return {"params": state["params"], "batch_stats": state.get("batch_stats", {})}
  if os.path.isdir(os.path.join(path, "state")):
    state = ocp.StandardCheckpointer().restore(os.path.join(path, "state"))
    return {"params": state["params"], "batch_stats": state.get("batch_stats", {})}
  raise FileNotFoundError(f"no segjax checkpoint found in {path!r} (expected a workdir, its "
                          "'checkpoints' folder or a step folder with a 'state' item)")
