"""Optimizers and learning-rate schedules from config, with mmcv's semantics.

- SGD adds ``weight_decay * param`` to the gradient before momentum (PyTorch's SGD); AdamW
  decouples it; Adam adds it to the gradient.
- ``paramwise_cfg`` (mmcv's DefaultOptimizerConstructor): ``custom_keys`` ({substring: {lr_mult,
  decay_mult}}, longest key first), else ``bias_lr_mult``/``bias_decay_mult`` for conv/linear
  biases and ``norm_decay_mult`` for norm weights and biases. Names are matched in mmseg's
  dotted form (``backbone.layer1.0.bn1.weight``). ``constructor='LearningRateDecayOptimizerConstructor'``
  (or mmseg's LayerDecayOptimizerConstructor) scales lr by layer id as mmseg assigns it.
- ``optimizer_config.grad_clip`` (max_norm, norm_type: any p > 0 or inf) clips as torch's
  ``clip_grad_norm_``; ``cumulative_iters`` accumulates as mmcv's GradientCumulativeOptimizerHook.
- Parameters mmseg sets ``requires_grad=False`` (a backbone's ``frozen_stages``, a norm_cfg's
  ``requires_grad=False``) get no update at all, as PyTorch's optimizers skip a parameter without
  gradient: no weight decay, no momentum, left out of the gradient clipping norm
  (``frozen_names``).
- Schedules by iteration (mmcv ``*LrUpdaterHook``, ``by_epoch=False``): poly, step, cosine
  annealing, cyclic, fixed; each with linear/constant/exp warmup over ``warmup_iters`` from
  ``warmup_ratio``: the warmup multiplies the regular lr of the same iteration, as mmcv does.
  ``momentum_config.policy='cyclic'`` cycles SGD's momentum (Adam's beta1) as mmcv's
  CyclicMomentumUpdaterHook.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn
import optax
from flax import traverse_util

from segjax.config import to_plain
from segjax.models import BACKBONES, LAYER_DECAY_IDS, build_segmentor, init_variables, module_kwargs


def cyclic(cfg: Mapping, base: float, max_iters: int, default_target):
  """mmcv's CyclicLrUpdaterHook / CyclicMomentumUpdaterHook by iteration: per cycle, from ``base``
  to ``base * target_ratio[0]`` over ``step_ratio_up`` of the cycle, then to
  ``base * target_ratio[1]``; ``gamma`` shrinks the excursion of later cycles."""
  up_ratio, down_ratio = cfg.get("target_ratio", default_target)
  gamma = cfg.get("gamma", 1.0)
  per_phase = max_iters // cfg.get("cyclic_times", 1)
  iter_up = int(cfg.get("step_ratio_up", 0.4) * per_phase)
  anneal = cfg.get("anneal_strategy", "cos")
  if anneal not in ("cos", "linear"):
    raise ValueError(f"anneal_strategy={anneal!r}; expected 'cos' or 'linear'")

  def interp(start, end, factor):
    if anneal == "cos":
      return end + (start - end) / 2 * (jnp.cos(math.pi * factor) + 1)
    return start + (end - start) * factor

  def value(it):
    it = jnp.asarray(it, jnp.float32)
    cur = jnp.mod(it, per_phase)
    scale = gamma ** jnp.floor(it / per_phase)
    peak = base * (1 - scale + up_ratio * scale)
    up = interp(base, peak, cur / iter_up)
    down = interp(peak, base * down_ratio, (cur - iter_up) / (per_phase - iter_up))
    return jnp.where(cur < iter_up, up, down)
  return value


def _regular_lr(lr_cfg: Mapping, base_lr: float, max_iters: int):
  policy = lr_cfg["policy"]
  if policy == "poly":
    power, min_lr = lr_cfg.get("power", 1.0), lr_cfg.get("min_lr", 0.0)
    return lambda it: (base_lr - min_lr) * (1 - it / max_iters) ** power + min_lr
  if policy == "step":
    steps, gamma, min_lr = lr_cfg["step"], lr_cfg.get("gamma", 0.1), lr_cfg.get("min_lr")
    def step_lr(it):
      if isinstance(steps, int):
        exp = it // steps
      else:
        exp = sum(jnp.asarray(it) >= s for s in steps)
      lr = base_lr * gamma ** exp
      return lr if min_lr is None else jnp.maximum(lr, min_lr)
    return step_lr
  if policy == "CosineAnnealing":
    ratio = lr_cfg.get("min_lr_ratio")
    target = base_lr * ratio if ratio is not None else lr_cfg.get("min_lr", 0.0)
    return lambda it: target + (base_lr - target) / 2 * (jnp.cos(math.pi * it / max_iters) + 1)
  if policy == "cyclic":
    return cyclic(lr_cfg, base_lr, max_iters, default_target=(10, 1e-4))
  if policy == "fixed":
    return lambda it: base_lr * jnp.ones_like(jnp.asarray(it, jnp.float32))
  raise ValueError(f"lr_config.policy={policy!r} is not supported; expected one of "
                   "'poly', 'step', 'CosineAnnealing', 'cyclic', 'fixed'")


def build_schedule(config) -> optax.Schedule:
  """lr(iteration) of ``config.lr_config`` for ``config.optimizer.lr`` over ``config.total_iters``."""
  lr_cfg = dict(config.lr_config)
  regular = _regular_lr(lr_cfg, config.optimizer.lr, config.total_iters)
  warmup, warmup_iters = lr_cfg.get("warmup"), lr_cfg.get("warmup_iters") or 0
  ratio = lr_cfg.get("warmup_ratio", 0.1)
  if warmup is None or warmup_iters == 0:
    return lambda it: jnp.asarray(regular(jnp.asarray(it, jnp.float32)), jnp.float32)
  if warmup not in ("constant", "linear", "exp"):
    raise ValueError(f"lr_config.warmup={warmup!r}; expected 'constant', 'linear' or 'exp'")

  def schedule(it):
    it = jnp.asarray(it, jnp.float32)
    lr = regular(it)
    if warmup == "constant":
      factor = ratio
    elif warmup == "linear":
      factor = 1 - (1 - it / warmup_iters) * (1 - ratio)
    else:
      factor = ratio ** (1 - it / warmup_iters)
    return jnp.asarray(jnp.where(it < warmup_iters, lr * factor, lr), jnp.float32)
  return schedule


def torch_name(path: tuple) -> str:
  """Flax parameter path -> mmseg's state_dict name (``kernel``/``scale`` -> ``weight``)."""
  leaf = {"kernel": "weight", "scale": "weight", "embedding": "weight"}.get(path[-1], path[-1])
  return ".".join((*path[:-1], leaf))


def backbone_frozen_names(model_cfg: Mapping) -> tuple[str, ...]:
  """mmseg names (``backbone.layer1``: a module or a parameter) of what the backbone's
  ``_freeze_stages`` sets ``requires_grad=False`` on, as its class declares it for its config
  (``frozen_parameters()``; a class without it freezes nothing)."""
  cfg = dict(model_cfg.get("backbone") or {})
  cls = BACKBONES.get(cfg.get("type"))
  if cls is None or not hasattr(cls, "frozen_parameters"):
    return ()
  backbone = cls(**module_kwargs(cls, cfg, "model.backbone"), parent=None)
  return tuple(f"backbone.{name}" for name in backbone.frozen_parameters())


def _sets_requires_grad_false(cfg) -> bool:
  if isinstance(cfg, Mapping):
    return cfg.get("requires_grad", True) is False or any(map(_sets_requires_grad_false, cfg.values()))
  if isinstance(cfg, (list, tuple)):
    return any(map(_sets_requires_grad_false, cfg))
  return False


def frozen_norm_names(model_cfg: Mapping) -> tuple[str, ...]:
  """mmseg names of the norm layers built from a ``norm_cfg`` with ``requires_grad=False``
  (mmcv's build_norm_layer freezes their weight and bias): the layers the model marks
  (``layers.norm_layer``), found by tracing its initialisation, only when the config sets
  ``requires_grad=False`` somewhere."""
  if not _sets_requires_grad_false(model_cfg):
    return ()
  found = set()

  def record(call, args, kwargs, context):
    if getattr(context.module, "requires_grad", True) is False:
      found.add(".".join(context.module.path))
    return call(*args, **kwargs)

  model = build_segmentor(model_cfg)
  with nn.intercept_methods(record):
    jax.eval_shape(lambda rng: init_variables(model, rng), jax.random.PRNGKey(0))
  return tuple(sorted(found))


def frozen_names(model_cfg: Mapping) -> tuple[str, ...]:
  """mmseg names of what mmseg trains with ``requires_grad=False``: the backbone's frozen stages
  and the norm layers of ``requires_grad=False`` norm_cfgs."""
  model_cfg = to_plain(model_cfg)
  return (*backbone_frozen_names(model_cfg), *frozen_norm_names(model_cfg))


def frozen_mask(params, names: Sequence[str]) -> Any:
  """Tree of bools over ``params``: whether a parameter's mmseg name is one of ``names`` or lies
  under one. A name holding no parameter is an error (a declaration that does not match the
  model would otherwise freeze nothing)."""
  flat = {path: torch_name(path) for path in traverse_util.flatten_dict(params)}
  under = lambda name, prefix: name == prefix or name.startswith(prefix + ".")
  unmatched = [n for n in names if not any(under(name, n) for name in flat.values())]
  if unmatched:
    raise ValueError(f"frozen parameters {unmatched} (the backbone's frozen_stages, or a norm_cfg's "
                     "requires_grad=False) name no parameter of the model")
  return traverse_util.unflatten_dict({path: any(under(name, n) for n in names)
                                       for path, name in flat.items()})


def param_multipliers(params, paramwise_cfg: Mapping | None) -> tuple[Any, Any]:
  """Trees of per-parameter (lr_mult, decay_mult) following mmcv's DefaultOptimizerConstructor."""
  cfg = dict(paramwise_cfg or {})
  custom = dict(cfg.get("custom_keys") or {})
  keys = sorted(sorted(custom), key=len, reverse=True)
  flat = traverse_util.flatten_dict(params)
  lr_mult, decay_mult = {}, {}
  for path in flat:
    name = torch_name(path)
    siblings = {p[-1] for p in flat if p[:-1] == path[:-1]}
    is_norm = "scale" in siblings  # norm layers hold {scale, bias}; convs/linears {kernel, bias}
    lr, wd = 1.0, 1.0
    for key in keys:
      if key in name:
        lr = custom[key].get("lr_mult", 1.0)
        wd = custom[key].get("decay_mult", 1.0)
        break
    else:
      if path[-1] == "bias" and not is_norm:
        lr = cfg.get("bias_lr_mult", 1.0)
        wd = cfg.get("bias_decay_mult", 1.0)
      if is_norm:
        wd = cfg.get("norm_decay_mult", 1.0)
    lr_mult[path], decay_mult[path] = lr, wd
  return traverse_util.unflatten_dict(lr_mult), traverse_util.unflatten_dict(decay_mult)


def layer_decay_multipliers(params, paramwise_cfg: Mapping, backbone_type: str) -> tuple[Any, Any]:
  """Trees of (lr_mult, decay_mult) of mmseg's LearningRateDecayOptimizerConstructor:
  lr x ``decay_rate ** (num_layers + 1 - layer_id)`` with the layer id mmseg assigns by name,
  from the backbone family's function for ``decay_type`` (``segjax.models.LAYER_DECAY_IDS``:
  'layer_wise' for ConvNeXt/BEiT/MAE, 'stage_wise' for ConvNeXt); 1-D params and biases get no
  weight decay."""
  cfg = dict(paramwise_cfg)
  num_layers = cfg["num_layers"] + 2
  rate = cfg.get("decay_rate", cfg.get("layer_decay_rate"))
  decay_type = cfg.get("decay_type", "layer_wise")
  family_ids = LAYER_DECAY_IDS.get(backbone_type, {})
  if decay_type not in family_ids:
    defined = "; ".join(f"{name} ({', '.join(ids)})" for name, ids in LAYER_DECAY_IDS.items())
    raise ValueError(f"lr decay by layer ({decay_type}) is defined by mmseg for {defined}, "
                     f"not for backbone {backbone_type!r}")
  layer_id = family_ids[decay_type]
  flat = traverse_util.flatten_dict(params)
  lr_mult, decay_mult = {}, {}
  for path, value in flat.items():
    name = torch_name(path)
    # mmseg's test also lists 'pos_embed'/'cls_token' without the 'backbone.' prefix, so it
    # never matches them: they keep their weight decay there too.
    no_decay = len(value.shape) == 1 or name.endswith(".bias") or name in ("pos_embed", "cls_token")
    lr_mult[path] = rate ** (num_layers - layer_id(name, cfg["num_layers"]) - 1)
    decay_mult[path] = 0.0 if no_decay else 1.0
  return traverse_util.unflatten_dict(lr_mult), traverse_util.unflatten_dict(decay_mult)


def clip_grad_norm(max_norm: float, norm_type: float = 2.0) -> optax.GradientTransformation:
  """torch's ``clip_grad_norm_`` (mmcv's ``grad_clip``): the ``norm_type``-norm of all gradients
  (``inf``: the largest magnitude); when it exceeds ``max_norm`` every gradient is scaled by
  ``max_norm / (norm + 1e-6)``."""
  norm_type = float(norm_type)
  if not (norm_type > 0):
    raise ValueError(f"optimizer_config.grad_clip.norm_type={norm_type}; expected a positive p or inf")

  def clip(updates, params=None):
    del params
    leaves = [jnp.abs(u.astype(jnp.float32)) for u in jax.tree.leaves(updates)]
    if math.isinf(norm_type):
      total = jnp.max(jnp.stack([jnp.max(g) for g in leaves]))
    else:
      total = sum(jnp.sum(g ** norm_type) for g in leaves) ** (1.0 / norm_type)
    factor = jnp.minimum(max_norm / (total + 1e-6), 1.0)
    return jax.tree.map(lambda u: (u * factor).astype(u.dtype), updates)
  return optax.stateless(clip)


def _scale_by_tree(tree) -> optax.GradientTransformation:
  return optax.stateless(lambda updates, params=None: jax.tree.map(lambda u, m: u * m, updates, tree))


def _add_decay(weight_decay: float, decay_mult) -> optax.GradientTransformation:
  def add(updates, params):
    return jax.tree.map(lambda u, p, m: u + weight_decay * m * p, updates, params, decay_mult)
  return optax.stateless(add)


def multipliers(config, params=None) -> tuple[Any, Any]:
  """Trees of per-parameter (lr_mult, decay_mult) of ``config.optimizer``'s constructor and
  ``paramwise_cfg``, or (None, None) when every parameter uses the base values."""
  opt = dict(config.optimizer)
  paramwise = opt.get("paramwise_cfg")
  constructor = opt.get("constructor") or "DefaultOptimizerConstructor"
  if paramwise and params is None:
    raise ValueError("optimizer.paramwise_cfg needs the parameter tree: build_optimizer(config, params)")
  if constructor in ("LearningRateDecayOptimizerConstructor", "LayerDecayOptimizerConstructor"):
    return layer_decay_multipliers(params, paramwise or {}, config.model.backbone.type)
  if constructor != "DefaultOptimizerConstructor":
    raise ValueError(f"optimizer.constructor={constructor!r}; expected DefaultOptimizerConstructor, "
                     "LearningRateDecayOptimizerConstructor or LayerDecayOptimizerConstructor")
  if paramwise:
    return param_multipliers(params, paramwise)
  return None, None


def distinct_lr_multipliers(config, params) -> list[float]:
  """The distinct lr multipliers of the parameter groups (mmcv's param_groups), sorted."""
  lr_mult, _ = multipliers(config, params)
  return sorted({float(m) for m in jax.tree.leaves(lr_mult)}) if lr_mult is not None else [1.0]


def build_optimizer(config, params=None) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """optax transformation for ``config.optimizer`` (+ ``paramwise_cfg``, gradient clipping).

  ``params`` (or a tree of the same structure) is needed only when ``paramwise_cfg`` is set.
  The parameters ``frozen_names`` gives get a zero update, and the rest of the optimizer (its
  state, the clipping norm) does not see them.
  """
  opt = dict(config.optimizer)
  schedule = build_schedule(config)
  lr_mult, decay_mult = multipliers(config, params)
  frozen = frozen_names(config.model) if config.get("model") is not None else ()
  labels = None
  if frozen:
    label = lambda mask: jax.tree.map(lambda f: "frozen" if f else "trained", mask)
    if params is None:
      labels = lambda tree: label(frozen_mask(tree, frozen))
    else:
      mask = frozen_mask(params, frozen)
      labels = label(mask)
    if lr_mult is not None:  # multiplier trees exist only for a given params tree
      # The trained parameters' transformations see the frozen leaves as optax.masked gives
      # them (MaskedNode), so their multiplier trees must hold them the same way.
      hide = lambda tree: jax.tree.map(lambda m, f: optax.MaskedNode() if f else m, tree, mask)
      lr_mult, decay_mult = hide(lr_mult), hide(decay_mult)
  wd = opt.get("weight_decay", 0.0) or 0.0
  decay = (_add_decay(wd, decay_mult) if decay_mult is not None else optax.add_decayed_weights(wd))
  kind = opt["type"]
  mom_cfg = dict(config.get("momentum_config") or {})
  if mom_cfg.get("policy") not in (None, "cyclic"):
    raise ValueError(f"momentum_config.policy={mom_cfg['policy']!r}; expected 'cyclic' or None")

  def momentum_of(base):
    """``base`` or, with momentum_config.policy='cyclic', its schedule (mmcv's momentum hook)."""
    if mom_cfg.get("policy") != "cyclic":
      return base
    return cyclic(mom_cfg, base, config.total_iters, default_target=(0.85 / 0.95, 1.0))

  if kind == "SGD":
    momentum = opt.get("momentum", 0.0) or None
    trace = optax.inject_hyperparams(optax.trace, static_args=("nesterov",))
    core = [decay, trace(decay=momentum_of(momentum), nesterov=opt.get("nesterov", False))] if momentum else [decay]
  elif kind in ("Adam", "AdamW"):
    b1, b2 = opt.get("betas", (0.9, 0.999))
    adam = optax.inject_hyperparams(optax.scale_by_adam)(b1=momentum_of(b1), b2=b2, eps=opt.get("eps", 1e-8))
    core = [decay, adam] if kind == "Adam" else [adam, decay]
  else:
    raise ValueError(f"optimizer.type={kind!r} is not supported; expected 'SGD', 'Adam' or 'AdamW'")
  # mmcv's GradientCumulativeOptimizerHook: one update per `every` iterations, on their mean
  # gradient, at the lr of the iteration it happens in (iterations every-1, 2*every-1, ...); when
  # total_iters is no multiple of `every`, the last update is the mean of the remaining ones, at
  # the last iteration.
  every = int(config.optimizer_config.get("cumulative_iters") or 1)
  total = int(config.total_iters)
  last_iter = lambda count: jnp.minimum(count * every + every - 1, total - 1)
  update_lr = schedule if every == 1 else (lambda count: schedule(last_iter(count)))
  parts = core + [optax.scale_by_learning_rate(update_lr)]
  if lr_mult is not None:
    parts.append(_scale_by_tree(lr_mult))
  clip = config.optimizer_config.grad_clip
  if clip.max_norm:
    parts.insert(0, clip_grad_norm(clip.max_norm, clip.get("norm_type", 2.0)))
  tx = optax.chain(*parts)
  if labels is not None:
    tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
  if every == 1:
    return tx, schedule
  full_updates, remainder = divmod(total, every)
  group_size = lambda updates_done: jnp.where(updates_done < full_updates, every, remainder)
  return optax.MultiSteps(tx, every_k_schedule=group_size if remainder else every), schedule
