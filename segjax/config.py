"""The fields every segjax config has. ``configs/*.py`` fill model, data and schedule on top of
``base_config()`` and lock the result; ``segjax.convert.mmseg_config`` does the same from an mmseg
config file. ``load_config`` reads either kind of file."""
from __future__ import annotations

import math
from typing import Any, Mapping

import ml_collections
from ml_collections import config_dict


def sgd(lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4) -> dict:
  """mmseg's default optimizer: SGD lr 0.01, momentum 0.9, weight decay 5e-4 (added to the gradient)."""
  return dict(type="SGD", lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=False)


def poly(power: float = 0.9, min_lr: float = 1e-4) -> dict:
  """mmseg's ``lr_config = dict(policy='poly', power=0.9, min_lr=1e-4, by_epoch=False)``."""
  return dict(policy="poly", power=power, min_lr=min_lr, by_epoch=False)


def schedule(total_iters: int) -> dict:
  """mmseg's schedule_{20,40,80,160}k: evaluate and checkpoint every tenth of the run (every
  step for runs shorter than 10)."""
  interval = max(total_iters // 10, 1)
  # evaluation: mmseg's EvalHook. interval 0: no evaluation (main.py --no-validate); metric: mIoU,
  # mDice, mFscore or a list; save_best: a result key ('mIoU', 'IoU.road', ...) or 'auto' (the
  # first key, aAcc) whose best value keeps its weights in workdir/best_<key>_iter_<step>; rule:
  # 'greater'/'less' for keys mmcv cannot infer it for.
  return dict(total_iters=total_iters,
              evaluation=dict(interval=interval, metric="mIoU",
                              save_best=config_dict.placeholder(str),
                              rule=config_dict.placeholder(str)),
              checkpoint=dict(interval=interval, max_to_keep=3))


def base_config() -> ml_collections.ConfigDict:
  """Fields every config has; a config fills model/data/schedule and returns it locked."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.optimizer = sgd()
  # cumulative_iters: mmcv's GradientCumulativeOptimizerHook (one update per that many batches).
  c.optimizer_config = dict(grad_clip=dict(max_norm=config_dict.placeholder(float), norm_type=2.0),
                            cumulative_iters=1)
  # mmcv's warmup defaults, so --config.lr_config.warmup=linear works on every config.
  c.lr_config = dict(poly(), warmup=config_dict.placeholder(str), warmup_iters=0, warmup_ratio=0.1)
  # mmcv's momentum_config: policy 'cyclic' (CyclicMomentumUpdaterHook) or None (constant).
  c.momentum_config = dict(policy=config_dict.placeholder(str), target_ratio=(0.85 / 0.95, 1.0),
                           cyclic_times=1, step_ratio_up=0.4, anneal_strategy="cos", gamma=1.0)
  c.log_interval = 50
  # 'bfloat16': mixed precision (bf16 forward/backward, float32 parameters and BN statistics).
  c.compute_dtype = "float32"
  # A workdir's own checkpoints resume automatically; load_from only initialises weights.
  c.load_from = config_dict.placeholder(str)
  # Device mesh: axis name -> size (-1: the remaining devices). The batch is split over 'data'
  # and 'fsdp'; parameters and optimizer state are sharded over 'fsdp' (--config.mesh.fsdp=8:
  # each of 8 devices holds 1/8 of them) and replicated over 'data' (sharding.py).
  c.mesh = {"data": -1, "fsdp": 1}
  c.distributed = dict(enabled=False, coordinator_address=config_dict.placeholder(str),
                       num_processes=config_dict.placeholder(int),
                       process_id=config_dict.placeholder(int),
                       # A peer silent this long makes the others exit instead of hanging.
                       heartbeat_timeout_seconds=config_dict.placeholder(int))
  return c


COMPUTE_DTYPES = ("float32", "bfloat16")


def validate(config) -> None:
  """Fail before anything runs on values the loop cannot use, naming the key, the value and
  what it takes (--config.* only checks that a key exists and has the right type)."""
  def at_least(key: str, minimum: int, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
      raise ValueError(f"config {key}={value!r}: expected an integer >= {minimum}")

  at_least("total_iters", 1, config.total_iters)
  at_least("log_interval", 1, config.log_interval)
  at_least("evaluation.interval", 0, config.evaluation.interval)
  from segjax.evaluation import metric_names
  try:
    metric_names(config.evaluation.metric)
  except KeyError as e:
    raise ValueError(f"config evaluation.metric={config.evaluation.metric!r}: {e.args[0]}") from None
  at_least("checkpoint.interval", 1, config.checkpoint.interval)
  if config.checkpoint.get("max_to_keep") is not None:
    at_least("checkpoint.max_to_keep", 1, config.checkpoint.max_to_keep)
  at_least("data.samples_per_gpu", 1, config.data.samples_per_gpu)
  at_least("data.workers_per_gpu", 0, config.data.workers_per_gpu)
  if config.compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f"config compute_dtype={config.compute_dtype!r}: expected one of "
                     f"{', '.join(COMPUTE_DTYPES)}")


def to_plain(value: Any) -> Any:
  """ConfigDict/dict/list -> plain dicts and tuples (hashable leaves for Flax module fields)."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, Mapping):
    return {k: to_plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return tuple(to_plain(v) for v in value)
  return value


def _python_literal(value: Any, indent: int, column: int, width: int) -> str:
  """``value`` as Python source that evaluates to it, starting at ``column`` of a line indented
  by ``indent``: dicts as ``dict(k=v)`` (a ``{...}`` literal when a key is no identifier), tuples
  as tuples; on one line when it ends before ``width``, else one item per line."""
  import keyword
  if isinstance(value, Mapping):
    as_call = all(isinstance(k, str) and k.isidentifier() and not keyword.iskeyword(k) for k in value)
    items = [(f"{k}=" if as_call else f"{k!r}: ", v) for k, v in value.items()]
    opening, closing = ("dict(", ")") if as_call else ("{", "}")
  elif isinstance(value, (list, tuple)):
    items = [("", v) for v in value]
    opening, closing = ("[", "]") if isinstance(value, list) else ("(", ",)" if len(value) == 1 else ")")
  elif isinstance(value, float) and not math.isfinite(value):
    return f"float('{value}')"
  else:
    return repr(value)
  flat = opening + ", ".join(p + _python_literal(v, 0, 0, 10**9) for p, v in items) + closing
  if column + len(flat) <= width or not items:
    return flat
  inner = indent + 4
  lines = [" " * inner + p + _python_literal(v, inner, inner + len(p), width) + "," for p, v in items]
  return opening + "\n" + "\n".join(lines) + "\n" + " " * indent + closing.lstrip(",")


def to_python(config, width: int = 100) -> str:
  """``config`` as an mmcv-style listing, one ``key = value`` per top-level key (dicts as
  ``dict(...)``, tuples as tuples, shared values written out each time): what tools/print_config.py
  prints and main.py logs. ``segjax.convert.mmseg_config.load_mmseg_config`` reads it back to
  ``config.to_dict()``."""
  plain = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  return "\n".join(f"{k} = {_python_literal(v, 0, len(k) + 3, width)}" for k, v in plain.items()) + "\n"


def defines_get_config(path: str) -> bool:
  """Whether the Python file ``path`` is a segjax config module (a top-level ``get_config``), as
  opposed to an MMSegmentation config file (plain dicts)."""
  import ast
  from segjax.convert.mmseg_config import read_config_text
  try:
    tree = ast.parse(read_config_text(path), filename=path)
  except SyntaxError as e:
    raise ValueError(f"config {path} is not valid Python: {e}") from None
  return any(isinstance(node, ast.FunctionDef) and node.name == "get_config" for node in tree.body)


def load_config(spec: str) -> ml_collections.ConfigDict:
  """The config ``spec`` names, as every tool reads it:

  - ``configs/X.py[:variant]``: a segjax config module, ``get_config(variant)`` as ``--config``
    reads it in main.py (``configs/mmseg.py:pspnet/pspnet_r50-d8_512x1024_40k_cityscapes.py``);
  - any MMSegmentation config file (``.py`` without ``get_config``, ``_base_`` resolved),
    translated by ``segjax.convert.mmseg_config.config_from_file``.
  """
  import importlib.util
  import os
  path, _, variant = spec.partition(":")
  if not defines_get_config(path):
    if variant:
      raise ValueError(f"{path} is an mmseg config file (no get_config), so it takes no "
                       f"':{variant}'; give the file of that variant itself")
    from segjax.convert.mmseg_config import config_from_file
    return config_from_file(path)
  module_spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()


def apply_overrides(config: ml_collections.ConfigDict, overrides) -> None:
  """``a.b=value`` strings (Python literals, else strings) onto a locked config; unknown keys fail."""
  import ast
  for item in overrides or []:
    key, _, raw = item.partition("=")
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise KeyError(f"config has no key {key!r}")
    node[leaf] = value
