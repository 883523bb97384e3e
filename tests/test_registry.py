"""Driven by the registries (segjax.models BACKBONES, NECKS, HEADS, SEGMENTORS), as timm's
model tests: every registered class builds from its ``TINY`` config, runs forward, and gives a
gradient to every parameter; every head's training losses carry mmseg's names. A new family is
tested here the day its registry line lands."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import fast_jit
from segjax import losses
from segjax.models import BACKBONES, HEADS, NECKS, build_module
from segjax.models.heads.decode_head import BaseCascadeDecodeHead, BaseDecodeHead
from segjax.models.segmentors.cascade_encoder_decoder import CascadeEncoderDecoder
from segjax.models.segmentors.encoder_decoder import EncoderDecoder

# (channels, stride) of the features heads and necks are tested on, for a 64 x 64 image.
PYRAMID = ((8, 4), (16, 8), (32, 16), (64, 32))
IMAGE = 64


def pyramid(cls=None, seed=0, batch=2):
  """Features for ``cls``: PYRAMID, or the levels the class declares (``TINY_PYRAMID``: (channels,
  stride) per level), each a (map, cls token) pair when it declares ``TINY_CLS_TOKEN``."""
  rng = np.random.default_rng(seed)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  feats = [normal(batch, IMAGE // s, IMAGE // s, c) for c, s in getattr(cls, "TINY_PYRAMID", PYRAMID)]
  if getattr(cls, "TINY_CLS_TOKEN", False):
    feats = [(f, normal(batch, f.shape[-1])) for f in feats]
  return feats


def without_gradient(grads):
  return [jax.tree_util.keystr(p) for p, g in jax.tree_util.tree_leaves_with_path(grads)
          if not np.any(np.asarray(g))]


def build(table, name, kind):
  cls = table[name]
  if not cls.TINY:
    pytest.fail(f"{cls.__name__} has no TINY config (see BaseDecodeHead's docstring)")
  return build_module(dict(cls.TINY, type=name), kind)(name=None)


def away_from_zero_gates(params):
  """Parameters mmseg initialises to zero that gate a branch (mmcv's ``Scale(0)`` of DANet and
  CCNet, zero-initialised last convs) stop every gradient behind them at initialisation; the
  gradient check runs where each all-zero parameter is set to small random values instead."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
  leaves = [0.1 * jax.random.normal(k, p.shape, p.dtype) if not np.any(np.asarray(p)) else p
            for k, p in zip(keys, leaves)]
  return jax.tree.unflatten(tree, leaves)


def squares(tree):
  return sum((a.astype(jnp.float32) ** 2).mean() for a in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_forward_and_gradients(name):
  module = build(BACKBONES, name, "backbone")
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, IMAGE, IMAGE, 3)), jnp.float32)
  variables = fast_jit(module.init)(jax.random.PRNGKey(0), x)
  feats = fast_jit(module.apply)(variables, x)
  assert len(feats) >= 1 and all(f.ndim == 4 and f.shape[0] == 2 for f in feats)

  def loss(params, train):
    out, _ = module.apply({**variables, "params": params}, x, train, mutable=["batch_stats"],
                          rngs={"dropout": jax.random.PRNGKey(1)})
    return squares(out)

  # In training mode a norm's bias can be cancelled by the next BatchNorm's mean (BiSeNetV2's
  # pooled CE block: exactly zero gradient, in mmseg too); every parameter must get a gradient in
  # training or in eval mode.
  grads = [fast_jit(jax.grad(loss), static_argnums=1)(variables["params"], train) for train in (True, False)]
  assert not set(without_gradient(grads[0])) & set(without_gradient(grads[1]))


@pytest.mark.parametrize("name", sorted(NECKS))
def test_neck_forward_and_gradients(name):
  module = build(NECKS, name, "neck")
  feats = pyramid(NECKS[name])
  variables = fast_jit(module.init)(jax.random.PRNGKey(0), feats)
  assert all(f.shape[0] == 2 for f in fast_jit(module.apply)(variables, feats))

  def loss(params):
    out, _ = module.apply({**variables, "params": params}, feats, True, mutable=["batch_stats"])
    return squares(out)

  assert not without_gradient(fast_jit(jax.grad(loss))(variables["params"]))


@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_contract_and_gradients(name):
  """forward_test gives (N, h, w, num_classes) logits; forward_train gives mmseg's loss names
  (every ``loss_decode`` term's name and ``acc_seg``) and a gradient to every parameter."""
  head = build(HEADS, name, "decode_head")
  feats = pyramid(HEADS[name])
  cascade = isinstance(head, BaseCascadeDecodeHead)
  prev = (jnp.asarray(np.random.default_rng(1).normal(size=(2, 16, 16, head.num_classes)), jnp.float32)
          if cascade else None)
  labels = jnp.asarray(np.random.default_rng(2).integers(0, head.num_classes, (2, IMAGE, IMAGE)))
  labels = labels.at[:, :4].set(255)
  variables = fast_jit(lambda key: head.init(key, feats, None, prev, method="forward_test"))(
      jax.random.PRNGKey(0))
  logits = fast_jit(lambda v: head.apply(v, feats, prev_output=prev, method="forward_test"))(variables)
  assert logits.ndim == 4 and logits.shape[0] == 2 and logits.shape[-1] == head.num_outputs

  def loss(params):
    out, _ = head.apply({**variables, "params": params}, feats, labels, None, prev,
                        method="forward_train", mutable=["batch_stats"],
                        rngs={"dropout": jax.random.PRNGKey(1)})
    return losses.parse_losses(out)[0], out

  grads, out = fast_jit(jax.grad(loss, has_aux=True))(away_from_zero_gates(variables["params"]))
  # Several outputs prefix their terms (DAHead: pam_cam.acc_seg, pam.loss_ce, ...); K-Net suffixes
  # its stages (acc_seg.s0, ...).
  assert any({"acc_seg", "acc_point"} & set(k.split(".")) for k in out) and any("loss" in k for k in out)
  assert all(np.isfinite(float(v)) for v in out.values())
  # FROZEN: module paths mmseg builds with requires_grad=False (EMAHead's ema_mid_conv).
  frozen = tuple(f"['{path}']" for path in getattr(type(head), "FROZEN", ()))
  assert not [p for p in without_gradient(grads) if not p.startswith(frozen)]


# A cascade stage for testing CascadeEncoderDecoder's wiring before the real ones (OCRHead,
# PointHead) land: its logits are a 1x1 conv of the previous stage's plus one of the features.
class _AddPrevHead(BaseCascadeDecodeHead):
  @nn.compact
  def __call__(self, inputs, prev_output, train: bool = False):
    x = self.transform_inputs(inputs)
    prev = nn.Conv(self.num_classes, (1, 1), name="prev_proj")(prev_output)
    return self.cls_seg(x, train) + jax.image.resize(prev, x.shape[:3] + prev.shape[-1:], "nearest")


def test_cascade_feeds_each_stage_the_previous_stage_and_prefixes_losses():
  tables = {"backbone": BACKBONES, "decode_head": {**HEADS, "_AddPrevHead": _AddPrevHead}}

  def builder(cfg, kind):
    cls = tables[kind.split("[")[0]][cfg["type"]]
    return lambda name: cls(name=name, **{k: v for k, v in cfg.items() if k != "type"})

  stage0 = dict(HEADS["FCNHead"].TINY, type="FCNHead")
  stage1 = dict(type="_AddPrevHead", in_channels=32, in_index=2, channels=8, num_classes=3)
  model = CascadeEncoderDecoder(num_stages=2, backbone=dict(BACKBONES["ResNetV1c"].TINY, type="ResNetV1c"),
                                decode_head=(stage0, stage1), build=builder)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, IMAGE, IMAGE, 3)), jnp.float32)
  labels = jnp.asarray(np.random.default_rng(1).integers(0, 3, (2, IMAGE, IMAGE)))
  variables = model.init(jax.random.PRNGKey(0), x)
  assert sorted(variables["params"]["decode_head"]) == ["0", "1"]  # mmseg's decode_head.0 / .1
  out = model.apply(variables, x)
  assert len(out["stages"]) == 2 and out["decode"] is not None
  # The last stage is the prediction; it really depends on the first stage's output.
  np.testing.assert_allclose(model.apply(variables, x, mode="encode_decode"),
                             jax.image.resize(out["decode"], (2, IMAGE, IMAGE, 3), "bilinear"),
                             rtol=1e-5, atol=1e-5)
  zero_stage0 = jax.tree.map(jnp.zeros_like, variables["params"]["decode_head"]["0"])
  changed = model.apply({**variables, "params": {**variables["params"], "decode_head": {
      **variables["params"]["decode_head"], "0": zero_stage0}}}, x)
  assert not np.allclose(changed["decode"], out["decode"])
  loss_dict, _ = model.apply(variables, x, labels, train=True, mode="loss", mutable=["batch_stats"])
  assert sorted(loss_dict) == ["decode_0.acc_seg", "decode_0.loss_ce", "decode_1.acc_seg",
                               "decode_1.loss_ce"]


def test_every_registered_head_is_a_decode_head():
  assert all(issubclass(cls, BaseDecodeHead) for cls in HEADS.values())
  assert issubclass(CascadeEncoderDecoder, EncoderDecoder)


def test_prediction_settings_come_from_the_head_that_predicts():
  # The segmentor reads num_classes / align_corners through the head's class: a cascade's last
  # stage; K-Net's kernel generate head (IterativeDecodeHead has no num_classes of its own).
  from segjax.models.segmentors.encoder_decoder import final_decode_head
  generator = dict(HEADS["UPerHead"].TINY, type="UPerHead", num_classes=7, align_corners=True)
  knet = dict(type="IterativeDecodeHead", num_stages=1, kernel_generate_head=generator,
              kernel_update_head=())
  assert final_decode_head({"decode_head": knet})["num_classes"] == 7
  assert final_decode_head({"decode_head": knet})["align_corners"] is True
  cascade = (dict(type="FCNHead", num_classes=5), dict(type="OCRHead", num_classes=6))
  assert final_decode_head({"decode_head": cascade})["num_classes"] == 6
