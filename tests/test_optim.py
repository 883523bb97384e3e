"""Learning rates equal mmcv's formulas computed by hand; SGD/AdamW with paramwise_cfg equal
torch.optim with the param groups mmcv would build."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from segjax.config import base_config
from segjax.train import optim


def config(lr_config, optimizer=None, total_iters=100):
  c = base_config()
  c.lr_config = lr_config
  if optimizer is not None:
    c.optimizer = optimizer
  c.total_iters = total_iters
  return c


def lr_at(c, it):
  return float(optim.build_schedule(c)(it))


def test_poly_with_linear_warmup():
  c = config(dict(policy="poly", power=0.9, min_lr=1e-4, warmup="linear", warmup_iters=10,
                  warmup_ratio=0.1))
  regular = lambda it: (0.01 - 1e-4) * (1 - it / 100) ** 0.9 + 1e-4
  assert lr_at(c, 0) == pytest.approx(regular(0) * 0.1, rel=1e-6)
  assert lr_at(c, 3) == pytest.approx(regular(3) * (1 - (1 - 3 / 10) * 0.9), rel=1e-6)
  assert lr_at(c, 10) == pytest.approx(regular(10), rel=1e-6)
  assert lr_at(c, 70) == pytest.approx(regular(70), rel=1e-6)


def test_exp_and_constant_warmup():
  exp = config(dict(policy="poly", power=1.0, min_lr=0.0, warmup="exp", warmup_iters=20, warmup_ratio=0.01))
  assert lr_at(exp, 5) == pytest.approx(0.01 * (1 - 5 / 100) * 0.01 ** (1 - 5 / 20), rel=1e-6)
  const = config(dict(policy="poly", power=1.0, min_lr=0.0, warmup="constant", warmup_iters=20,
                      warmup_ratio=0.25))
  assert lr_at(const, 19) == pytest.approx(0.01 * (1 - 19 / 100) * 0.25, rel=1e-6)
  assert lr_at(const, 20) == pytest.approx(0.01 * (1 - 20 / 100), rel=1e-6)


def test_step_and_cosine():
  step = config(dict(policy="step", step=[30, 60], gamma=0.1))
  assert [lr_at(step, i) for i in (29, 30, 59, 60)] == pytest.approx([0.01, 0.001, 0.001, 0.0001])
  cos = config(dict(policy="CosineAnnealing", min_lr_ratio=0.01))
  target = 0.01 * 0.01
  assert lr_at(cos, 25) == pytest.approx(target + (0.01 - target) / 2 * (math.cos(math.pi * 0.25) + 1), rel=1e-6)


PARAMS = {"backbone": {"conv": {"kernel": np.ones((3, 3, 2, 4), np.float32)},
                       "bn": {"scale": np.ones(4, np.float32), "bias": np.zeros(4, np.float32)}},
          "decode_head": {"conv_seg": {"kernel": np.ones((1, 1, 4, 3), np.float32),
                                       "bias": np.zeros(3, np.float32)}}}


def test_param_multipliers_follow_mmcv_rules():
  cfg = dict(custom_keys={"head": dict(lr_mult=10.0), "decode_head.conv_seg": dict(decay_mult=0.0)},
             norm_decay_mult=0.0, bias_decay_mult=0.5)
  lr, wd = optim.param_multipliers(PARAMS, cfg)
  assert lr["decode_head"]["conv_seg"]["kernel"] == 1.0  # the longer key wins, lr_mult defaults to 1
  assert wd["decode_head"]["conv_seg"]["kernel"] == 0.0
  assert wd["backbone"]["bn"]["scale"] == 0.0 and wd["backbone"]["bn"]["bias"] == 0.0
  assert wd["backbone"]["conv"]["kernel"] == 1.0 and lr["backbone"]["conv"]["kernel"] == 1.0


@pytest.mark.parametrize("kind", ["SGD", "AdamW"])
def test_updates_equal_torch_optim(kind):
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda a: rng.normal(size=a.shape).astype(np.float32), PARAMS)
  grads = [jax.tree.map(lambda a: rng.normal(size=a.shape).astype(np.float32), PARAMS) for _ in range(3)]
  paramwise = dict(custom_keys={"decode_head": dict(lr_mult=10.0)}, norm_decay_mult=0.0)
  if kind == "SGD":
    opt = dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=False)
  else:
    opt = dict(type="AdamW", lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01)
  c = config(dict(policy="fixed"), ml_collections.ConfigDict(dict(opt, paramwise_cfg=paramwise)))
  tx, _ = optim.build_optimizer(c, params)
  state, p = tx.init(params), params
  for g in grads:
    updates, state = tx.update(g, state, p)
    p = jax.tree.map(lambda a, u: a + u, p, updates)

  # torch: one param group per parameter with mmcv's lr/weight_decay.
  lr_mult, wd_mult = optim.param_multipliers(params, paramwise)
  flat = jax.tree_util.tree_leaves_with_path(params)
  tensors, groups = [], []
  for (path, value), lm, wm in zip(flat, jax.tree.leaves(lr_mult), jax.tree.leaves(wd_mult)):
    t = torch.tensor(np.asarray(value), requires_grad=True)
    tensors.append(t)
    groups.append(dict(params=[t], lr=opt["lr"] * lm, weight_decay=opt["weight_decay"] * wm))
  if kind == "SGD":
    torch_opt = torch.optim.SGD(groups, lr=opt["lr"], momentum=0.9)
  else:
    torch_opt = torch.optim.AdamW(groups, lr=opt["lr"], betas=(0.9, 0.999), eps=1e-8)
  for g in grads:
    for t, gv in zip(tensors, jax.tree.leaves(g)):
      t.grad = torch.tensor(np.asarray(gv))
    torch_opt.step()
  for ours, t in zip(jax.tree.leaves(p), tensors):
    np.testing.assert_allclose(np.asarray(ours), t.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_cyclic_follows_mmcv_phases():
  # 100 iterations, 2 cycles of 50: up for int(0.4 * 50) = 20 iterations to 10x, then cos down to
  # 1e-4x; gamma 0.5 halves the second cycle's excursion: its peak ratio is 1 - 0.5 + 10 * 0.5.
  c = config(dict(policy="cyclic", target_ratio=(10, 1e-4), cyclic_times=2, step_ratio_up=0.4,
                  gamma=0.5, anneal_strategy="cos"))
  cos = lambda start, end, f: end + (start - end) / 2 * (math.cos(math.pi * f) + 1)
  assert lr_at(c, 0) == pytest.approx(0.01, rel=1e-6)
  assert lr_at(c, 10) == pytest.approx(cos(0.01, 0.1, 10 / 20), rel=1e-6)
  assert lr_at(c, 20) == pytest.approx(0.1, rel=1e-6)
  assert lr_at(c, 35) == pytest.approx(cos(0.1, 1e-6, 15 / 30), rel=1e-5)
  peak2 = 0.01 * (1 - 0.5 + 10 * 0.5)
  assert lr_at(c, 60) == pytest.approx(cos(0.01, peak2, 10 / 20), rel=1e-6)
  assert lr_at(c, 70) == pytest.approx(peak2, rel=1e-6)


def test_cyclic_momentum_follows_mmcv():
  # mmcv CyclicMomentumUpdaterHook defaults: 0.95 -> 0.85 over int(0.4 * 20) = 8 iterations
  # (cos), back to 0.95 over the remaining 12. SGD's buffer: buf = m_t * buf + g; step -lr * buf.
  c = config(dict(policy="fixed"), optimizer=dict(type="SGD", lr=0.1, momentum=0.95, weight_decay=0.0,
                                                  nesterov=False), total_iters=20)
  c.momentum_config.policy = "cyclic"
  cos = lambda start, end, f: end + (start - end) / 2 * (math.cos(math.pi * f) + 1)
  expected_m = [cos(0.95, 0.85, t / 8) if t < 8 else cos(0.85, 0.95, (t - 8) / 12) for t in range(20)]
  tx, _ = optim.build_optimizer(c)
  params = {"w": jnp.zeros(())}
  state = tx.init(params)
  buf = 0.0
  for t in range(20):
    updates, state = tx.update({"w": jnp.ones(())}, state, params)
    buf = expected_m[t] * buf + 1.0
    assert float(updates["w"]) == pytest.approx(-0.1 * buf, rel=1e-5), t
  assert expected_m[8] == pytest.approx(0.85) and expected_m[0] == pytest.approx(0.95)


def _fake_params(*paths):
  from flax import traverse_util
  return traverse_util.unflatten_dict({tuple(p.split(".")): jnp.ones(shape) for p, shape in paths})


def test_layer_wise_lr_decay_assigns_mmseg_layer_ids():
  # ConvNeXt, num_layers 12 (-> 14 groups), decay 0.9: lr x 0.9 ** (13 - layer_id)
  params = _fake_params(("backbone.downsample_layers.0.0.kernel", (4, 4, 3, 8)),
                        ("backbone.stages.2.7.pointwise_conv1.kernel", (8, 8)),
                        ("backbone.stages.2.7.pointwise_conv1.bias", (8,)),
                        ("backbone.stages.3.0.gamma", (8,)),
                        ("decode_head.conv_seg.kernel", (1, 1, 8, 2)))
  lr, wd = optim.layer_decay_multipliers(params, dict(num_layers=12, decay_rate=0.9), "ConvNeXt")
  b = lr["backbone"]
  assert b["downsample_layers"]["0"]["0"]["kernel"] == pytest.approx(0.9 ** 13)  # layer 0
  assert b["stages"]["2"]["7"]["pointwise_conv1"]["kernel"] == pytest.approx(0.9 ** 8)  # 3 + 7 // 3
  assert b["stages"]["3"]["0"]["gamma"] == pytest.approx(0.9 ** 1)  # stage 3: max_layer_id 12
  assert lr["decode_head"]["conv_seg"]["kernel"] == pytest.approx(1.0)  # heads: 13
  assert wd["backbone"]["stages"]["2"]["7"]["pointwise_conv1"]["bias"] == 0.0
  assert wd["backbone"]["stages"]["3"]["0"]["gamma"] == 0.0 and wd["decode_head"]["conv_seg"]["kernel"] == 1.0
  lr, _ = optim.layer_decay_multipliers(params, dict(num_layers=12, decay_rate=0.9, decay_type="stage_wise"), "ConvNeXt")
  assert lr["backbone"]["stages"]["2"]["7"]["pointwise_conv1"]["kernel"] == pytest.approx(0.9 ** 10)  # stage id 3
  assert lr["decode_head"]["conv_seg"]["kernel"] == pytest.approx(1.0)
  vit = _fake_params(("backbone.layers.3.attn.qkv.kernel", (8, 24)), ("backbone.pos_embed", (1, 5, 8)),
                     ("backbone.patch_embed.projection.kernel", (16, 16, 3, 8)))
  lr, wd = optim.layer_decay_multipliers(vit, dict(num_layers=12, layer_decay_rate=0.65), "BEiT")
  assert lr["backbone"]["layers"]["3"]["attn"]["qkv"]["kernel"] == pytest.approx(0.65 ** 9)  # id 4
  assert lr["backbone"]["pos_embed"] == pytest.approx(0.65 ** 13) and wd["backbone"]["pos_embed"] == 1.0
  with pytest.raises(ValueError, match="ResNetV1c"):
    optim.layer_decay_multipliers(vit, dict(num_layers=12, decay_rate=0.9), "ResNetV1c")


def test_layer_decay_constructor_scales_sgd_steps():
  c = config(dict(policy="fixed"), optimizer=dict(type="SGD", lr=0.1, momentum=0.0, weight_decay=0.5,
                                                  nesterov=False, constructor="LearningRateDecayOptimizerConstructor",
                                                  paramwise_cfg=dict(num_layers=2, decay_rate=0.5)))
  c.model = dict(backbone=dict(type="BEiT"))
  params = _fake_params(("backbone.layers.0.fc.kernel", (2, 2)), ("backbone.layers.0.fc.bias", (2,)))
  tx, _ = optim.build_optimizer(c, params)
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  scale = 0.5 ** (4 - 1 - 1)  # num_layers 2 + 2 groups, layer id 1
  np.testing.assert_allclose(updates["backbone"]["layers"]["0"]["fc"]["kernel"], -0.1 * scale * (1 + 0.5))
  np.testing.assert_allclose(updates["backbone"]["layers"]["0"]["fc"]["bias"], -0.1 * scale * 1.0)


def cumulative_sgd(total_iters):
  """Plain SGD at lr 0.1 with a linear (poly, power 1) decay, one update per 2 iterations."""
  c = base_config()
  c.optimizer = dict(type="SGD", lr=0.1, momentum=0.0, weight_decay=0.0, nesterov=False)
  c.lr_config = dict(policy="poly", power=1.0, min_lr=0.0, by_epoch=False)
  c.optimizer_config.cumulative_iters = 2
  c.total_iters = total_iters
  return optim.build_optimizer(c)[0]


def test_cumulative_iters_update_once_on_the_mean_gradient():
  # mmcv's GradientCumulativeOptimizerHook(cumulative_iters=2) (BEiT-L's configs): no update after
  # the first iteration; after the second, one SGD step on the mean of both gradients at the lr of
  # iteration 1 (poly, power 1: 0.1 * (1 - 1/10)).
  tx = cumulative_sgd(total_iters=10)
  params = {"w": jnp.ones(1)}
  state = tx.init(params)
  first, state = tx.update({"w": jnp.full(1, 1.0)}, state, params)
  assert float(first["w"][0]) == 0.0
  second, state = tx.update({"w": jnp.full(1, 3.0)}, state, params)
  assert float(second["w"][0]) == pytest.approx(-0.1 * 0.9 * 2.0)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_grad_clip_norm_types_match_torch_clip_grad_norm(norm_type):
  # mmcv's OptimizerHook(grad_clip=dict(max_norm, norm_type)) is torch's clip_grad_norm_: the
  # p-norm of all gradients; above max_norm every gradient times max_norm / (norm + 1e-6).
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  grads = {"a": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=(5,)).astype(np.float32)}
  for max_norm in (0.5, 1e3):  # clipped, and untouched
    c = config(dict(policy="fixed"), optimizer=dict(type="SGD", lr=1.0, momentum=0.0, weight_decay=0.0,
                                                    nesterov=False))
    c.optimizer_config.grad_clip.max_norm = max_norm
    c.optimizer_config.grad_clip.norm_type = norm_type
    tx, _ = optim.build_optimizer(c)
    params = jax.tree.map(jnp.zeros_like, grads)
    updates, _ = tx.update(jax.tree.map(jnp.asarray, grads), tx.init(params), params)
    tensors = [torch.zeros(g.shape, requires_grad=True) for g in grads.values()]
    for t, g in zip(tensors, grads.values()):
      t.grad = torch.from_numpy(g.copy())
    torch.nn.utils.clip_grad_norm_(tensors, max_norm, norm_type=norm_type)
    for t, key in zip(tensors, grads):
      np.testing.assert_allclose(-np.asarray(updates[key]), t.grad.numpy(), rtol=1e-6)


def test_mmseg_optimizer_config_forms_translate():
  # optimizer_config as mmseg/mmcv configs write it: grad_clip with any norm_type ('inf' too),
  # GradientCumulativeOptimizerHook with cumulative_iters.
  from segjax.convert.mmseg_config import to_segjax_config
  base = dict(model=dict(type="EncoderDecoder"), runner=dict(type="IterBasedRunner", max_iters=10))
  c = to_segjax_config(dict(base, optimizer_config=dict(grad_clip=dict(max_norm=35, norm_type="inf"))))
  assert c.optimizer_config.grad_clip.max_norm == 35.0 and c.optimizer_config.grad_clip.norm_type == math.inf
  c = to_segjax_config(dict(base, optimizer_config=dict(type="GradientCumulativeOptimizerHook",
                                                        cumulative_iters=4)))
  assert c.optimizer_config.cumulative_iters == 4 and c.optimizer_config.grad_clip.norm_type == 2.0
  with pytest.raises(ValueError, match="grad_clip has keys \\['max_nrom'\\]"):
    to_segjax_config(dict(base, optimizer_config=dict(grad_clip=dict(max_nrom=1))))
  with pytest.raises(ValueError, match="optimizer_config.type='EMAHook'"):
    to_segjax_config(dict(base, optimizer_config=dict(type="EMAHook")))


def test_cumulative_iters_last_partial_group_updates_at_the_last_iteration():
  # mmcv's GradientCumulativeOptimizerHook with max_iters 5, cumulative_iters 2: updates after
  # iterations 1 and 3 (means of two gradients), and after iteration 4, the last, on its own
  # gradient (the remainder's loss factor is 1), at the lr of iteration 4.
  tx = cumulative_sgd(total_iters=5)
  params = {"w": jnp.ones(1)}
  state = tx.init(params)
  steps = []
  for g in (1.0, 3.0, 5.0, 7.0, 4.0):
    update, state = tx.update({"w": jnp.full(1, g)}, state, params)
    steps.append(float(update["w"][0]))
  lr = lambda it: 0.1 * (1 - it / 5)
  np.testing.assert_allclose(steps, [0.0, -lr(1) * 2.0, 0.0, -lr(3) * 6.0, -lr(4) * 4.0], rtol=1e-6)
