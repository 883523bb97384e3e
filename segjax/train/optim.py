"""Optimizers and learning-rate schedules from config, with mmcv's semantics.

SGD adds ``weight_decay * param`` to the gradient before momentum (PyTorch's SGD), and the poly
schedule is mmcv's ``PolyLrUpdaterHook`` by iteration: ``(base_lr - min_lr) * (1 - it/max_iters)
** power + min_lr``.
"""
from __future__ import annotations

import optax


def build_schedule(config) -> optax.Schedule:
  lr_cfg = config.lr_config
  base_lr = config.optimizer.lr
  policy = lr_cfg.policy
  if policy == "poly":
    return optax.polynomial_schedule(init_value=base_lr, end_value=lr_cfg.min_lr,
                                     power=lr_cfg.power, transition_steps=config.total_iters)
  if policy == "fixed":
    return optax.constant_schedule(base_lr)
  raise ValueError(f"lr_config.policy={policy!r} is not supported; expected 'poly' or 'fixed'")


def build_optimizer(config) -> tuple[optax.GradientTransformation, optax.Schedule]:
  opt = config.optimizer
  schedule = build_schedule(config)
  if opt.type == "SGD":
    tx = optax.chain(optax.add_decayed_weights(opt.weight_decay),
                     optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.get("nesterov", False)))
  elif opt.type == "AdamW":
    tx = optax.adamw(schedule, b1=opt.betas[0], b2=opt.betas[1], eps=opt.get("eps", 1e-8),
                     weight_decay=opt.weight_decay)
  else:
    raise ValueError(f"optimizer.type={opt.type!r} is not supported; expected 'SGD' or 'AdamW'")
  max_norm = config.optimizer_config.grad_clip.max_norm
  if max_norm:
    tx = optax.chain(optax.clip_by_global_norm(max_norm), tx)
  return tx, schedule
