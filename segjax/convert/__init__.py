"""MMSegmentation ``state_dict`` -> Flax ``{'params', 'batch_stats'}``.

segjax modules carry mmseg's module names, so a key maps by its dotted path:
``backbone.layer1.0.conv1.weight`` -> ``params/backbone/layer1/0/conv1/kernel`` (PyTorch's
``(O, I, *window)`` -> Flax's ``(*window, I, O)``: linear, Conv1d and Conv2d alike),
``...bn1.weight/bias`` -> ``scale/bias``, ``running_mean/var`` -> ``batch_stats .../mean|var``.
Every key must land on a parameter of the same shape and every parameter must get a key;
otherwise the error lists what did not fit.

Where a release of weights names or lays out a family's parameters differently, the family
declares it as data beside its model: ``CHECKPOINT_RULES`` on the class, a dict from release
source (``"mmseg"``, ``"imagenet"``, ...) to ``CheckpointRules`` (keys to skip, ordered renames,
per-key transforms such as ``split_qkv`` or ``resize_pos_embed``). A backbone checkpoint's source
is the one whose rules convert it (``convert_backbone_checkpoint`` tries each the class declares),
or named by the caller.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

# BatchNorm's step counter: a buffer with no Flax counterpart in any family.
_ALWAYS_SKIPPED = re.compile(r"(^|\.)num_batches_tracked$")
# mmseg leaf name -> candidate (collection, Flax leaf), first present in the model wins.
_LEAVES = {
    "weight": (("params", "kernel"), ("params", "scale"), ("params", "embedding")),
    "bias": (("params", "bias"),),
    "running_mean": (("batch_stats", "mean"),),
    "running_var": (("batch_stats", "var"),),
}


class CheckpointMismatchError(ValueError):
  """The checkpoint does not fit the model; the message lists every offending key, ``problems``
  holds them one a line (shape mismatches first)."""

  def __init__(self, message: str, problems: Sequence[str] = ()):
    super().__init__(message)
    self.problems = list(problems) or [message]


@dataclasses.dataclass(frozen=True)
class CheckpointRules:
  """How one release of a family's weights differs from segjax's module tree.

  - ``skip``: regexes (``re.search``) of keys that hold no parameter (index buffers, a
    classifier the segmentor does not use); matched before renaming.
  - ``renames``: ordered ``(regex, replacement)`` pairs, each applied with ``re.sub`` in turn.
  - ``transforms``: ``(regex, function)`` pairs; the first whose regex matches the renamed key
    calls ``function(key, value, target_shape)`` -> ``{key: value}`` in PyTorch's layout, where
    ``target_shape(key)`` is the model's shape (Flax layout) of the parameter ``key`` maps to, or
    None. Transforms see numpy arrays, or abstract values when only shapes are checked, so they
    use array methods and ``jnp`` functions.
  - ``concat``: ``(regex, partner)`` pairs: a key matching ``regex`` (before skipping and
    renaming) is concatenated along the first dimension with the key ``re.sub(regex, partner,
    key)``, which is consumed (SegFormer's separate ``attn.q`` and ``attn.kv`` -> the fused
    in-projection).
  - ``keep_initial``: regexes (``re.search``) of the model's modules (dotted path, e.g. ``norm0``)
    whose parameters the release does not hold: they keep ``target``'s value, the model's
    initialisation, as mmseg's ``strict=False`` load of a ``Pretrained`` checkpoint leaves them.
  - ``combine``: a function of all the keys the rules apply to (``{key: value}`` -> ``{key:
    value}``, arrays or abstract values as for transforms), called first, for a release that
    stores one parameter under more keys than ``concat`` joins (the JAX ViT's query/key/value).
  """
  skip: Sequence[str] = ()
  renames: Sequence[tuple[str, str]] = ()
  transforms: Sequence[tuple[str, Callable]] = ()
  concat: Sequence[tuple[str, str]] = ()
  keep_initial: Sequence[str] = ()
  combine: Callable | None = None


def load_checkpoint(path: str) -> dict[str, np.ndarray]:
  """The weights of a checkpoint file as ``{key: numpy array}``, by extension: ``.pth``/``.pt``
  (PyTorch) or ``.npz`` (numpy archives, e.g. the original JAX ViT / AugReg releases; keys as
  stored, ``Transformer/encoderblock_0/...``)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such checkpoint file")
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as archive:
      return {k: archive[k] for k in archive.files}
  if path.endswith((".pth", ".pt", ".tar")):  # .pth.tar: how some authors (STDC) publish
    return load_torch_checkpoint(path)
  raise CheckpointMismatchError(f"{path}: unknown checkpoint format; expected a .pth/.pt/.pth.tar (PyTorch) "
                                "or .npz (JAX/numpy) file")


def load_torch_checkpoint(path: str) -> dict[str, np.ndarray]:
  """Read a ``.pth`` into numpy arrays: a bare state_dict or one wrapped as releases wrap it,
  ``{'state_dict': ...}`` (mmcv/mmseg, timm), ``{'model': ...}`` (DeiT, BEiT, MAE) or
  ``{'module': ...}``; keys saved from DataParallel lose their ``module.`` prefix (mmcv's
  ``revise_keys``)."""
  import torch  # optional dependency: pip install segjax[torch]

  ckpt = torch.load(path, map_location="cpu", weights_only=True)
  state = ckpt
  if isinstance(ckpt, Mapping):
    wrapper = next((k for k in ("state_dict", "model", "module") if isinstance(ckpt.get(k), Mapping)), None)
    state = ckpt[wrapper] if wrapper else ckpt
  if not isinstance(state, Mapping):
    raise CheckpointMismatchError(f"{path}: expected a state_dict mapping, got {type(state).__name__}")
  out = {}
  for k, v in state.items():
    if k.startswith("module."):  # saved from DataParallel/DistributedDataParallel
      k = k[len("module."):]
    out[k] = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
  return out


# ---- transforms a family's rules can name ---------------------------------------------------

def split_qkv(names: Sequence[str] = ("q", "k", "v")) -> Callable:
  """A fused projection ``<x>.qkv.weight`` (3C, C) / ``.bias`` (3C,) -> ``<x>.q``, ``<x>.k``,
  ``<x>.v`` (in ``names``' order, as PyTorch's fused layout stacks them), for a model that keeps
  them as separate layers."""
  def split(key, value, target_shape):
    module, leaf = key.rsplit(".", 1)
    parent, fused = module.rsplit(".", 1) if "." in module else ("", module)
    size = value.shape[0] // len(names)
    if value.shape[0] != size * len(names):
      raise CheckpointMismatchError(f"{key}: first dimension {value.shape[0]} does not split into "
                                    f"{len(names)} equal projections {tuple(names)}")
    prefix = f"{parent}." if parent else ""
    return {f"{prefix}{name}.{leaf}": value[i * size:(i + 1) * size] for i, name in enumerate(names)}
  return split


def cubic_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out_size, in_size) weights of PyTorch's bicubic interpolation along one axis with
  ``align_corners=False``: source coordinate ``(i + 0.5) * in/out - 0.5``, Keys' kernel with
  a = -0.75, taps beyond the border clamped to the edge sample (``upsample_bicubic2d``)."""
  a = -0.75
  def near(t):  # |t| <= 1
    return ((a + 2) * t - (a + 3)) * t * t + 1
  def far(t):  # 1 < |t| < 2
    return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
  matrix = np.zeros((out_size, in_size), np.float64)
  scale = in_size / out_size
  for i in range(out_size):
    x = (i + 0.5) * scale - 0.5
    base = math.floor(x)
    t = x - base
    for offset, w in ((-1, far(t + 1)), (0, near(t)), (1, near(1 - t)), (2, far(2 - t))):
      matrix[i, min(max(base + offset, 0), in_size - 1)] += w
  return matrix


def resize_pos_embed(pos_embed, grid_hw: tuple[int, int], num_extra_tokens: int = 1):
  """mmseg's ``VisionTransformer.resize_pos_embed``: the (1, extra + h*w, C) table's square patch
  grid resized bicubically (``align_corners=False``) to ``grid_hw``; the leading
  ``num_extra_tokens`` (the cls token) are kept as they are."""
  extra, grid = pos_embed[:, :num_extra_tokens], pos_embed[:, num_extra_tokens:]
  side = math.isqrt(grid.shape[1])
  if side * side != grid.shape[1]:
    raise CheckpointMismatchError(f"pos_embed: {grid.shape[1]} patch positions are not a square grid")
  h_matrix = cubic_resize_matrix(side, grid_hw[0]).astype(np.float32)
  w_matrix = cubic_resize_matrix(side, grid_hw[1]).astype(np.float32)
  grid = grid.reshape(grid.shape[0], side, side, grid.shape[-1])
  resized = jnp.einsum("hy,wx,byxc->bhwc", h_matrix, w_matrix, grid,
                       precision=jax.lax.Precision.HIGHEST)
  resized = resized.reshape(grid.shape[0], grid_hw[0] * grid_hw[1], grid.shape[-1])
  return jnp.concatenate([extra, resized.astype(grid.dtype)], axis=1)


def resize_pos_embed_to_target(num_extra_tokens: int = 1) -> Callable:
  """Transform: a ``pos_embed`` of another grid is resized to the model's (square) grid, as
  mmseg's ViT does when it loads a checkpoint of another image size."""
  def resize(key, value, target_shape):
    want = target_shape(key)
    if want is None or tuple(value.shape) == tuple(want):
      return {key: value}
    positions = want[1] - num_extra_tokens
    side = math.isqrt(positions)
    if side * side != positions:
      raise CheckpointMismatchError(f"{key}: the model's {positions} patch positions are not a "
                                    "square grid; resize this checkpoint's pos_embed explicitly")
    return {key: resize_pos_embed(value, (side, side), num_extra_tokens)}
  return resize


# ---- the generic mapping ------------------------------------------------------------------

def _flax_path(name: str, flat_target: Mapping[str, Any]) -> str | None:
  module, _, leaf = name.rpartition(".")
  # Any other leaf keeps its name: a parameter, or a buffer a module updates in training (mmseg's
  # ``register_buffer``, e.g. EMANet's ``bases``), which lives beside BatchNorm's statistics.
  for collection, flax_leaf in _LEAVES.get(leaf, (("params", leaf), ("batch_stats", leaf))):
    path = "/".join(part for part in (collection, module.replace(".", "/"), flax_leaf) if part)
    if path in flat_target:
      return path
  return None


def _to_flax_layout(value, flax_leaf: str):
  """PyTorch's (O, I, *window) kernel -> Flax's (*window, I, O); everything else as it is."""
  if flax_leaf == "kernel" and value.ndim >= 2:
    return value.transpose(tuple(range(2, value.ndim)) + (1, 0))
  return value


def _apply_rules(key: str, value, rules: Mapping[str, CheckpointRules], target_shape, evaluate) -> dict:
  """``{name: value}`` that ``key`` becomes under the rules of the prefix it lies under."""
  if _ALWAYS_SKIPPED.search(key):
    return {}
  prefix, rule = _rule_for(key, rules)
  if rule is None:
    return {key: value}
  local = key[len(prefix):]
  if any(re.search(pattern, local) for pattern in rule.skip):
    return {}
  for pattern, replacement in rule.renames:
    local = re.sub(pattern, replacement, local)
  for pattern, transform in rule.transforms:
    if re.search(pattern, local):
      local_shape = lambda k: target_shape(prefix + k)
      pieces = evaluate(lambda v: transform(local, v, local_shape), value)
      return {prefix + k: v for k, v in pieces.items()}
  return {prefix + local: value}


def _rule_for(name: str, rules: Mapping[str, CheckpointRules]) -> tuple[str, CheckpointRules | None]:
  """(prefix, rules) of the first prefix ``name`` lies under; ("", None) if none."""
  for prefix, rule in rules.items():
    if name.startswith(prefix):
      return prefix, rule
  return "", None


def _concat_partners(state_dict: Mapping, rules: Mapping[str, CheckpointRules], evaluate) -> dict:
  """``state_dict`` with each key a ``concat`` rule matches followed by its partner along the
  first dimension, the partner removed."""
  out = dict(state_dict)
  for key in list(out):
    prefix, rule = _rule_for(key, rules)
    if rule is None or key not in out:
      continue
    local = key[len(prefix):]
    for pattern, partner in rule.concat:
      if re.search(pattern, local):
        other = prefix + re.sub(pattern, partner, local)
        if other not in out:
          raise CheckpointMismatchError(f"{key}: {other}, to be concatenated after it, is not in "
                                        "the checkpoint")
        out[key] = evaluate(lambda a, b: jnp.concatenate([a, b]), out[key], out.pop(other))
        break
  return out


def _keeps_initial(path: str, rules: Mapping[str, CheckpointRules]) -> bool:
  """Whether the rules leave the model's parameter ``path`` (Flax) at its initial value."""
  module = ".".join(path.split("/")[1:-1])
  prefix, rule = _rule_for(module + ".", rules)
  return rule is not None and any(re.search(p, module[len(prefix):]) for p in rule.keep_initial)


def _flatten(target: Any) -> dict[str, Any]:
  return {"/".join(k): v for k, v in traverse_util.flatten_dict(target).items()}


def _combine(state_dict: Mapping, rules: Mapping[str, CheckpointRules], evaluate: Callable) -> dict:
  """``state_dict`` with each prefix's ``combine`` applied to the keys under that prefix (a key
  belongs to the first prefix it starts with, as in ``_apply_rules``)."""
  if not any(rule.combine for rule in rules.values()):
    return dict(state_dict)
  groups: dict[str, dict] = {prefix: {} for prefix in rules}
  out = {}
  for key, value in state_dict.items():
    prefix, rule = _rule_for(key, rules)
    if rule is None:
      out[key] = value
    else:
      groups[prefix][key[len(prefix):]] = value
  for prefix, group in groups.items():
    combined = evaluate(rules[prefix].combine, group) if rules[prefix].combine and group else group
    out.update({prefix + k: v for k, v in combined.items()})
  return out


def _map_state_dict(state_dict: Mapping, flat_target: Mapping[str, Any],
                    rules: Mapping[str, CheckpointRules] | None, evaluate: Callable) -> dict[str, Any]:
  """The mapping ``convert_state_dict`` and ``check_state_dict`` share: ``{Flax path: value}``
  with ``evaluate(function, value)`` applying layout changes and transforms."""
  rules = rules or {}

  def target_shape(name):
    path = _flax_path(name, flat_target)
    return None if path is None else tuple(flat_target[path].shape)

  out: dict[str, Any] = {}
  given_by: dict[str, str] = {}
  unmapped, mismatched = [], []
  for key, value in _concat_partners(_combine(state_dict, rules, evaluate), rules, evaluate).items():
    for name, piece in _apply_rules(key, value, rules, target_shape, evaluate).items():
      shown = key if name == key else f"{key} (as {name})"
      path = _flax_path(name, flat_target)
      if path is None:
        unmapped.append(shown)
        continue
      if path in given_by:
        mismatched.append(f"{shown}: model {path} was already given by {given_by[path]}")
        continue
      given_by[path] = shown
      piece = evaluate(lambda v: _to_flax_layout(v, path.rsplit("/", 1)[1]), piece)
      want = tuple(flat_target[path].shape)
      if tuple(piece.shape) != want:
        mismatched.append(f"{shown}: checkpoint {tuple(piece.shape)} (in Flax layout) vs model {path} {want}")
      else:
        out[path] = piece
  kept = {path for path in set(flat_target) - set(given_by) if _keeps_initial(path, rules)}
  missing = sorted(set(flat_target) - set(given_by) - kept)
  if unmapped or missing or mismatched:
    lines = []
    if mismatched:
      lines.append(f"{len(mismatched)} shape mismatch(es):\n  " + "\n  ".join(mismatched))
    if unmapped:
      lines.append(f"{len(unmapped)} checkpoint key(s) with no model parameter:\n  " + "\n  ".join(unmapped))
    if missing:
      lines.append(f"{len(missing)} model parameter(s) with no checkpoint key:\n  " + "\n  ".join(missing))
    problems = (mismatched + [f"unexpected key {k}" for k in unmapped]
                + [f"missing model parameter {p}" for p in missing])
    raise CheckpointMismatchError("checkpoint does not fit the model:\n" + "\n".join(lines), problems)
  out.update({path: flat_target[path] for path in kept})
  return out


def convert_state_dict(state_dict: Mapping[str, np.ndarray], target: Any,
                       rules: Mapping[str, CheckpointRules] | None = None) -> dict:
  """Map ``state_dict`` onto the structure of ``target`` (a variables tree of arrays or
  ``ShapeDtypeStruct``s, e.g. from ``jax.eval_shape(model.init, ...)``).

  ``rules`` maps a key prefix (``"backbone."``, or ``""`` for every key) to the
  ``CheckpointRules`` of the weights' release source for the module there (``checkpoint_rules``
  gathers them for a segmentor). Raises CheckpointMismatchError naming unmapped keys, parameters
  without a key and shape mismatches.
  """
  flat_target = _flatten(target)
  out = _map_state_dict(state_dict, flat_target, rules, lambda f, *v: f(*jax.tree.map(np.asarray, v)))
  uninitialised = sorted(k for k, v in out.items() if isinstance(v, jax.ShapeDtypeStruct))
  if uninitialised:
    raise CheckpointMismatchError("the checkpoint does not hold these parameters (its rules keep them "
                                  "at the model's initialisation) and the target has no values: give "
                                  "initialised variables (model.init) as target:\n  " + "\n  ".join(uninitialised))
  return traverse_util.unflatten_dict({tuple(k.split("/")): np.asarray(v).astype(flat_target[k].dtype)
                                       for k, v in out.items()})


def check_state_dict(key_shapes: Mapping[str, Sequence[int]], target: Any,
                     rules: Mapping[str, CheckpointRules] | None = None) -> dict:
  """``convert_state_dict`` on shapes alone (``{key: shape}``, e.g. mmseg's key listing): the
  same mapping, rules and errors, without making any array (a 300M-parameter model checks in
  milliseconds). Returns the tree of ``ShapeDtypeStruct``s the conversion would give."""
  abstract = {k: jax.ShapeDtypeStruct(tuple(shape), jnp.float32) for k, shape in key_shapes.items()}
  out = _map_state_dict(abstract, _flatten(target), rules, jax.eval_shape)
  return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in out.items()})


def to_state_dict(variables: Mapping) -> dict[str, np.ndarray]:
  """The inverse of ``convert_state_dict`` without rules: Flax variables as an mmseg
  ``state_dict`` ((*window, I, O) -> (O, I, *window), ``scale`` -> ``weight``, BatchNorm
  ``mean/var`` -> ``running_mean/var``), e.g. to hand segjax weights to PyTorch code."""
  leaves = {flax_leaf: torch_leaf for torch_leaf, flax_leaves in _LEAVES.items()
            for flax_leaf in flax_leaves}
  out = {}
  flat = traverse_util.flatten_dict(dict(variables))
  param_leaves = {}  # module path -> its parameter names
  for collection, *modules, leaf in flat:
    if collection == "params":
      param_leaves.setdefault(tuple(modules), set()).add(leaf)
  for path, value in flat.items():
    collection, *modules, leaf = path
    value = np.asarray(value)
    if leaf == "kernel" and value.ndim >= 2:
      value = value.transpose((value.ndim - 1, value.ndim - 2) + tuple(range(value.ndim - 2)))
    name = leaves.get((collection, leaf), leaf)
    if (collection, leaf) == ("params", "scale"):
      # mmcv's Scale (a 0-d ``scale``) or a module's own ``scale`` beside leaves a norm does not
      # have (EncNet's Encoding: ``codewords``) is not a norm's weight.
      if value.ndim == 0 or param_leaves[tuple(modules)] - {"scale", "bias"}:
        name = "scale"
    out[".".join((*modules, name))] = value
  return out


# ---- rules of a model, checkpoints ----------------------------------------------------------

def declared_rules(cls: type, cfg: Mapping | None = None) -> dict[str, CheckpointRules]:
  """``cls.CHECKPOINT_RULES``, or ``cls.checkpoint_rules(cfg)`` for a family whose rules depend on
  its config ``cfg`` (the ViT resizes a position table with its ``interpolate_mode``). A class
  without rules takes mmseg's own checkpoints as they are."""
  if cfg is not None and hasattr(cls, "checkpoint_rules"):
    return cls.checkpoint_rules(cfg)
  return getattr(cls, "CHECKPOINT_RULES", {"mmseg": CheckpointRules()})


def nested_rules(rules: CheckpointRules, prefix: str) -> CheckpointRules:
  """``rules`` of a release of the network a backbone holds at ``prefix`` (dotted, e.g.
  ``context_path.backbone.``), for the wrapper: the release's keys land under ``prefix`` and the
  wrapper's other modules keep their initialisation, as mmcv's init loads a ``Pretrained``
  ``init_cfg`` of the wrapped network (mmseg's ``backbone_cfg``) into that submodule alone."""
  inner = prefix.rstrip(".")
  keep = []
  for pattern in rules.keep_initial:
    if not pattern.startswith("^"):
      raise ValueError(f"keep_initial pattern {pattern!r} is not anchored with '^', so it cannot "
                       f"be placed under {prefix!r}")
    keep.append(f"^{re.escape(prefix)}(?:{pattern[1:]})")

  def transform_within(key, value, target_shape):  # the release's transforms, on its own key names
    return _apply_rules(key, value, {prefix: CheckpointRules(transforms=rules.transforms)},
                        target_shape, lambda f, v: f(v))

  # skip, concat and combine see the release's own keys, before the renames place them.
  return dataclasses.replace(
      rules, renames=(*rules.renames, (r"^", prefix)),
      transforms=((f"^{re.escape(prefix)}", transform_within),) if rules.transforms else (),
      keep_initial=(f"^(?!{re.escape(inner)}(\\.|$))", *keep))


def nested_backbone_rules(backbone_cfg: Mapping | None, prefix: str) -> dict[str, CheckpointRules]:
  """Every release (but ``mmseg``'s segmentor checkpoints, which are the wrapper's own) of the
  backbone family of ``backbone_cfg``, nested at ``prefix`` (``nested_rules``)."""
  from segjax.models import BACKBONES

  cls = BACKBONES.get((backbone_cfg or {}).get("type"))
  if cls is None:
    return {}
  return {source: nested_rules(rules, prefix)
          for source, rules in declared_rules(cls, backbone_cfg).items() if source != "mmseg"}


def family_rules(cls: type, source: str, cfg: Mapping | None = None) -> CheckpointRules:
  """``cls.CHECKPOINT_RULES[source]``: how the ``source`` release names ``cls``'s weights (built
  with ``cfg``, the module's config, when its rules depend on it)."""
  declared = declared_rules(cls, cfg)
  if source not in declared:
    raise CheckpointMismatchError(f"{cls.__name__} has checkpoint rules for source(s) "
                                  f"{sorted(declared)}, not {source!r}")
  return declared[source]


def checkpoint_rules(model_cfg: Mapping, source: str = "mmseg") -> dict[str, CheckpointRules]:
  """``{prefix: rules}`` for a whole-segmentor checkpoint of ``source``: the rules each module of
  the ``model`` dict (backbone, neck, heads) declares, under the prefix mmseg saves it at."""
  from segjax.models import BACKBONES, HEADS, NECKS  # the models import nothing from here

  rules = {}
  for kind, table in (("backbone", BACKBONES), ("neck", NECKS), ("decode_head", HEADS),
                      ("auxiliary_head", HEADS)):
    cfg = model_cfg.get(kind)
    many = isinstance(cfg, (list, tuple))
    for i, sub in enumerate(cfg if many else [cfg] if cfg else []):
      if sub.get("type") in table:
        rules[f"{kind}.{i}." if many else f"{kind}."] = family_rules(table[sub["type"]], source, sub)
  return rules


def convert_checkpoint(path: str, model, input_shape=(1, 64, 64, 3), source: str = "mmseg") -> dict:
  """Load a segmentor ``.pth`` of ``source`` (mmseg's own by default) and convert it for
  ``model`` (shapes from ``jax.eval_shape``)."""
  target = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros(input_shape, np.float32)))
  model_cfg = {kind: getattr(model, kind, None)
               for kind in ("backbone", "neck", "decode_head", "auxiliary_head")}
  return convert_state_dict(load_checkpoint(path), target, checkpoint_rules(model_cfg, source))


def _release_state(state: Mapping, source: str) -> dict:
  """The keys ``source``'s rules apply to: a segmentor checkpoint (``"mmseg"``) gives its
  ``backbone.`` keys without the prefix, any other release all its keys."""
  if source != "mmseg":
    return dict(state)
  return {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}


def _fitting_sources(state: Mapping, flat_target: Mapping, cls: type, cfg: Mapping | None,
                     path: str) -> list[str]:
  """The sources ``cls`` declares whose rules map ``state`` onto the model (shapes only); none
  fitting is an error naming each source's first mismatch."""
  abstract = {k: jax.ShapeDtypeStruct(np.shape(v), jnp.float32) for k, v in state.items()}
  fitting, reasons = [], []
  for source in declared_rules(cls, cfg):
    released = _release_state(abstract, source)
    if not released:
      reasons.append(f"{source}: no key starts with 'backbone.' (not a segmentor checkpoint)")
      continue
    try:
      _map_state_dict(released, flat_target, {"": family_rules(cls, source, cfg)}, jax.eval_shape)
    except CheckpointMismatchError as e:
      reasons.append(f"{source}: {e.problems[0]}")
    except (ValueError, TypeError) as e:  # a transform given a key of a shape it cannot take
      reasons.append(f"{source}: {type(e).__name__}: {e}")
    else:
      fitting.append(source)
  if not fitting:
    raise CheckpointMismatchError(
        f"{path}: no release of {cls.__name__} weights fits this checkpoint; the first mismatch "
        "under each source's rules (CHECKPOINT_RULES):\n  " + "\n  ".join(reasons))
  return fitting


def convert_backbone_checkpoint(path: str, backbone_target: Any, backbone: type | str | Mapping,
                                source: str | None = None, prefix: str | None = None) -> dict:
  """Weights for the backbone alone, as mmseg's ``pretrained=``, from a checkpoint of ``source``
  as the backbone class (or type name, or the backbone's config dict, whose settings some rules
  follow) declares it, e.g. ``"imagenet"`` (a classifier whose
  head the family's rules drop), ``"mmcls"``, ``"timm"``, or ``"mmseg"``: a segmentor
  checkpoint, whose ``backbone.`` keys are taken with the prefix stripped and the rest ignored.

  ``source=None`` tries every source the class declares and takes the one whose rules convert
  the checkpoint (should several, they must give the same weights). ``prefix`` (mmcv's
  ``init_cfg=dict(type='Pretrained', prefix=...)``) first keeps only the keys under it, without it.
  Parameters the release does not hold (the rules' ``keep_initial``) keep ``backbone_target``'s
  values.
  """
  from segjax.models import BACKBONES

  cfg = backbone if isinstance(backbone, Mapping) else None
  kind = cfg["type"] if cfg else backbone
  cls = BACKBONES[kind] if isinstance(kind, str) else kind
  state = load_checkpoint(path)
  if prefix:
    prefix = prefix if prefix.endswith(".") else prefix + "."
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not state:
      raise CheckpointMismatchError(f"{path}: no key starts with the init_cfg prefix {prefix!r}")
  convert = lambda source: convert_state_dict(_release_state(state, source), backbone_target,
                                              {"": family_rules(cls, source, cfg)})
  if source is not None:
    try:
      return convert(source)
    except CheckpointMismatchError as e:
      raise CheckpointMismatchError(f"{path} as {cls.__name__}'s {source!r} release: {e}") from None
  first, *others = _fitting_sources(state, _flatten(backbone_target), cls, cfg, path)
  converted = convert(first)
  for other in others:
    same = jax.tree.structure(converted) == jax.tree.structure(out := convert(other)) and all(
        np.array_equal(a, b) for a, b in zip(jax.tree.leaves(converted), jax.tree.leaves(out)))
    if not same:
      raise CheckpointMismatchError(
          f"{path}: the rules of {cls.__name__}'s sources {first!r} and {other!r} both fit this "
          "checkpoint but give different weights; name the release: source=...")
  return converted
