"""What a training run keeps in its workdir besides checkpoints and logs: a lock, so two runs never
write one workdir, and the run's config, so a resume with a different config stops with the keys
that differ instead of a library error (or, worse, a silently different run)."""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from typing import Any, Mapping

from segjax.config import to_plain

LOCK_FILE = ".lock"
RUN_CONFIG_FILE = "run_config.json"
# Keys a resumed run may change: they decide how long, how often and on which data the run logs,
# saves and evaluates, or only apply to a fresh start, never the trajectory or the state's shapes.
# The data position does not depend on the number of loader workers (loader.TrainIterator). The
# initial weights (load_from, and the backbone's pretrained / init_cfg in every form the trainer
# reads: train.loop._backbone_pretrained) are loaded only when a run starts; a resume restores
# the checkpoint instead.
RESUMABLE_KEYS = ("total_iters", "log_interval", "evaluation", "checkpoint", "data.workers_per_gpu",
                  "data.check_samples", "data.val", "data.test", "distributed", "mesh", "load_from",
                  "model.pretrained", "model.backbone.pretrained", "model.backbone.init_cfg",
                  "model.backbone.backbone_cfg.pretrained", "model.backbone.backbone_cfg.init_cfg")


_ABSENT = object()  # a key one of the two configs does not have


class WorkdirBusyError(RuntimeError):
  pass


class ConfigMismatchError(ValueError):
  pass


def lock(workdir: str):
  """Hold an exclusive lock on ``workdir`` until the returned file is closed.

  ``flock`` belongs to the open file, so the kernel releases it when the holder dies, even by
  SIGKILL: a killed run never leaves a stale lock. (grain's workers are spawned, and Python's
  files are not inherited across exec, so orphaned workers do not hold it either.) The file
  names the holder, for the message a second run gets."""
  path = os.path.join(workdir, LOCK_FILE)
  f = open(path, "a+")
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.seek(0)
    holder = f.read().strip() or "another process"
    f.close()
    raise WorkdirBusyError(f"workdir {workdir} is in use by {holder} (lock file {path}); wait for "
                           "that run to end or stop it, or give another --workdir") from None
  f.seek(0)
  f.truncate()
  f.write(f"pid {os.getpid()} on {socket.gethostname()} since "
          f"{datetime.datetime.now().isoformat(timespec='seconds')}\n")
  f.flush()
  return f


def _as_json(config) -> dict:
  return json.loads(json.dumps(to_plain(config), default=str))


def _flat(tree: Mapping, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping) and v:
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_differences(saved: Mapping, config) -> list[tuple[str, Any, Any]]:
  """(key, saved value, current value) for every key a resume may not change."""
  old, new = _flat(saved), _flat(_as_json(config))
  resumable = lambda key: any(key == k or key.startswith(k + ".") for k in RESUMABLE_KEYS)
  return [(k, old.get(k, _ABSENT), new.get(k, _ABSENT)) for k in sorted(set(old) | set(new))
          if not resumable(k) and old.get(k, _ABSENT) != new.get(k, _ABSENT)]


def _show(value) -> str:
  return "(absent)" if value is _ABSENT else json.dumps(value)


def check_and_save_config(workdir: str, config, resuming: bool) -> None:
  """On resume, fail naming every key whose value differs from the run's saved config; then
  write the config (a resume may have changed resumable keys such as ``total_iters``)."""
  path = os.path.join(workdir, RUN_CONFIG_FILE)
  if resuming and os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    differences = config_differences(saved, config)
    if differences:
      lines = [f"{k}: {_show(old)} in the run, {_show(new)} now" for k, old, new in differences]
      raise ConfigMismatchError(
          f"workdir {workdir} holds a run trained with another config ({path}), so it cannot "
          "resume with this one:\n  " + "\n  ".join(lines) + "\nEither give the run's values "
          "back (--config.<key>=<value in the run>), or start a new --workdir (with "
          f"--config.load_from={workdir} to start from this run's weights). To resume with the new "
          f"values anyway (only if they keep every parameter's shape), delete {path}.")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(_as_json(config), f, indent=1)
  os.replace(tmp, path)  # a killed write never leaves a half-written config
