"""Parameters mmseg trains with ``requires_grad=False`` (a backbone's ``frozen_stages``, a
norm_cfg's ``requires_grad=False``) are left exactly as they are by a train step: PyTorch gives
them no gradient, so SGD/AdamW skip them (no weight decay, no momentum) and mmcv's gradient
clipping leaves them out of its norm.

The expected frozen names are written out from mmseg's / mmcls's ``_freeze_stages`` and mmcv's
``build_norm_layer`` for each tiny config, as their state_dict names."""
import functools

import jax
import numpy as np
import pytest
from flax import traverse_util

from segjax.config import base_config, to_plain
from segjax.models import build_segmentor, init_compiler_options, init_variables
from segjax import sharding
from segjax.train import checkpoint, loop, optim

BN = dict(type="BN", requires_grad=True)
ADAMW = dict(type="AdamW", lr=0.001, betas=(0.9, 0.999), weight_decay=0.01)


def fcn_head(in_channels, in_index, norm_cfg=BN, **kw):
  return dict(dict(type="FCNHead", in_channels=in_channels, in_index=in_index, channels=8, num_convs=1,
                   concat_input=False, num_classes=3, norm_cfg=norm_cfg, align_corners=False,
                   loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)), **kw)


def resnet(**kw):
  return dict(dict(type="ResNetV1c", depth=18, stem_channels=8, base_channels=8, norm_cfg=BN), **kw)


def poolformer(**kw):
  return dict(dict(type="mmcls.PoolFormer", arch=dict(layers=(1, 1, 2, 1), embed_dims=(8, 16, 24, 32))), **kw)


def segmentor_config(backbone, decode_head, optimizer=None, total_iters=100):
  c = base_config()
  c.model = dict(type="EncoderDecoder", backbone=backbone, decode_head=decode_head,
                 train_cfg=dict(), test_cfg=dict(mode="whole"))
  if optimizer is not None:
    c.optimizer = optimizer
  c.total_iters = total_iters
  return c


def param_shapes(c):
  model = build_segmentor(to_plain(c.model))
  return model, jax.eval_shape(lambda r: init_variables(model, r)["params"], jax.random.PRNGKey(0))


def masked_names(c) -> set:
  """mmseg names of the parameters the optimizer leaves alone."""
  _, shapes = param_shapes(c)
  mask = optim.frozen_mask(shapes, optim.frozen_names(c.model))
  return {optim.torch_name(path) for path, frozen in traverse_util.flatten_dict(mask).items() if frozen}


def train_two_steps(c, initial=None, workdir=None):
  """(initial state, state after two jitted train steps) as the trainer builds them; ``initial``:
  a state of the same model (whatever its optimizer) to start from instead of a new one."""
  model, shapes = param_shapes(c)
  tx, schedule = optim.build_optimizer(c, shapes)
  if initial is None:
    state = loop.create_train_state(model, tx, jax.random.PRNGKey(0))
  else:
    state = initial.replace(opt_state=tx.init(initial.params))
  # Compiled without optimisations: a few seconds instead of ten.
  step = jax.jit(functools.partial(loop.train_step, model=model, tx=tx, schedule=schedule),
                 compiler_options=init_compiler_options())
  rng = np.random.default_rng(0)
  batch = {"img": rng.standard_normal((2, 32, 32, 3)).astype(np.float32),
           "gt_semantic_seg": rng.integers(0, 3, (2, 32, 32)).astype(np.int32)}
  new = state
  for _ in range(2):
    new, _ = step(new, batch)
  if workdir is not None:  # the optimizer state of the frozen/trained partition saves and restores
    manager = checkpoint.make_manager(workdir, None)
    checkpoint.save(manager, 2, new)
    manager.wait_until_finished()
    abstract, _ = loop.state_shardings(model, tx, jax.random.PRNGKey(0), sharding.make_mesh())
    restored, _ = checkpoint.restore_latest(manager, abstract)
    assert jax.tree.structure(restored) == jax.tree.structure(new)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(new)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  return state, new


def assert_only_frozen_unchanged(before, after, frozen: set):
  """Frozen leaves bitwise equal, every other leaf changed."""
  before = {optim.torch_name(p): np.asarray(v) for p, v in traverse_util.flatten_dict(before.params).items()}
  after = {optim.torch_name(p): np.asarray(v) for p, v in traverse_util.flatten_dict(after.params).items()}
  assert frozen <= before.keys()
  unchanged = {name for name in before if np.array_equal(before[name], after[name])}
  assert unchanged == frozen


# ResNetV1c depth 18 (deep stem, BasicBlocks, stem 8 = base 8: layer1 has no downsample), frozen_stages=1:
# mmseg's ResNet._freeze_stages freezes `stem` (convs 0, 3, 6 without bias; BNs 1, 4, 7) and `layer1`.
RESNET_FROZEN_1 = ({f"backbone.stem.{i}.weight" for i in (0, 3, 6)}
                   | {f"backbone.stem.{i}.{p}" for i in (1, 4, 7) for p in ("weight", "bias")}
                   | {f"backbone.layer1.{b}.{m}" for b in (0, 1)
                      for m in ("conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight", "bn2.weight", "bn2.bias")})


def test_resnet_frozen_stages_and_frozen_norms_sgd_and_adamw():
  # Two stages keep the compiled step small; the stem and layer1 are frozen as in RESNET_FROZEN_1.
  two_stages = resnet(frozen_stages=1, num_stages=2, out_indices=(0, 1))
  sgd = segmentor_config(two_stages, fcn_head(16, 1))
  sgd.optimizer_config.grad_clip = dict(max_norm=1.0, norm_type=2)
  before, after = train_two_steps(sgd)  # SGD, momentum 0.9, weight decay 5e-4, clipped
  assert_only_frozen_unchanged(before, after, RESNET_FROZEN_1)
  # A frozen stage's BatchNorm is in eval mode (mmseg's m.eval()): its statistics stay too.
  stats = lambda s: traverse_util.flatten_dict(s.batch_stats["backbone"])
  for path, value in stats(before).items():
    assert np.array_equal(value, stats(after)[path]) == (path[0] in ("stem", "layer1")), path

  # mmcv's build_norm_layer(dict(type='BN', requires_grad=False)) freezes each norm it builds:
  # here the FCNHead's convs.0.bn (ConvModule names its norm `bn`). AdamW with paramwise_cfg
  # multipliers; the model's shapes and initial values are the SGD run's.
  adamw = segmentor_config(two_stages, fcn_head(16, 1, norm_cfg=dict(type="BN", requires_grad=False)), dict(
      ADAMW, paramwise_cfg=dict(custom_keys={"head": dict(lr_mult=10.0)}, norm_decay_mult=0.0)))
  frozen = RESNET_FROZEN_1 | {"decode_head.convs.0.bn.weight", "decode_head.convs.0.bn.bias"}
  assert masked_names(adamw) == frozen
  assert_only_frozen_unchanged(*train_two_steps(adamw, initial=before), frozen)


def test_poolformer_frozen_stages_0_adamw_accumulated(tmp_path):
  # mmcls's PoolFormer._freeze_stages with frozen_stages=0 (its default, mmseg's configs): the
  # input patch embedding alone.
  # Two stages (network positions 0-2) keep the compiled step small.
  c = segmentor_config(poolformer(arch=dict(layers=(1, 1), embed_dims=(8, 16)), out_indices=(2,), frozen_stages=0),
                       fcn_head(16, 0), ADAMW, total_iters=2)
  c.optimizer_config.cumulative_iters = 2
  frozen = {"backbone.patch_embed.proj.weight", "backbone.patch_embed.proj.bias"}
  assert masked_names(c) == frozen
  assert_only_frozen_unchanged(*train_two_steps(c, workdir=str(tmp_path)), frozen)


def test_frozen_names_follow_mmseg_freeze_stages():
  c = segmentor_config(resnet(frozen_stages=1), fcn_head(64, 3))
  assert masked_names(c) == RESNET_FROZEN_1
  # PoolFormer frozen_stages=2, outputs 0/2/4/6: patch_embed, network.0 (the first stage's
  # block) with norm0, network.1 (the downsampling embedding; no output norm).
  block = {f"backbone.network.0.0.{m}" for m in ("layer_scale_1", "layer_scale_2", "norm1.weight", "norm1.bias",
                                                  "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
                                                  "mlp.fc2.weight", "mlp.fc2.bias")}
  c = segmentor_config(poolformer(out_indices=(0, 2, 4, 6), frozen_stages=2), fcn_head(32, 3))
  assert masked_names(c) == ({"backbone.patch_embed.proj.weight", "backbone.patch_embed.proj.bias",
                              "backbone.network.1.proj.weight", "backbone.network.1.proj.bias",
                              "backbone.norm0.weight", "backbone.norm0.bias"} | block)
  # ResNet (V1b stem) frozen_stages=0: conv1 and its norm bn1 (mmseg's norm1_name).
  c = segmentor_config(resnet(type="ResNet", frozen_stages=0), fcn_head(64, 3))
  assert masked_names(c) == {"backbone.conv1.weight", "backbone.bn1.weight", "backbone.bn1.bias"}
  # norm_eval keeps BatchNorm statistics, not the parameters: nothing is frozen.
  assert optim.frozen_names(segmentor_config(resnet(norm_eval=True), fcn_head(64, 3)).model) == ()


def test_norm_cfg_requires_grad_false_names():
  # Every norm built from the frozen norm_cfg: FCNHead's convs.0.bn and conv_cat.bn, and the
  # backbone's when its own norm_cfg is (all of ResNet-18's BNs: the stem's, each block's, the
  # downsamples').
  frozen_bn = dict(type="BN", requires_grad=False)
  c = segmentor_config(resnet(), fcn_head(64, 3, norm_cfg=frozen_bn, concat_input=True))
  assert masked_names(c) == {f"decode_head.{m}.bn.{p}" for m in ("convs.0", "conv_cat") for p in ("weight", "bias")}
  c = segmentor_config(resnet(type="ResNet", norm_cfg=frozen_bn), fcn_head(64, 3))
  norms = ["bn1", *(f"layer{i}.{b}.bn{k}" for i in range(1, 5) for b in (0, 1) for k in (1, 2)),
           *(f"layer{i}.0.downsample.1" for i in range(2, 5))]
  assert masked_names(c) == {f"backbone.{n}.{p}" for n in norms for p in ("weight", "bias")}
  # A module that builds its LayerNorms from eps alone refuses it instead of ignoring it.
  with pytest.raises(ValueError, match="requires_grad=False is not supported"):
    masked_names(segmentor_config(dict(type="MixVisionTransformer", embed_dims=8, num_heads=(1, 1, 1, 1),
                                       num_layers=(1, 1, 1, 1), norm_cfg=dict(type="LN", requires_grad=False)),
                                  fcn_head(64, 3)))


def test_clipping_norm_leaves_frozen_parameters_out():
  # mmcv's clip_grads takes only parameters with requires_grad: with every gradient 1, the total
  # 2-norm is sqrt(number of trained elements), and SGD's first step is
  # -lr * (g * max_norm / (norm + 1e-6) + weight_decay * p) on them, 0 on the frozen ones.
  c = segmentor_config(resnet(frozen_stages=1, num_stages=2, out_indices=(0, 1)), fcn_head(16, 1),
                       dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=False))
  c.lr_config = dict(policy="fixed")
  c.optimizer_config.grad_clip = dict(max_norm=1.0, norm_type=2)
  _, shapes = param_shapes(c)
  params = jax.tree.map(lambda s: np.full(s.shape, 0.5, np.float32), shapes)
  tx, _ = optim.build_optimizer(c, shapes)
  updates, _ = jax.jit(tx.update)(jax.tree.map(np.ones_like, params), tx.init(params), params)
  flat = {optim.torch_name(p): np.asarray(u) for p, u in traverse_util.flatten_dict(updates).items()}
  trained = sum(u.size for name, u in flat.items() if name not in RESNET_FROZEN_1)
  factor = 1.0 / (np.sqrt(trained) + 1e-6)
  for name, update in flat.items():
    want = 0.0 if name in RESNET_FROZEN_1 else -0.01 * (factor + 5e-4 * 0.5)
    np.testing.assert_allclose(update, want, rtol=1e-5, err_msg=name)


def test_mobilenet_v2_frozen_conv1_keeps_updating_its_statistics():
  # mmseg's MobileNetV2._freeze_stages: conv1's parameters, then layer1 .. layer{frozen_stages}
  # (put in eval mode); conv1 itself is not put in eval mode, so its BN statistics still update.
  c = segmentor_config(dict(type="MobileNetV2", widen_factor=0.25, out_indices=(6,), frozen_stages=1),
                       fcn_head(80, 0))
  frozen = masked_names(c)
  assert {n for n in frozen if not n.startswith("backbone.layer1.")} == {
      "backbone.conv1.conv.weight", "backbone.conv1.bn.weight", "backbone.conv1.bn.bias"}
  # layer1: one InvertedResidual of expand ratio 1: the depthwise conv.0 and the projection conv.1.
  assert {n for n in frozen if n.startswith("backbone.layer1.")} == {
      f"backbone.layer1.0.conv.{i}.{p}" for i, ps in ((0, ("conv.weight", "bn.weight", "bn.bias")),
                                                     (1, ("conv.weight", "bn.weight", "bn.bias"))) for p in ps}
  from segjax.models.backbones.mobilenet_v2 import MobileNetV2
  backbone = MobileNetV2(widen_factor=0.25, out_indices=(6,), frozen_stages=1)
  x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
  # Any values do (statistics zero, parameters random): no initialisation to compile.
  rng = np.random.default_rng(1)
  shapes = jax.eval_shape(backbone.init, jax.random.PRNGKey(0), x)
  variables = {"params": jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes["params"]),
               "batch_stats": jax.tree.map(lambda s: np.ones(s.shape, np.float32), shapes["batch_stats"])}
  _, new = jax.jit(lambda v: backbone.apply(v, x, train=True, mutable=["batch_stats"]),
                   compiler_options=init_compiler_options())(variables)
  first_bn = {"conv1": ("conv1", "bn"), "layer1": ("layer1", "0", "conv", "0", "bn"),
              "layer2": ("layer2", "0", "conv", "0", "bn")}
  mean = lambda tree, path: traverse_util.flatten_dict(tree["batch_stats"])[(*path, "mean")]
  changed = {k: not np.array_equal(mean(variables, p), mean(new, p)) for k, p in first_bn.items()}
  assert changed == {"conv1": True, "layer1": False, "layer2": True}
