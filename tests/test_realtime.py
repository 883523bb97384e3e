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
