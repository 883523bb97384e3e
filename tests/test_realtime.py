"""Real-time families (MobileNetV2/V3 + LRASPP, Fast-SCNN, CGNet, ERFNet, BiSeNetV1/V2, STDC,
ICNet): the behaviour the registry, oracle and conformance tests do not see, against PyTorch or
mmseg's documented rules."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.models.backbones import mobilenet_v2, mobilenet_v3
from segjax.models.heads import lraspp_head

torch = pytest.importorskip("torch")


def nchw(x):
  return torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())


def test_make_divisible_follows_mmseg():
  # mmseg's rule: nearest multiple of the divisor, at least the divisor, >= 90% of the value.
  assert mobilenet_v2.make_divisible(32 * 0.25, 8) == 8
  assert mobilenet_v2.make_divisible(24 * 0.25, 8) == 8
  assert mobilenet_v2.make_divisible(320 * 0.25, 8) == 80
  assert mobilenet_v2.make_divisible(72 // 4, 8) == 24  # 18 -> 16 is below 0.9 * 18 -> 24
  assert mobilenet_v2.make_divisible(120 // 4, 8) == 32


def test_hswish_and_hsigmoid_match_pytorch():
  # To the last bit but one: XLA may divide by 6 as a product with 1/6.
  x = np.linspace(-5, 5, 1001, dtype=np.float32)
  np.testing.assert_allclose(np.asarray(mobilenet_v3.hswish(jnp.asarray(x))),
                             torch.nn.functional.hardswish(torch.from_numpy(x)).numpy(), rtol=2e-7, atol=1e-8)
  # mmcv HSigmoid(bias=3, divisor=6): clamp((x + 3) / 6, 0, 1).
  np.testing.assert_allclose(np.asarray(mobilenet_v3.hsigmoid(jnp.asarray(x))),
                             torch.clamp((torch.from_numpy(x) + 3) / 6, 0, 1).numpy(), rtol=2e-7, atol=1e-8)


@pytest.mark.parametrize("size,kernel,stride,dilation", [(385, 3, 2, 1), (64, 3, 2, 1), (31, 5, 2, 1),
                                                         (49, 5, 1, 4), (50, 3, 1, 2)])
def test_adaptive_padding_is_tensorflow_same(size, kernel, stride, dilation):
  # mmcv Conv2dAdaptivePadding: output ceil(n / s), total padding split with the odd pixel at the end.
  x = np.random.default_rng(0).normal(size=(1, size, size + 1, 1)).astype(np.float32)
  padded = np.asarray(mobilenet_v3.adaptive_padding(jnp.asarray(x), kernel, stride, dilation))
  starts = []
  for axis, n in ((1, size), (2, size + 1)):
    out = (padded.shape[axis] - dilation * (kernel - 1) - 1) // stride + 1
    assert out == -(-n // stride)
    starts.append((padded.shape[axis] - n) // 2)
  np.testing.assert_array_equal(padded[0, starts[0]:starts[0] + size, starts[1]:starts[1] + size + 1], x[0])


def test_mobilenet_v3_surgery_output_strides():
  # mmseg's segmentation MobileNetV3: large outputs stride 2 (layer1), 4 (layer3), 8 (layer16).
  model = mobilenet_v3.MobileNetV3(arch="large", out_indices=(1, 3, 16), norm_cfg=dict(type="BN"))
  feats = jax.eval_shape(lambda: model.init_with_output(jax.random.PRNGKey(0), jnp.zeros((1, 64, 80, 3)))[0])
  assert [f.shape for f in feats] == [(1, 32, 40, 16), (1, 16, 20, 24), (1, 8, 10, 960)]


def test_mobilenet_errors_name_the_argument():
  x = jnp.zeros((1, 32, 32, 3))
  with pytest.raises(ValueError, match="arch='medium'"):
    mobilenet_v3.MobileNetV3(arch="medium").init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match="out_indices"):
    mobilenet_v2.MobileNetV2(out_indices=(7,)).init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match="strides"):
    mobilenet_v2.MobileNetV2(strides=(1, 2)).init(jax.random.PRNGKey(0), x)


def test_lraspp_image_pool_is_avg_pool_49_and_needs_its_size():
  x = np.random.default_rng(0).normal(size=(1, 50, 70, 2)).astype(np.float32)
  ours = lraspp_head.avg_pool_valid(jnp.asarray(x), 49, (16, 20))
  ref = torch.nn.AvgPool2d(49, stride=(16, 20))(nchw(x)).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-5, atol=1e-6)
  head = lraspp_head.LRASPPHead(**lraspp_head.LRASPPHead.TINY)
  feats = [jnp.zeros((1, 16, 16, 8)), jnp.zeros((1, 8, 8, 16)), jnp.zeros((1, 8, 8, 32))]
  variables = head.init(jax.random.PRNGKey(0), feats)
  small = lraspp_head.LRASPPHead(**dict(lraspp_head.LRASPPHead.TINY, pool_kernel=49))
  with pytest.raises(ValueError, match="at least 49x49"):
    small.apply(variables, feats)


def test_lraspp_needs_multiple_select():
  head = lraspp_head.LRASPPHead(**dict(lraspp_head.LRASPPHead.TINY, input_transform=None, in_index=2,
                                       in_channels=32))
  with pytest.raises(ValueError, match="multiple_select"):
    head.init(jax.random.PRNGKey(0), [jnp.zeros((1, 8, 8, 32))] * 3)


def test_erfnet_conv_transpose_matches_pytorch():
  from segjax.models.backbones import erfnet
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
  ref = torch.nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1)
  module = erfnet.ConvTranspose2d(4)
  # The converter's layout of the (in, out, kh, kw) weight: (kh, kw, out, in).
  kernel = ref.weight.detach().numpy().transpose(2, 3, 1, 0)
  params = {"params": {"kernel": kernel, "bias": ref.bias.detach().numpy()}}
  out = np.asarray(module.apply(params, jnp.asarray(x)))
  expected = ref(nchw(x)).detach().numpy().transpose(0, 2, 3, 1)
  assert out.shape == (2, 10, 14, 4)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(7, 8), (12, 13), (1, 2)])
def test_icnet_ceil_mode_max_pool_matches_pytorch(size):
  from segjax.models.backbones import icnet
  x = np.random.default_rng(0).normal(size=(1, *size, 2)).astype(np.float32)
  ours = np.asarray(icnet.max_pool_3x3_s2_ceil(jnp.asarray(x)))
  ref = torch.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)(nchw(x)).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_array_equal(ours, ref)


def test_cgnet_prelu_and_input_injection_match_pytorch():
  from segjax.models.backbones import cgnet
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 9, 10, 3)).astype(np.float32)
  weight = rng.normal(size=(3,)).astype(np.float32)
  prelu = torch.nn.PReLU(3)
  prelu.weight.data = torch.from_numpy(weight)
  ours = cgnet.PReLU(3).apply({"params": {"scale": weight}}, jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(ours), prelu(nchw(x)).detach().numpy().transpose(0, 2, 3, 1), rtol=1e-6)
  pool = torch.nn.AvgPool2d(3, stride=2, padding=1)
  np.testing.assert_allclose(np.asarray(cgnet.input_injection(jnp.asarray(x), 2)),
                             pool(pool(nchw(x))).numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)


def mmseg_stdc_boundary_targets(labels, threshold=0.1):
  """mmseg 0.30 ``STDCHead.losses``'s target computation, transcribed in PyTorch."""
  import torch.nn.functional as F
  seg_label = torch.from_numpy(labels[:, None].astype(np.float32))
  kernel = torch.tensor([-1, -1, -1, -1, 8, -1, -1, -1, -1], dtype=torch.float32).reshape(1, 1, 3, 3)
  fusion = torch.tensor([[6. / 10], [3. / 10], [1. / 10]], dtype=torch.float32).reshape(1, 3, 1, 1)
  t1 = F.conv2d(seg_label, kernel, padding=1).clamp(min=0)
  t1[t1 > threshold] = 1
  t1[t1 <= threshold] = 0
  t2 = F.conv2d(seg_label, kernel, stride=2, padding=1).clamp(min=0)
  t4 = F.conv2d(seg_label, kernel, stride=4, padding=1).clamp(min=0)
  t4 = F.interpolate(t4, t1.shape[2:], mode="nearest")
  t2 = F.interpolate(t2, t1.shape[2:], mode="nearest")
  for t in (t2, t4):
    t[t > threshold] = 1
    t[t <= threshold] = 0
  fused = F.conv2d(torch.stack((t1, t2, t4), dim=1).squeeze(2), fusion)
  fused[fused > threshold] = 1
  fused[fused <= threshold] = 0
  return fused[:, 0].long().numpy()


@pytest.mark.parametrize("shape", [(2, 48, 64), (1, 37, 29)])
def test_stdc_boundary_targets_match_mmseg(shape):
  from segjax.models.heads import stdc_head
  rng = np.random.default_rng(1)
  # Blocky labels (real boundaries) with ignored pixels, which take part with their value 255.
  labels = np.kron(rng.integers(0, 4, (shape[0], shape[1] // 4 + 1, shape[2] // 4 + 1)),
                   np.ones((1, 4, 4), np.int64))[:, :shape[1], :shape[2]]
  labels[rng.random(shape) < 0.05] = 255
  ours = np.asarray(stdc_head.boundary_targets(jnp.asarray(labels, jnp.int32)))
  expected = mmseg_stdc_boundary_targets(labels)
  assert 0 < expected.mean() < 1
  np.testing.assert_array_equal(ours, expected)


def test_stdc_errors_name_the_argument():
  from segjax.models.backbones import stdc
  x = jnp.zeros((1, 32, 32, 3))
  with pytest.raises(ValueError, match="stdc_type='STDCNet3'"):
    stdc.STDCNet(**dict(stdc.STDCNet.TINY, stdc_type="STDCNet3")).init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match="bottleneck_type"):
    stdc.STDCNet(**dict(stdc.STDCNet.TINY, bottleneck_type="mul")).init(jax.random.PRNGKey(0), x)


def test_stdc_add_fusion_keeps_downsample_once():
  # mmseg registers an 'add' module's downsample conv as `downsample` and `layers.0.1`: segjax
  # has it once and the rules skip the copy; 'cat' keys never match the skip.
  import re
  from segjax.models.backbones import stdc
  model = stdc.STDCNet(**dict(stdc.STDCNet.TINY, bottleneck_type="add"))
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
  first = variables["params"]["stages"]["2"]["0"]
  assert "downsample" in first and sorted(first["layers"]["0"]) == ["0"]
  assert "skip" in first
  (pattern,) = stdc.SKIP_ADD_DUPLICATES
  assert re.search(pattern, "stages.2.0.layers.0.1.conv.weight")
  assert not re.search(pattern, "stages.2.0.layers.0.conv.weight")
  assert not re.search(pattern, "stages.2.0.layers.1.conv.weight")
