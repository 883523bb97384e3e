"""Read MMSegmentation config files without mmcv, and translate them into segjax configs.

An mmseg config is a Python file of dicts; ``_base_`` (a path or list of paths, relative to the
file) is merged first, the file's own values override recursively, and a dict carrying
``_delete_=True`` replaces its base instead of merging. A ``.json`` file is read as a dump of
either a whole config or just its ``model`` dict.

``config_from_file(path)`` is the segjax ConfigDict of such a file (``to_segjax_config`` of its
merged dicts): the ``model`` dict unchanged, ``data`` with mmseg's datasets and pipelines, the
optimizer, schedule, evaluation, checkpoint and log intervals; mmcv's runtime keys that mean
nothing in segjax are named in ``IGNORED`` with the reason, and any other top-level key is an
error unless it is a helper variable the file used to build the others (``crop_size``,
``train_pipeline``, ``norm_cfg``, ...).
"""
from __future__ import annotations

import ast
import copy
import json
import os
import re
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


# How a PyTorch checkpoint file starts: torch.save's zip archive, or the pickle of its older format.
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def read_config_text(path: str) -> str:
  """The text of the config file ``path``, as every tool reads CONFIG. What is not a config file
  (missing, a directory, a PyTorch checkpoint, binary data) fails naming the path, what it is
  and what was expected."""
  expected = "expected a config file: configs/X.py[:variant], an mmseg config .py or a .json model dict"
  if os.path.isdir(path):
    raise IsADirectoryError(f"config {path!r} is a directory; {expected}. A segjax workdir or a "
                            "tools/convert_weights.py output directory is a checkpoint, not a config")
  if not os.path.exists(path):
    raise FileNotFoundError(f"config {path!r} does not exist; {expected}")
  with open(path, "rb") as f:
    data = f.read()
  if data.startswith(_TORCH_MAGIC):
    raise ValueError(
        f"config {path!r} is a PyTorch checkpoint, not a config: give the mmseg config it was trained "
        f"with as CONFIG and {path} as the checkpoint, or convert it once with python "
        f"tools/convert_weights.py {path} OUT --mmseg-config MMSEG_CONFIG.py and pass OUT as the checkpoint")
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"config {path!r} is not a text file (byte {e.start} is not UTF-8); {expected}") from None
  if "\0" in text:
    raise ValueError(f"config {path!r} is not a text file (it holds NUL bytes); {expected}")
  return text


def _exec_config(path: str) -> dict:
  source = read_config_text(path)
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
  if path.endswith(".json"):
    try:
      cfg = json.loads(read_config_text(path))
    except json.JSONDecodeError as e:
      raise ValueError(f"config {path!r} is not valid JSON: {e}") from None
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


# mmcv/mmseg runtime keys with no meaning in segjax, and why.
IGNORED = {
    "dist_params": "torch.distributed's backend; segjax uses jax.distributed (config.distributed)",
    "log_level": "absl's --verbosity sets the log level",
    "workflow": "segjax evaluates every evaluation.interval iterations; there is no epoch workflow",
    "cudnn_benchmark": "XLA chooses convolution algorithms itself",
    "resume_from": "segjax resumes from the latest checkpoint in --workdir automatically",
    "auto_resume": "segjax resumes from the latest checkpoint in --workdir automatically",
    "gpu_ids": "the device mesh (config.mesh) spans every visible device",
    "device": "JAX picks the platform; config.mesh spans its devices",
    "work_dir": "given as --workdir",
    "custom_imports": "segjax's classes are in explicit name -> class dicts; nothing to import",
    # segjax's mixed precision is compute_dtype='bfloat16' (bf16 has float32's exponent range, so
    # no loss scaling); mmseg's loss-scaled fp16 is not carried over: fp16 configs train in float32
    # unless --config.compute_dtype=bfloat16 is given.
    "fp16": "mixed precision is --config.compute_dtype=bfloat16 (no loss scaling needed)",
}
# Top-level keys the translation reads.
TRANSLATED = ("model", "data", "optimizer", "optimizer_config", "lr_config", "momentum_config",
              "runner", "total_iters", "evaluation", "checkpoint_config", "log_config", "load_from")
# mmcv optimizer hooks: all step every iteration except the cumulative ones.
_OPTIMIZER_HOOKS = ("OptimizerHook", "Fp16OptimizerHook", "GradientCumulativeOptimizerHook",
                    "GradientCumulativeFp16OptimizerHook")
_DATA_KEYS = ("samples_per_gpu", "workers_per_gpu", "train", "val", "test")
# mmseg's zoo was trained on 4 GPUs unless the config name says otherwise.
MMSEG_DEFAULT_GPUS = 4


def mmseg_total_batch(name: str, samples_per_gpu: int) -> int:
  """Images per iteration mmseg trained config ``name`` with: a ``<G>x<S>`` token (GPUs x images
  per GPU, e.g. ``8x2``; crops like ``512x512`` are not such tokens) gives G*S, a ``b<N>`` token
  after the schedule (``40k_b16_cityscapes``) the total N, otherwise 4 GPUs x samples_per_gpu."""
  tokens = name.split("_")
  for token in tokens:
    m = re.fullmatch(r"(\d+)x(\d+)", token)
    if m and max(int(m[1]), int(m[2])) < 64:
      return int(m[1]) * int(m[2])
  for before, token in zip(tokens, tokens[1:]):
    if re.fullmatch(r"\d+k", before) and re.fullmatch(r"b\d+", token):
      return int(token[1:])
  return MMSEG_DEFAULT_GPUS * samples_per_gpu


def _occurs(value: Any, tree: Any) -> bool:
  """Whether ``value`` is ``tree`` or one of its parts (dict values, list items), or a dict
  splatted into one of its dicts (``dict(type='Normalize', **img_norm_cfg)``)."""
  if type(tree) is type(value) and tree == value:
    return True
  if isinstance(value, dict) and value and isinstance(tree, dict) and all(
      k in tree and type(tree[k]) is type(v) and tree[k] == v for k, v in value.items()):
    return True
  if isinstance(tree, dict):
    return any(_occurs(value, v) for v in tree.values())
  if isinstance(tree, (list, tuple)):
    return any(_occurs(value, v) for v in tree)
  return False


def _check_top_level(mmseg_cfg: dict, source: str) -> None:
  used = [mmseg_cfg[k] for k in TRANSLATED if k in mmseg_cfg]
  for key, value in mmseg_cfg.items():
    if key in TRANSLATED or key in IGNORED or _occurs(value, used):
      continue
    raise ValueError(f"{source}: top-level key {key!r} is not one segjax reads "
                     f"({', '.join(TRANSLATED)}), nor an mmcv runtime key it ignores "
                     f"({', '.join(IGNORED)}), nor a helper variable used in those")


def _dataset(cfg: Any) -> Any:
  """mmseg builds a ConcatDataset from a list of dataset dicts."""
  if isinstance(cfg, (list, tuple)):
    return dict(type="ConcatDataset", datasets=[_dataset(d) for d in cfg])
  return cfg


def _data(data: dict, name: str, source: str) -> dict:
  from ml_collections import config_dict
  unknown = sorted(set(data) - set(_DATA_KEYS))
  if unknown:
    raise ValueError(f"{source}: data has keys {unknown} segjax does not read; expected {_DATA_KEYS}")
  for split in ("train", "val"):
    if split not in data:
      raise ValueError(f"{source}: data has no {split!r} dataset")
  samples_per_gpu = data.get("samples_per_gpu", 2)
  return dict(samples_per_gpu=samples_per_gpu, workers_per_gpu=data.get("workers_per_gpu", 2),
              check_samples=64,  # images checked before training (tools/check_dataset.py: all)
              # mmseg's global batch; the loop warns when samples_per_gpu x devices differs,
              # since the published mIoU assumes it.
              mmseg_total_batch=mmseg_total_batch(name, samples_per_gpu),
              packed_dir=config_dict.placeholder(str),  # tools/pack_dataset.py output, if used
              train=_dataset(data["train"]), val=_dataset(data["val"]),
              # mmseg's tools/test.py reads data.test (the Dark Zurich configs test there, not on val).
              test=_dataset(data.get("test", data["val"])))


def _optimizer_config(cfg: dict, source: str) -> dict:
  kind = cfg.get("type", "OptimizerHook")
  if kind not in _OPTIMIZER_HOOKS:
    raise ValueError(f"{source}: optimizer_config.type={kind!r}; expected one of {_OPTIMIZER_HOOKS}")
  clip = dict(cfg.get("grad_clip") or {})
  max_norm, norm_type = clip.pop("max_norm", None), clip.pop("norm_type", 2)
  if clip:  # torch's clip_grad_norm_ also takes error_if_nonfinite / foreach
    raise ValueError(f"{source}: optimizer_config.grad_clip has keys {sorted(clip)} segjax does not "
                     "read; expected max_norm and norm_type")
  try:
    norm_type = float(norm_type)  # torch accepts 'inf' as well as float('inf')
  except (TypeError, ValueError):
    raise ValueError(f"{source}: optimizer_config.grad_clip.norm_type={norm_type!r}; expected a "
                     "number or 'inf'") from None
  # loss_scale belongs to fp16 training, which segjax replaces by bfloat16 (see IGNORED['fp16']).
  return dict(grad_clip=dict(max_norm=None if max_norm is None else float(max_norm), norm_type=norm_type),
              cumulative_iters=int(cfg.get("cumulative_iters", 1)))


def _not_by_epoch(cfg: dict, key: str, source: str) -> None:
  if cfg.get("by_epoch") or cfg.get("warmup_by_epoch"):
    raise ValueError(f"{source}: {key} counts epochs (by_epoch=True); segjax counts iterations")


def to_segjax_config(mmseg_cfg: dict, name: str = "", source: str = "mmseg config"):
  """The locked segjax ConfigDict equivalent to a merged mmseg config (``load_mmseg_config``).
  ``name`` is the config's file name without ``.py`` (it carries mmseg's GPUs x images token);
  ``source`` names the file in errors."""
  from segjax.config import base_config, schedule
  _check_top_level(mmseg_cfg, source)
  c = base_config()
  if "model" not in mmseg_cfg:
    raise ValueError(f"{source}: no 'model' entry")
  c.model = mmseg_cfg["model"]
  if "data" in mmseg_cfg:
    c.data = _data(mmseg_cfg["data"], name, source)
  if "optimizer" in mmseg_cfg:
    opt = dict(mmseg_cfg["optimizer"])
    c.optimizer = dict(opt, nesterov=opt.get("nesterov", False)) if opt["type"] == "SGD" else opt
  c.optimizer_config = _optimizer_config(mmseg_cfg.get("optimizer_config") or {}, source)
  if "lr_config" in mmseg_cfg:
    lr = dict(mmseg_cfg["lr_config"])
    _not_by_epoch(lr, "lr_config", source)
    lr.pop("warmup_by_epoch", None)
    # mmcv's LrUpdaterHook defaults, so --config.lr_config.warmup=linear works on any config.
    c.lr_config = dict(dict(warmup=None, warmup_iters=0, warmup_ratio=0.1), **lr)
  if mmseg_cfg.get("momentum_config"):
    momentum = dict(mmseg_cfg["momentum_config"])
    _not_by_epoch(momentum, "momentum_config", source)
    momentum.pop("by_epoch", None)
    c.momentum_config.update(momentum)
  runner = mmseg_cfg.get("runner")
  if runner is None:  # mmseg's train.py: IterBasedRunner over cfg.total_iters
    runner = dict(type="IterBasedRunner", max_iters=mmseg_cfg.get("total_iters", 1000))
  if runner.get("type", "IterBasedRunner") != "IterBasedRunner":
    raise ValueError(f"{source}: runner.type={runner['type']!r}; segjax trains by iteration "
                     "(IterBasedRunner with max_iters)")
  c.update(schedule(int(runner["max_iters"])))
  evaluation = dict(mmseg_cfg.get("evaluation") or {})
  _not_by_epoch(evaluation, "evaluation", source)
  # pre_eval, efficient_test, gpu_collect, tmpdir: mmseg's memory savers and result collection;
  # segjax always sums each image's areas as it comes and across hosts.
  unknown = sorted(set(evaluation) - {"interval", "metric", "save_best", "rule", "by_epoch", "pre_eval",
                                      "efficient_test", "gpu_collect", "tmpdir"})
  if unknown:
    raise ValueError(f"{source}: evaluation has keys {unknown} segjax does not read; it takes interval, "
                     "metric, save_best, rule (pre_eval, efficient_test, gpu_collect, tmpdir are accepted "
                     "and need nothing)")
  c.evaluation = dict(c.evaluation.to_dict(), **{k: evaluation[k] for k in ("interval", "metric", "save_best", "rule")
                                               if evaluation.get(k) is not None})
  checkpoint = dict(mmseg_cfg.get("checkpoint_config") or {})
  _not_by_epoch(checkpoint, "checkpoint_config", source)
  c.checkpoint.interval = checkpoint.get("interval", c.checkpoint.interval)
  if (checkpoint.get("max_keep_ckpts") or -1) > 0:  # mmcv's -1: keep all; segjax keeps a few
    c.checkpoint.max_to_keep = checkpoint["max_keep_ckpts"]
  # log_config.hooks (text, TensorBoard) are always on in segjax: metrics.jsonl, tb/, train.log.
  c.log_interval = (mmseg_cfg.get("log_config") or {}).get("interval", c.log_interval)
  c.load_from = mmseg_cfg.get("load_from")
  c.lock()
  return c


def config_from_file(path: str):
  """The segjax config of an mmseg config file (``.py`` with ``_base_``); a file that sets every
  field of ``segjax.config.base_config`` is a segjax config written out (tools/print_config.py's
  listing, perhaps edited) and is taken as it is, not translated."""
  import ml_collections
  from segjax.config import base_config
  cfg = load_mmseg_config(path)
  if set(base_config().keys()) <= set(cfg):
    config = ml_collections.ConfigDict(cfg)
    config.lock()
    return config
  name = os.path.splitext(os.path.basename(path))[0]
  return to_segjax_config(cfg, name=name, source=path)
