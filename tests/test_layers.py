"""segjax's PyTorch-equivalent pieces checked against PyTorch itself."""
import numpy as np
import pytest

import jax.numpy as jnp

from segjax import layers

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("in_hw,out_hw", [((7, 9), (16, 20)), ((16, 20), (5, 7)), ((64, 128), (512, 1024)),
                                          ((9, 9), (9, 4)), ((1, 3), (4, 4))])
def test_resize_matches_f_interpolate(in_hw, out_hw, align_corners):
  x = np.random.default_rng(0).normal(size=(2, 3, *in_hw)).astype(np.float32)
  ref = F.interpolate(torch.from_numpy(x), size=out_hw, mode="bilinear",
                      align_corners=align_corners).numpy().transpose(0, 2, 3, 1)
  out = layers.resize(jnp.asarray(x.transpose(0, 2, 3, 1)), out_hw, align_corners)
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)


@pytest.mark.parametrize("in_hw", [(16, 32), (17, 23), (5, 5), (65, 129)])
@pytest.mark.parametrize("scale", [1, 2, 3, 6])
def test_adaptive_avg_pool_matches_torch(in_hw, scale):
  x = np.random.default_rng(1).normal(size=(1, 4, *in_hw)).astype(np.float32)
  ref = F.adaptive_avg_pool2d(torch.from_numpy(x), scale).numpy().transpose(0, 2, 3, 1)
  out = layers.adaptive_avg_pool(jnp.asarray(x.transpose(0, 2, 3, 1)), scale)
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)


def test_adaptive_pool_bins_follow_pytorch_rule():
  # in=5, out=3: bins [0,2), [1,4), [3,5) (floor start, ceil end) overlap.
  m = layers.adaptive_pool_matrix(5, 3)
  np.testing.assert_allclose(m, [[.5, .5, 0, 0, 0], [0, 1 / 3, 1 / 3, 1 / 3, 0], [0, 0, 0, .5, .5]])


@pytest.mark.parametrize("k,stride,padding,dilation,groups", [(3, 2, 1, 1, 1), (3, 1, 4, 4, 1),
                                                               (7, 2, 3, 1, 1), (3, 1, 12, 12, 8)])
def test_conv_padding_matches_torch(k, stride, padding, dilation, groups):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(1, 8, 19, 23)).astype(np.float32)
  w = rng.normal(size=(16, 8 // groups, k, k)).astype(np.float32)
  ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=stride, padding=padding,
                 dilation=dilation, groups=groups).numpy().transpose(0, 2, 3, 1)
  conv = layers.conv2d(16, k, stride, padding, dilation, groups, use_bias=False)
  out = conv.apply({"params": {"kernel": w.transpose(2, 3, 1, 0)}}, x.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4)


def test_avg_pool_ceil_matches_torch():
  x = np.random.default_rng(3).normal(size=(1, 3, 7, 9)).astype(np.float32)
  ref = torch.nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)(torch.from_numpy(x))
  out = layers.avg_pool_ceil(jnp.asarray(x.transpose(0, 2, 3, 1)), 2)
  np.testing.assert_allclose(np.asarray(out), ref.numpy().transpose(0, 2, 3, 1), atol=1e-6)


def test_max_pool_matches_torch():
  x = np.random.default_rng(4).normal(size=(1, 3, 9, 10)).astype(np.float32)
  ref = torch.nn.MaxPool2d(3, 2, 1)(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(layers.max_pool_3x3_s2(jnp.asarray(x.transpose(0, 2, 3, 1)))), ref)
