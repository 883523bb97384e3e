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
