"""Every head and backbone builds, gives the right shapes, and every parameter gets a gradient."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import fast_jit
from segjax.models import build_segmentor, init_variables
from configs.common import BN


def backbone(type="ResNetV1c", depth=18, base=8):
  return dict(type=type, depth=depth, stem_channels=base, base_channels=base,
              dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), contract_dilation=True, norm_cfg=BN)


def _head(type, in_ch=64, **kw):
  return dict(type=type, in_channels=in_ch, in_index=3, channels=16, num_classes=5, norm_cfg=BN,
              dropout_ratio=0.1, **kw)


HEADS = {
    "FCNHead": _head("FCNHead", num_convs=2, concat_input=True, dilation=2),
    "PSPHead": _head("PSPHead", pool_scales=(1, 2, 3, 6)),
    "ASPPHead": _head("ASPPHead", dilations=(1, 2, 3)),
    "DepthwiseSeparableASPPHead": _head("DepthwiseSeparableASPPHead", dilations=(1, 2, 3),
                                        c1_in_channels=8, c1_channels=4),
    "DepthwiseSeparableFCNHead": _head("DepthwiseSeparableFCNHead", num_convs=2, concat_input=True),
    "UPerHead": dict(_head("UPerHead", in_ch=(8, 16, 32, 64)), in_index=(0, 1, 2, 3)),
    "FCNHead_resize_concat": dict(_head("FCNHead", in_ch=(32, 64), num_convs=1, concat_input=False),
                                  in_index=(2, 3), input_transform="resize_concat"),
}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_forward_and_gradients(name):
  aux = dict(type="FCNHead", in_channels=32, in_index=2, channels=8, num_convs=1,
             concat_input=False, num_classes=5, norm_cfg=BN)
  model = build_segmentor(dict(type="EncoderDecoder", backbone=backbone(), decode_head=HEADS[name],
                               auxiliary_head=[aux, aux]))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 40, 56, 3)), jnp.float32)
  variables = fast_jit(model.init)(jax.random.PRNGKey(0), x)
  out = fast_jit(model.apply)(variables, x)
  # Output stride 8, or 4 for heads that fuse the stride-4 features; 5 classes.
  stride = 4 if name in ("DepthwiseSeparableASPPHead", "UPerHead") else 8
  assert out["decode"].shape == (2, 40 // stride, 56 // stride, 5)
  assert [a.shape for a in out["aux"]] == [(2, 5, 7, 5)] * 2

  def loss(params):
    o, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, train=True,
                       mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(1)})
    return (o["decode"] ** 2).mean() + sum((a ** 2).mean() for a in o["aux"])

  grads = fast_jit(jax.grad(loss))(variables["params"])
  dead = [jax.tree_util.keystr(p) for p, g in jax.tree_util.tree_leaves_with_path(grads)
          if not np.any(np.asarray(g))]
  assert not dead, f"parameters without gradient: {dead}"


@pytest.mark.parametrize("type,depth", [("ResNet", 18), ("ResNetV1c", 50), ("ResNetV1d", 50),
                                        ("ResNeXt", 50)])
def test_backbone_variants_shapes(type, depth):
  cfg = dict(backbone(type, depth, base=16 if type != "ResNeXt" else 64), dilations=(1, 1, 1, 1),
             strides=(1, 2, 2, 2))
  if type == "ResNeXt":
    cfg.update(groups=4, base_width=4, stem_channels=16)
  exp = 4 if depth >= 50 else 1
  base = cfg["base_channels"]
  head = dict(type="FCNHead", in_channels=base * 8 * exp, in_index=3, channels=8, num_convs=1,
              concat_input=False, num_classes=3, norm_cfg=BN)
  model = build_segmentor(dict(type="EncoderDecoder", backbone=cfg, decode_head=head))
  x = jnp.zeros((1, 64, 64, 3))
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
  out = jax.eval_shape(lambda v: model.apply(v, x), shapes)
  assert out["decode"].shape == (1, 2, 2, 3)  # output stride 32


def test_unknown_model_key_is_named():
  with pytest.raises(ValueError, match="pool_scale"):
    build_segmentor(dict(type="EncoderDecoder", backbone=backbone(),
                         decode_head=dict(_head("PSPHead"), pool_scale=(1, 2))))


def test_wrong_in_channels_is_named():
  model = build_segmentor(dict(type="EncoderDecoder", backbone=backbone(),
                               decode_head=_head("PSPHead", in_ch=99)))
  with pytest.raises(ValueError, match="in_channels=99"):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))


def test_frozen_stages_and_norm_eval():
  cfg = dict(backbone(), frozen_stages=1, norm_eval=False)
  head = dict(type="FCNHead", in_channels=64, in_index=3, channels=8, num_convs=1,
              concat_input=False, num_classes=3, norm_cfg=BN)
  model = build_segmentor(dict(type="EncoderDecoder", backbone=cfg, decode_head=head))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
  v = fast_jit(model.init)(jax.random.PRNGKey(0), x)

  def loss(params):
    o, new = model.apply({"params": params, "batch_stats": v["batch_stats"]}, x, train=True,
                         mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(1)})
    return (o["decode"] ** 2).mean(), new

  grads, new_stats = fast_jit(jax.grad(loss, has_aux=True))(v["params"])
  bb = grads["backbone"]
  frozen = [bb["stem"], bb["layer1"]]
  assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(frozen))  # stem + stage 1 frozen
  assert any(np.any(np.asarray(g)) for g in jax.tree.leaves(bb["layer2"]))
  stats = new_stats["batch_stats"]["backbone"]
  # Frozen stages keep their running statistics; trainable ones update them.
  np.testing.assert_array_equal(stats["layer1"]["0"]["bn1"]["mean"], v["batch_stats"]["backbone"]["layer1"]["0"]["bn1"]["mean"])
  assert np.any(np.asarray(stats["layer2"]["0"]["bn1"]["mean"]) != np.asarray(v["batch_stats"]["backbone"]["layer2"]["0"]["bn1"]["mean"]))

  model_eval = build_segmentor(dict(type="EncoderDecoder", backbone=dict(backbone(), norm_eval=True),
                                    decode_head=head))
  _, new = fast_jit(lambda v: model_eval.apply(v, x, train=True, mutable=["batch_stats"],
                                               rngs={"dropout": jax.random.PRNGKey(1)}))(v)
  for a, b in zip(jax.tree.leaves(new["batch_stats"]["backbone"]), jax.tree.leaves(v["batch_stats"]["backbone"])):
    np.testing.assert_array_equal(a, b)  # norm_eval: backbone BN statistics never change


def test_with_cp_gives_the_same_gradients():
  def model(with_cp, **cp):
    return build_segmentor(dict(
        type="EncoderDecoder",
        backbone=dict(type="ResNetV1d", depth=50, stem_channels=8, base_channels=8, with_cp=with_cp,
                      norm_cfg=BN, **cp),
        decode_head=dict(type="FCNHead", in_channels=256, in_index=3, channels=8, num_convs=1,
                         concat_input=False, num_classes=3, norm_cfg=BN, dropout_ratio=0.0)))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 64, 64, 3)), jnp.float32)
  plain, remat = model(False), model(True)
  per_stage = model((False, True, False, True), cp_policy="dots_saveable")
  v = fast_jit(plain.init)(jax.random.PRNGKey(0), x)

  # Op by op, not compiled: compiled, the recomputation rounds otherwise, and the gradients must
  # agree to float32 rounding of each operation.
  def grads(m):
    return jax.grad(lambda p: (m.apply({"params": p, "batch_stats": v["batch_stats"]}, x, train=True,
                                       mutable=["batch_stats"])[0]["decode"] ** 2).mean())(v["params"])

  reference = jax.tree.leaves(grads(plain))
  for other in (remat, per_stage):
    for a, b in zip(reference, jax.tree.leaves(grads(other))):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
  # the remat really is there: the per-stage model's gradient jaxpr holds checkpoint calls
  jaxpr = str(jax.make_jaxpr(lambda p: jax.grad(lambda q: per_stage.apply(
      {"params": q, "batch_stats": v["batch_stats"]}, x)["decode"].sum())(p))(v["params"]))
  assert jaxpr.count("checkpoint") + jaxpr.count("remat") >= 2
  # ResNetV1d: layer1's shortcut is AvgPool(1) (no params), conv (``1``), norm (``2``).
  assert sorted(v["params"]["backbone"]["layer1"]["0"]["downsample"]) == ["1", "2"]


def test_slide_inference_memory_does_not_grow_with_the_number_of_crops():
  """XLA's own buffer plan for slide inference: going from 4 crops to 48, its scratch memory
  grows by at most one image-sized logit buffer ((classes + 1) floats per pixel), never by
  per-crop activations, because one compiled crop runs inside a loop. (Unrolling the crops
  instead grows it by 5.1 MB here, twice this bound.)"""
  from segjax.models.segmentors.inference import slide_inference
  model = build_segmentor(dict(type="EncoderDecoder", backbone=backbone(base=16),
                               decode_head=dict(HEADS["PSPHead"], in_channels=128)))
  crop, stride = (64, 64), (48, 48)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *crop, 3)))

  def temp_bytes(h, w):
    img = jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)
    fn = jax.jit(lambda v, x: slide_inference(model, v, x, crop, stride))
    return fn.lower(variables, img).compile().memory_analysis().temp_size_in_bytes

  small, large = (112, 112), (304, 400)  # 2 x 2 and 6 x 8 crops
  bound = (large[0] * large[1] - small[0] * small[1]) * (5 + 1) * 4
  growth = temp_bytes(*large) - temp_bytes(*small)
  assert growth <= bound, (growth, bound)


def test_init_variables_equals_flax_init_at_top_level_and_inside_jit():
  """The unoptimised one-program init draws the same values as flax's op-by-op ``init`` (up to
  the normal sampler's rounding), and is traced into a caller's jit (compiler options there are
  only allowed on the outer jit)."""
  import flax.linen as nn

  class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Conv(4, (3, 3))(x) + self.param("offset", nn.initializers.normal(), (4,))

  key = jax.random.PRNGKey(3)
  expected = Tiny().init(key, jnp.zeros((1, 64, 64, 3)))
  for got in (init_variables(Tiny(), key), jax.jit(lambda k: init_variables(Tiny(), k))(key)):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6),
                 got, expected)
  assert jax.tree.map(jnp.shape, jax.eval_shape(lambda k: init_variables(Tiny(), k), key)) == \
      jax.tree.map(jnp.shape, expected)


def test_depthwise_training_holds_one_padded_buffer_not_two():
  """A dilated depthwise ConvModule (BN, ReLU) under differentiation: XLA's scratch memory holds
  the backward's padded output gradient and a few input-sized buffers, not also a padded copy of
  the input kept from the forward for BatchNorm's backward (which recomputed the tap sum from it;
  1.8 MiB against this bound of 1.3 MiB)."""
  from segjax import layers
  module = layers.conv_module(64, 3, 1, 12, 12, 64, BN, layers.RELU)
  x = jnp.zeros((2, 16, 16, 64))
  v = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x))

  def loss(params, stats, x):
    y, _ = module.apply({"params": params, "batch_stats": stats}, x, True, mutable=["batch_stats"])
    return jnp.sum(y * y)

  grad = jax.jit(jax.grad(loss, argnums=(0, 2)))
  temp = grad.lower(v["params"], v["batch_stats"], x).compile().memory_analysis().temp_size_in_bytes
  padded_bytes, x_bytes = 2 * (16 + 24) ** 2 * 64 * 4, x.size * 4
  assert temp <= padded_bytes + 4 * x_bytes, (temp, padded_bytes, x_bytes)


def test_batchnorm_and_relu_before_a_1x1_conv_overwrite_the_conv_output():
  """A FCN head's end in inference (3x3 ConvModule with BN and ReLU, then the 1x1 ``conv_seg``,
  ``in_place`` as ``BaseDecodeHead.classifier`` builds it): BN and ReLU write over the convolution's
  output, so XLA's scratch memory holds one feature map and the product, not two feature maps
  (a plain ``PointwiseConv``: 8.0 MiB here against this bound of 4.6 MiB; ERFNet's head at
  512x1024 wrote a second 64 MB map per image)."""
  from segjax import layers, xla_flags
  conv = layers.conv_module(128, 3, 1, 1, norm_cfg=BN, act_cfg=layers.RELU)
  conv_seg = layers.PointwiseConv(19, (1, 1), True, layers.kaiming_fan_out, in_place=True)
  x = jax.ShapeDtypeStruct((1, 64, 128, 16), jnp.float32)
  conv_vars = jax.eval_shape(lambda: conv.init(jax.random.PRNGKey(0), jnp.zeros(x.shape)))
  seg_vars = jax.eval_shape(lambda: conv_seg.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 128, 128))))

  def head(conv_vars, seg_vars, x):
    return conv_seg.apply(seg_vars, conv.apply(conv_vars, x, False))

  temp = jax.jit(head, compiler_options=xla_flags.memory_options()).lower(conv_vars, seg_vars, x) \
      .compile().memory_analysis().temp_size_in_bytes
  feature_bytes, product_bytes = 64 * 128 * 128 * 4, 64 * 128 * 19 * 4
  assert temp <= feature_bytes + product_bytes, (temp, feature_bytes)


def test_memory_options_evaluate_parallel_branches_one_at_a_time():
  """Three dilated depthwise branches, each followed by a 1x1 product (DeepLabV3+'s ASPP, its
  dilations halved for a 32x32 map): with segjax's memory compiler options XLA finishes a branch
  before starting the next, so its scratch memory holds one depthwise output and the three
  products (XLA's default order keeps all three depthwise outputs: 3.25 MiB here against the
  bound of 1.75 MiB). Each option steps aside for the user's own flag, all for
  SEGJAX_NO_XLA_DEFAULTS; programs that run once also take XLA's older fusion emitters."""
  from segjax import layers, xla_flags
  options = xla_flags.memory_options()
  assert options == xla_flags.MEMORY_OPTIONS
  x = jax.ShapeDtypeStruct((1, 32, 32, 256), jnp.float32)
  kernel = jax.ShapeDtypeStruct((3, 3, 256), jnp.float32)
  w = jax.ShapeDtypeStruct((256, 64), jnp.float32)

  def aspp_like(x, kernel, w):
    return jnp.concatenate([jax.nn.relu(layers.depthwise_conv(x, kernel, (1, 1), ((d, d), (d, d)), (d, d))) @ w
                            for d in (6, 12, 18)], -1)

  temp = jax.jit(aspp_like, compiler_options=options).lower(x, kernel, w).compile() \
      .memory_analysis().temp_size_in_bytes
  assert temp <= 32 * 32 * (256 + 3 * 64) * 4, temp
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("XLA_FLAGS", "--xla_gpu_enable_latency_hiding_scheduler=true")  # not a CPU choice
    assert xla_flags.memory_options() == xla_flags.MEMORY_OPTIONS
    assert xla_flags.unoptimised_options() == {**xla_flags.UNOPTIMISED, **xla_flags.MEMORY_OPTIONS,
                                               "xla_cpu_use_fusion_emitters": False}
    patch.setenv("XLA_FLAGS", "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_DEFAULT")
    assert xla_flags.memory_options() == {}
    patch.setenv("XLA_FLAGS", "--xla_cpu_enable_concurrency_optimized_scheduler=false")
    assert xla_flags.memory_options() == {}
    assert xla_flags.unoptimised_options() == {**xla_flags.UNOPTIMISED, "xla_cpu_use_fusion_emitters": False}
    patch.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true")
    assert xla_flags.memory_options() == xla_flags.MEMORY_OPTIONS
    assert xla_flags.unoptimised_options() == {**xla_flags.UNOPTIMISED, **xla_flags.MEMORY_OPTIONS}
    patch.setenv("SEGJAX_NO_XLA_DEFAULTS", "1")
    patch.delenv("XLA_FLAGS")
    assert xla_flags.memory_options() == {}
    assert xla_flags.unoptimised_options() == xla_flags.UNOPTIMISED


def test_compile_and_trim_returns_freed_heap_to_the_os():
  """A thread's malloc arena holding 48 MB of freed 64 KB blocks, pinned by one live block above
  them (free() alone cannot shrink it): compile_and_trim must return them, as it does the freed
  heap XLA's compiler leaves. RSS is read from /proc, so Linux/glibc only."""
  import ctypes
  import threading
  from segjax import xla_flags
  libc = ctypes.CDLL(None)
  if not hasattr(libc, "malloc_trim") or not os.path.exists("/proc/self/statm"):
    pytest.skip("needs glibc and /proc")
  libc.malloc.restype = ctypes.c_void_p
  libc.free.argtypes = [ctypes.c_void_p]
  page = os.sysconf("SC_PAGE_SIZE")

  def rss():
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * page

  jax.jit(lambda x: x + 1)(jnp.ones(3))  # the backend's start-up would reuse the freed blocks
  pinned = []

  def fragment():  # a new thread gets its own arena, as XLA's compiler threads do
    blocks = [libc.malloc(64 << 10) for _ in range(768)]
    for b in blocks:
      ctypes.memset(b, 1, 64 << 10)
    pinned.append(libc.malloc(64 << 10))
    for b in blocks:
      libc.free(b)

  thread = threading.Thread(target=fragment)
  thread.start()
  thread.join()
  before = rss()
  compiled = xla_flags.compile_and_trim(jax.jit(lambda x: x * 2), jnp.ones(3))
  released = before - rss()
  libc.free(pinned[0])
  assert released > 32 << 20, released
  np.testing.assert_array_equal(compiled(jnp.ones(3)), 2 * np.ones(3))


def test_compile_and_trim_waits_for_its_arguments():
  """Random init runs asynchronously; compiling the inference program while it still runs would
  hold init's scratch memory beside the compiler's. compile_and_trim returns only once the
  arguments exist (here a 200-step loop of 512x512 products, far longer than compiling x * 2)."""
  from segjax import xla_flags

  def slow(x):
    return jax.lax.fori_loop(0, 200, lambda _, y: jnp.tanh(y @ y), x)

  x = jax.jit(slow)(jnp.eye(512) * 0.5)
  xla_flags.compile_and_trim(jax.jit(lambda y: y * 2), x)
  assert x.is_ready()
