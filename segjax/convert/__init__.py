"""MMSegmentation ``state_dict`` -> Flax ``{'params', 'batch_stats'}``.

segjax modules carry mmseg's module names, so a key maps by its dotted path:
``backbone.layer1.0.conv1.weight`` -> ``params/backbone/layer1/0/conv1/kernel`` (OIHW -> HWIO),
``...bn1.weight/bias`` -> ``scale/bias``, ``running_mean/var`` -> ``batch_stats .../mean|var``.
Every key must land on a parameter of the same shape and every parameter must get a key;
otherwise the error lists what did not fit.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np
from flax import traverse_util


class CheckpointMismatchError(ValueError):
  """The checkpoint does not fit the model; the message lists every offending key."""


def load_torch_checkpoint(path: str) -> dict[str, np.ndarray]:
  """Read a ``.pth`` (``{'state_dict': ...}`` or a bare state_dict) into numpy arrays."""
  import torch  # optional dependency: pip install segjax[torch]

  ckpt = torch.load(path, map_location="cpu", weights_only=True)
  state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else ckpt
  if not isinstance(state, Mapping):
    raise CheckpointMismatchError(f"{path}: expected a state_dict mapping, got {type(state).__name__}")
  out = {}
  for k, v in state.items():
    if k.startswith("module."):  # saved from DataParallel/DistributedDataParallel
      k = k[len("module."):]
    out[k] = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
  return out


def _torch_to_flax(leaf: str, value: np.ndarray, kind: str) -> np.ndarray:
  if kind == "kernel":
    if value.ndim == 4:  # conv OIHW -> HWIO
      return value.transpose(2, 3, 1, 0)
    if value.ndim == 2:  # linear (out, in) -> (in, out)
      return value.T
  return value


def convert_state_dict(state_dict: Mapping[str, np.ndarray], target: Any,
                       ignore_prefixes: tuple[str, ...] = ()) -> dict:
  """Map ``state_dict`` onto the structure of ``target`` (a variables tree of arrays or
  ``ShapeDtypeStruct``s, e.g. from ``jax.eval_shape(model.init, ...)``).

  Raises CheckpointMismatchError naming unmapped keys (except those starting with one of
  ``ignore_prefixes``), parameters without a key and shape mismatches.
  """
  flat_target = {"/".join(k): v for k, v in traverse_util.flatten_dict(target).items()}
  out: dict[str, np.ndarray] = {}
  matched: set[str] = set()
  unmapped, mismatched = [], []
  for key, value in state_dict.items():
    parts = key.split(".")
    prefix, leaf = "/".join(parts[:-1]), parts[-1]
    if leaf == "num_batches_tracked":
      continue
    candidates = {
        "weight": [("params", "kernel"), ("params", "scale"), ("params", "embedding")],
        "bias": [("params", "bias")],
        "running_mean": [("batch_stats", "mean")],
        "running_var": [("batch_stats", "var")],
    }.get(leaf, [("params", leaf)])
    for collection, name in candidates:
      path = f"{collection}/{prefix}/{name}"
      if path in flat_target:
        matched.add(path)
        value = _torch_to_flax(leaf, np.asarray(value), name)
        want = tuple(flat_target[path].shape)
        if tuple(value.shape) != want:
          mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {path} {want}")
        else:
          out[path] = value.astype(flat_target[path].dtype)
        break
    else:
      if not key.startswith(ignore_prefixes):
        unmapped.append(key)
  missing = sorted(set(flat_target) - matched)
  if unmapped or missing or mismatched:
    lines = []
    if mismatched:
      lines.append(f"{len(mismatched)} shape mismatch(es):\n  " + "\n  ".join(mismatched))
    if unmapped:
      lines.append(f"{len(unmapped)} checkpoint key(s) with no model parameter:\n  " + "\n  ".join(unmapped))
    if missing:
      lines.append(f"{len(missing)} model parameter(s) with no checkpoint key:\n  " + "\n  ".join(missing))
    raise CheckpointMismatchError("checkpoint does not fit the model:\n" + "\n".join(lines))
  return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in out.items()})


def to_state_dict(variables: Mapping) -> dict[str, np.ndarray]:
  """The inverse of ``convert_state_dict``: Flax variables as an mmseg ``state_dict`` (HWIO ->
  OIHW, ``scale`` -> ``weight``, BatchNorm ``mean/var`` -> ``running_mean/var``), e.g. to hand
  segjax weights to PyTorch code."""
  leaves = {("params", "kernel"): "weight", ("params", "scale"): "weight",
            ("params", "embedding"): "weight", ("params", "bias"): "bias",
            ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}
  out = {}
  for path, value in traverse_util.flatten_dict(dict(variables)).items():
    collection, *modules, leaf = path
    value = np.asarray(value)
    if leaf == "kernel" and value.ndim == 4:
      value = value.transpose(3, 2, 0, 1)
    elif leaf == "kernel" and value.ndim == 2:
      value = value.T
    out[".".join((*modules, leaves.get((collection, leaf), leaf)))] = value
  return out


def convert_checkpoint(path: str, model, input_shape=(1, 64, 64, 3)) -> dict:
  """Load an mmseg ``.pth`` and convert it for ``model`` (shapes from ``jax.eval_shape``)."""
  target = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros(input_shape, np.float32)))
  return convert_state_dict(load_torch_checkpoint(path), target)


def convert_backbone_checkpoint(path: str, backbone_target: Any) -> dict:
  """ImageNet (or mmseg) weights for the backbone alone, as mmseg's ``pretrained=``: a
  classification checkpoint's ``fc.*`` is dropped, a segmentor checkpoint's ``backbone.`` prefix
  stripped and its heads ignored."""
  state = load_torch_checkpoint(path)
  if any(k.startswith("backbone.") for k in state):
    state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
  return convert_state_dict(state, backbone_target, ignore_prefixes=("fc.", "head."))
