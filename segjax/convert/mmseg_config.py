"""Read MMSegmentation config files without mmcv.

An mmseg config is a Python file of dicts; ``_base_`` (a path or list of paths, relative to the
file) is merged first, the file's own values override recursively, and a dict carrying
``_delete_=True`` replaces its base instead of merging. A ``.json`` file is read as a dump of
either a whole config or just its ``model`` dict.
"""
from __future__ import annotations

import ast
import copy
import json
import os
from typing import Any


def _merge(base: dict, child: dict) -> dict:
  out = copy.deepcopy(base)
  for key, value in child.items():
    if isinstance(value, dict) and value.get("_delete_", False):
      out[key] = {k: v for k, v in value.items() if k != "_delete_"}
    elif isinstance(value, dict) and isinstance(out.get(key), dict):
      out[key] = _merge(out[key], value)
    else:
      out[key] = copy.deepcopy(value)
  return out


def _strip_delete(value: Any) -> Any:
  if isinstance(value, dict):
    return {k: _strip_delete(v) for k, v in value.items() if k != "_delete_"}
  if isinstance(value, list):
    return [_strip_delete(v) for v in value]
  return value


def _exec_config(path: str) -> dict:
  with open(path) as f:
    source = f.read()
  try:
    ast.parse(source, filename=path)
  except SyntaxError as e:
    raise ValueError(f"mmseg config {path} is not valid Python: {e}") from None
  namespace: dict[str, Any] = {}
  exec(compile(source, path, "exec"), namespace)  # noqa: S102 - configs are code, as in mmcv
  return {k: v for k, v in namespace.items() if not k.startswith("__") and not callable(v)
          and not isinstance(v, type(os))}


def load_mmseg_config(path: str) -> dict:
  """The fully merged mmseg config of ``path`` (.py with ``_base_``, or .json)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"mmseg config {path!r} does not exist")
  if path.endswith(".json"):
    with open(path) as f:
      cfg = json.load(f)
    return cfg if "model" in cfg else {"model": cfg}
  cfg = _exec_config(path)
  bases = cfg.pop("_base_", [])
  bases = [bases] if isinstance(bases, str) else list(bases)
  merged: dict = {}
  for base in bases:
    merged = _merge(merged, load_mmseg_config(os.path.join(os.path.dirname(path), base)))
  return _strip_delete(_merge(merged, cfg))


def load_model_dict(path: str) -> dict:
  """Just the ``model`` dict of an mmseg config."""
  cfg = load_mmseg_config(path)
  if "model" not in cfg:
    raise KeyError(f"mmseg config {path!r} has no 'model' entry")
  return cfg["model"]


def to_segjax_config(mmseg_cfg: dict):
  """The segjax ConfigDict equivalent to a merged mmseg config (``load_mmseg_config``): model
  dict unchanged, data blocks, optimizer, poly schedule, iterations and intervals."""
  from ml_collections import config_dict

  from segjax.config import base_config, schedule
  c = base_config()
  c.model = mmseg_cfg["model"]
  if "optimizer" in mmseg_cfg:
    opt = dict(mmseg_cfg["optimizer"])
    c.optimizer = dict(opt, nesterov=opt.get("nesterov", False)) if opt["type"] == "SGD" else opt
  if "lr_config" in mmseg_cfg:
    lr = dict(mmseg_cfg["lr_config"])
    if lr.get("by_epoch"):
      raise ValueError("lr_config.by_epoch=True: segjax schedules are by iteration")
    c.lr_config = dict({"power": 1.0, "min_lr": 0.0, "by_epoch": False}, **lr)
  if mmseg_cfg.get("momentum_config"):
    c.momentum_config.update({k: v for k, v in mmseg_cfg["momentum_config"].items() if k != "by_epoch"})
  runner = mmseg_cfg.get("runner", {})
  c.update(schedule(int(runner.get("max_iters", 1000))))
  if "evaluation" in mmseg_cfg:
    c.evaluation.interval = mmseg_cfg["evaluation"].get("interval", c.evaluation.interval)
  if "checkpoint_config" in mmseg_cfg:
    c.checkpoint.interval = mmseg_cfg["checkpoint_config"].get("interval", c.checkpoint.interval)
  if "log_config" in mmseg_cfg:
    c.log_interval = mmseg_cfg["log_config"].get("interval", c.log_interval)
  if "data" in mmseg_cfg:
    data = mmseg_cfg["data"]
    c.data = dict(samples_per_gpu=data.get("samples_per_gpu", 2),
                  workers_per_gpu=data.get("workers_per_gpu", 2), check_samples=64,
                  packed_dir=config_dict.placeholder(str), train=data["train"], val=data["val"])
  c.lock()
  return c
