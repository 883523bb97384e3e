"""segjax's PyTorch-equivalent pieces checked against PyTorch itself."""
import math
import re

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from segjax import layers

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("in_hw,out_hw", [((7, 9), (16, 20)), ((16, 20), (5, 7)), ((64, 128), (512, 1024)),
                                          ((9, 9), (9, 4)), ((1, 3), (4, 4)), ((2, 3), (4, 12))])
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


# Rows: XLA convolutions with explicit padding, 1x1 convs as matrix products (PointwiseConv, odd
# sizes with a stride), depthwise convs as shifted slices (GroupedConv, groups == input channels,
# with a channel multiplier too), other groupings as XLA's grouped convolution.
@pytest.mark.parametrize("k,stride,padding,dilation,groups,out_ch", [
    (3, 2, 1, 1, 1, 16), (3, 1, 4, 4, 1, 16), (7, 2, 3, 1, 1, 16), (3, 1, 12, 12, 8, 16),
    (1, 1, 0, 1, 1, 16), (1, 2, 0, 1, 1, 16), (1, 1, 1, 1, 1, 16), (3, 2, 2, 2, 8, 8),
    (3, 1, 1, 1, 8, 48), (3, 2, 1, 1, 8, 24), (3, 1, 1, 1, 4, 8), (1, 1, 0, 1, 2, 6)])
def test_conv_matches_torch(k, stride, padding, dilation, groups, out_ch):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(1, 8, 19, 23)).astype(np.float32)
  w = rng.normal(size=(out_ch, 8 // groups, k, k)).astype(np.float32)
  b = rng.normal(size=(out_ch,)).astype(np.float32)
  ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride=stride,
                 padding=padding, dilation=dilation, groups=groups).numpy().transpose(0, 2, 3, 1)
  conv = layers.conv2d(out_ch, k, stride, padding, dilation, groups, use_bias=True)
  out = conv.apply({"params": {"kernel": w.transpose(2, 3, 1, 0), "bias": b}}, x.transpose(0, 2, 3, 1))
  assert out.shape == ref.shape
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4)


@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_conv_of_parts_is_the_conv_of_their_concatenation(stride):
  """A list given to a 1x1 conv stands for its channel concatenation: same parameters, same
  output (the products of the parts summed), as F.conv2d on the concatenated input."""
  rng = np.random.default_rng(7)
  parts = [rng.normal(size=(1, c, 9, 11)).astype(np.float32) for c in (3, 5, 2)]
  w = rng.normal(size=(4, 10, 1, 1)).astype(np.float32)
  b = rng.normal(size=(4,)).astype(np.float32)
  ref = F.conv2d(torch.from_numpy(np.concatenate(parts, 1)), torch.from_numpy(w), torch.from_numpy(b),
                 stride=stride).numpy().transpose(0, 2, 3, 1)
  conv = layers.conv2d(4, 1, stride)
  nhwc = [jnp.asarray(p.transpose(0, 2, 3, 1)) for p in parts]
  assert jax.tree.map(jnp.shape, conv.init(jax.random.PRNGKey(0), nhwc)) == \
      {"params": {"kernel": (1, 1, 10, 4), "bias": (4,)}}
  out = conv.apply({"params": {"kernel": w.transpose(2, 3, 1, 0), "bias": b}}, nhwc)
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)


def test_channel_product_in_place_derivatives_are_matrix_products():
  """``channel_product_in_place`` is a 1x1 convolution forward; its derivatives (reverse and
  forward mode) are those of the matrix product, and the gradient program has no convolution
  left (XLA would run the kernel gradient of a 1x1 convolution through Eigen's convolution)."""
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(2, 5, 7, 6)), jnp.float32)
  rows = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
  product = lambda x, rows: jnp.einsum("nhwc,co->nhwo", x, rows)
  loss = lambda f: lambda x, rows: jnp.sum(jnp.sin(f(x, rows)))
  for got, want in zip(jax.grad(loss(layers.channel_product_in_place), (0, 1))(x, rows),
                       jax.grad(loss(product), (0, 1))(x, rows)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  tangents = (jnp.ones_like(x), jnp.ones_like(rows))
  np.testing.assert_allclose(np.asarray(jax.jvp(layers.channel_product_in_place, (x, rows), tangents)[1]),
                             np.asarray(jax.jvp(product, (x, rows), tangents)[1]), rtol=1e-5, atol=1e-5)
  hlo = jax.jit(jax.grad(loss(layers.channel_product_in_place), (0, 1))).lower(x, rows).compile().as_text()
  assert " convolution(" not in hlo


# Odd sizes (the last tile row and column lie half outside the map), a batch of two in one step;
# then several steps over the batch with the last one partly past the map (small steps forced).
@pytest.mark.parametrize("shape,features,step_bytes", [((2, 45, 67, 64), 96, None), ((2, 30, 41, 8), 5, 45_000)])
def test_conv3x3_is_as_close_to_the_exact_convolution_as_the_direct_one(shape, features, step_bytes, monkeypatch):
  """Winograd's F(2x2, 3x3) against PyTorch's float64 convolution: its float32 error is within
  2x that of PyTorch's float32 convolution, and in float64 it is exact to float64 rounding."""
  if step_bytes:
    monkeypatch.setattr(layers, "_WINOGRAD_STEP_BYTES", step_bytes)
  rng = np.random.default_rng(6)
  x = rng.normal(size=shape)
  kernel = rng.normal(size=(3, 3, shape[-1], features)) / math.sqrt(9 * shape[-1])
  torch_conv = lambda x, kernel: F.conv2d(torch.from_numpy(x.transpose(0, 3, 1, 2)),
                                          torch.from_numpy(kernel.transpose(3, 2, 0, 1)),
                                          padding=1).numpy().transpose(0, 2, 3, 1)
  exact = torch_conv(x, kernel)
  direct_error = np.abs(torch_conv(x.astype(np.float32), kernel.astype(np.float32)) - exact).max()
  got = layers.conv3x3(jnp.asarray(x, jnp.float32), jnp.asarray(kernel, jnp.float32))
  assert np.abs(np.asarray(got) - exact).max() <= 2 * direct_error
  with jax.enable_x64(True):
    np.testing.assert_allclose(np.asarray(layers.conv3x3(jnp.asarray(x), jnp.asarray(kernel))), exact,
                               rtol=0, atol=1e-12)


def test_conv3x3_derivatives_are_the_direct_convolutions():
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.normal(size=(2, 9, 11, 4)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 4, 5)), jnp.float32)
  direct = lambda x, kernel: jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))
  cotangent = jnp.asarray(rng.normal(size=(2, 9, 11, 5)), jnp.float32)
  loss = lambda f: lambda x, kernel: jnp.sum(f(x, kernel) * cotangent)
  for got, want in zip(jax.grad(loss(layers.conv3x3), (0, 1))(x, kernel), jax.grad(loss(direct), (0, 1))(x, kernel)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)
  tangents = (jnp.ones_like(x), jnp.ones_like(kernel))
  np.testing.assert_allclose(np.asarray(jax.jvp(layers.conv3x3, (x, kernel), tangents)[1]),
                             np.asarray(jax.jvp(direct, (x, kernel), tangents)[1]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels,dilation,winograd", [(64, 1, True), (32, 1, False), (64, 2, False)])
def test_conv2d_takes_winograd_where_it_pays(channels, dilation, winograd):
  """3x3, stride 1, padding 1, at least 64 channels in and out on a map of 512 pixels or more:
  no convolution is left in the compiled program; narrower or dilated ones stay convolutions."""
  conv = layers.conv2d(64, 3, 1, dilation, dilation)
  x = jnp.ones((1, 32, 64, channels), jnp.float32)
  variables = conv.init(jax.random.PRNGKey(0), x)
  hlo = jax.jit(conv.apply).lower(variables, x).compile().as_text()
  assert (" convolution(" not in hlo) == winograd


# Rows: parts (channels, size) -> the conv's input size; kernel, stride, padding, dilation,
# align_corners. Upsampled parts (2x, 4x, non-whole factor, from one pixel as after a global
# pool) convolved at their own size, a part at the input size and a downsampled one through the
# resize; strided, dilated and unpadded kernels; both align_corners.
@pytest.mark.parametrize("sizes,out_hw,k,stride,padding,dilation,align_corners", [
    (((5, (16, 20)), (4, (8, 10)), (3, (4, 5)), (2, (1, 1))), (16, 20), 3, 1, 1, 1, False),
    (((3, (7, 9)), (4, (3, 4)), (2, (19, 23))), (19, 23), 3, 2, 2, 2, True),
    (((3, (7, 9)), (4, (3, 4))), (16, 20), 3, 1, 0, 1, False),
    (((6, (16, 20)), (3, (8, 10))), (16, 20), 1, 2, 0, 1, True),
    (((3, (4, 5)), (4, (16, 20))), (16, 20), 1, 1, 0, 1, False),
    # align_corners=None: mode='nearest' (STDC's and BiSeNetV1's context paths).
    (((4, (8, 10)), (3, (16, 20))), (16, 20), 3, 1, 1, 1, None),
    (((3, (5, 7)),), (15, 21), 3, 1, 2, 2, None),
    (((3, (4, 5)), (2, (1, 1))), (8, 10), 5, 1, 2, 1, None),
    (((3, (6, 7)), (2, (16, 20))), (16, 20), 3, 1, 1, 1, None),
    (((3, (8, 10)),), (16, 20), 3, 2, 1, 1, None),
    (((3, (8, 10)),), (16, 20), 1, 1, 0, 1, None)])
def test_conv_of_resized_parts_is_the_conv_of_their_concatenation(sizes, out_hw, k, stride, padding,
                                                                    dilation, align_corners):
  """mmseg's heads resize maps, concatenate them and convolve (UPerHead, PSPHead, SegformerHead,
  STDC's context path): a list of parts, some ``Resized``, gives F.conv2d of F.interpolate'd,
  concatenated maps, with the same parameters; and the gradient of every input and of the
  kernel."""
  nearest = align_corners is None
  rng = np.random.default_rng(11)
  parts = [rng.normal(size=(2, c, *hw)) for c, hw in sizes]
  channels = sum(c for c, _ in sizes)
  w = rng.normal(size=(7, channels, k, k))
  cot = None

  def torch_conv(parts_t, w_t):
    up = [p if p.shape[2:] == out_hw else
          F.interpolate(p, size=out_hw, mode="nearest") if nearest else
          F.interpolate(p, size=out_hw, mode="bilinear", align_corners=align_corners) for p in parts_t]
    return F.conv2d(torch.cat(up, 1), w_t, None, stride=stride, padding=padding, dilation=dilation)

  parts_t = [torch.from_numpy(p).requires_grad_() for p in parts]
  w_t = torch.from_numpy(w).requires_grad_()
  ref = torch_conv(parts_t, w_t)
  cot = rng.normal(size=ref.shape)
  (ref * torch.from_numpy(cot)).sum().backward()

  conv = layers.conv2d(7, k, stride, padding, dilation, use_bias=False, parts=True)
  resized = (lambda x: layers.Resized(x, out_hw, mode="nearest")) if nearest else (
      lambda x: layers.Resized(x, out_hw, align_corners))
  as_parts = lambda xs: [x if x.shape[1:3] == out_hw else resized(x) for x in xs]
  nhwc = [jnp.asarray(p.transpose(0, 2, 3, 1), jnp.float32) for p in parts]
  assert jax.tree.map(jnp.shape, conv.init(jax.random.PRNGKey(0), as_parts(nhwc))) == \
      {"params": {"kernel": (k, k, channels, 7)}}
  kernel = jnp.asarray(w.transpose(2, 3, 1, 0), jnp.float32)

  def loss(kernel, xs):
    out = conv.apply({"params": {"kernel": kernel}}, as_parts(xs))
    return (out * jnp.asarray(cot.transpose(0, 2, 3, 1), jnp.float32)).sum(), out

  (_, out), (d_kernel, d_parts) = jax.value_and_grad(loss, (0, 1), has_aux=True)(kernel, nhwc)
  scale = np.abs(ref.detach().numpy()).max()
  np.testing.assert_allclose(np.asarray(out), ref.detach().numpy().transpose(0, 2, 3, 1), atol=2e-6 * scale)
  np.testing.assert_allclose(np.asarray(d_kernel), w_t.grad.numpy().transpose(2, 3, 1, 0),
                             atol=2e-6 * np.abs(w_t.grad.numpy()).max())
  for got, p_t in zip(d_parts, parts_t):
    want = p_t.grad.numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-6 * np.abs(want).max())


def test_conv_of_resized_parts_takes_the_product_first_only_where_cheaper():
  """The product at the part's own size is chosen for a large upsampling and not for a part the
  size of the output (there the interpolation matrices would cost more than the convolution)."""
  kernel = jnp.zeros((3, 3, 64, 32))
  primitives = lambda hw: {e.primitive.name for e in jax.make_jaxpr(
      lambda x: layers._conv_resized(layers.Resized(x, (32, 32)), kernel, (1, 1), ((1, 1), (1, 1)),
                                     (1, 1)))(jnp.zeros((1, hw, hw, 64))).eqns}
  assert "conv_general_dilated" not in primitives(8)
  assert "conv_general_dilated" in primitives(32)


def test_conv_of_nearest_upsampling_runs_at_the_input_size():
  """After a 2x nearest upsampling a 3x3 convolution is four 2x2 convolutions of the input (one
  per output phase) and none at the upsampled size."""
  kernel = jnp.zeros((3, 3, 64, 32))
  convs = [e for e in jax.make_jaxpr(
      lambda x: layers._conv_resized(layers.Resized(x, (32, 32), mode="nearest"), kernel, (1, 1),
                                     ((1, 1), (1, 1)), (1, 1)))(jnp.zeros((1, 16, 16, 64))).eqns
           if e.primitive.name == "conv_general_dilated"]
  assert [(e.invars[0].aval.shape, e.invars[1].aval.shape) for e in convs] == \
      [((1, 16, 16, 64), (2, 2, 64, 32))] * 4


@pytest.mark.parametrize("k,stride,padding,output_padding,hw", [
    (3, 2, 1, 1, (5, 7)),   # ERFNet's upsampler
    (4, 2, 1, 0, (5, 6)),   # UNet's DeconvModule
    (2, 2, 0, 0, (3, 4)),
    (3, 1, 1, 0, (5, 7)),
    (5, 3, 2, 1, (4, 5)),   # phases of unequal length
    (1, 2, 0, 1, (3, 4)),   # a kernel smaller than the stride: zero phases
    (3, 2, 0, 0, (1, 2))])
def test_conv_transpose_and_its_gradients_match_torch(k, stride, padding, output_padding, hw):
  rng = np.random.default_rng(7)
  x = rng.normal(size=(2, 5, *hw))
  w = rng.normal(size=(5, 3, k, k))  # PyTorch's (in, out, kh, kw)
  x_t, w_t = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
  ref = F.conv_transpose2d(x_t, w_t, None, stride, padding, output_padding)
  cot = rng.normal(size=ref.shape)
  (ref * torch.from_numpy(cot)).sum().backward()

  def loss(x, kernel):
    out = layers.conv_transpose(x, kernel, stride, padding, output_padding)
    return (out * jnp.asarray(cot.transpose(0, 2, 3, 1), jnp.float32)).sum(), out

  (_, out), (d_x, d_kernel) = jax.value_and_grad(loss, (0, 1), has_aux=True)(
      jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32), jnp.asarray(w.transpose(2, 3, 1, 0), jnp.float32))
  want = ref.detach().numpy().transpose(0, 2, 3, 1)
  assert out.shape == want.shape
  np.testing.assert_allclose(np.asarray(out), want, atol=2e-6 * np.abs(want).max())
  np.testing.assert_allclose(np.asarray(d_x), x_t.grad.numpy().transpose(0, 2, 3, 1),
                             atol=2e-6 * np.abs(x_t.grad.numpy()).max())
  np.testing.assert_allclose(np.asarray(d_kernel), w_t.grad.numpy().transpose(2, 3, 1, 0),
                             atol=2e-6 * np.abs(w_t.grad.numpy()).max())


def test_grouped_conv_names_channels_that_do_not_divide_into_groups():
  conv = layers.conv2d(16, 3, padding=1, groups=8)
  with pytest.raises(ValueError, match=r"input channels \(12\).*groups=8"):
    conv.init(jax.random.PRNGKey(0), jnp.zeros((1, 5, 5, 12)))


def test_avg_pool_ceil_matches_torch():
  x = np.random.default_rng(3).normal(size=(1, 3, 7, 9)).astype(np.float32)
  ref = torch.nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)(torch.from_numpy(x))
  out = layers.avg_pool_ceil(jnp.asarray(x.transpose(0, 2, 3, 1)), 2)
  np.testing.assert_allclose(np.asarray(out), ref.numpy().transpose(0, 2, 3, 1), atol=1e-6)


@pytest.mark.parametrize("hw", [(9, 10), (16, 16), (1, 2)])
def test_avg_pool_3x3_s2_and_its_gradient_match_torch(hw):
  x = np.random.default_rng(5).normal(size=(2, 3, *hw)).astype(np.float32)
  xt = torch.from_numpy(x).requires_grad_()
  ref = torch.nn.AvgPool2d(3, 2, 1)(xt)
  cot = np.random.default_rng(6).normal(size=ref.shape).astype(np.float32)
  (ref * torch.from_numpy(cot)).sum().backward()
  out, vjp = jax.vjp(layers.avg_pool_3x3_s2, jnp.asarray(x.transpose(0, 2, 3, 1)))
  np.testing.assert_allclose(np.asarray(out), ref.detach().numpy().transpose(0, 2, 3, 1), atol=1e-6)
  np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(cot.transpose(0, 2, 3, 1)))[0]),
                             xt.grad.numpy().transpose(0, 2, 3, 1), atol=1e-6)


def test_max_pool_matches_torch():
  x = np.random.default_rng(4).normal(size=(1, 3, 9, 10)).astype(np.float32)
  ref = torch.nn.MaxPool2d(3, 2, 1)(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(layers.max_pool_3x3_s2(jnp.asarray(x.transpose(0, 2, 3, 1)))), ref)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_batch_norm_train_matches_torch(dtype):
  """Output, input/scale/bias gradients and running statistics (unbiased variance) of one
  training-mode step equal ``nn.BatchNorm2d``'s."""
  import jax
  rng = np.random.default_rng(5)
  x = (rng.normal(size=(2, 6, 7, 5)) * 3 + 2).astype(np.float32)
  w, b = rng.normal(size=6).astype(np.float32), rng.normal(size=6).astype(np.float32)
  cot = rng.normal(size=(2, 6, 7, 5)).astype(np.float32)
  bn_t = torch.nn.BatchNorm2d(6)
  with torch.no_grad():
    bn_t.weight.copy_(torch.from_numpy(w)); bn_t.bias.copy_(torch.from_numpy(b))
    bn_t.running_mean.uniform_(); bn_t.running_var.uniform_(1, 2)
  run_mean, run_var = bn_t.running_mean.numpy().copy(), bn_t.running_var.numpy().copy()
  xt = torch.from_numpy(x).requires_grad_()
  yt = bn_t(xt)
  (yt * torch.from_numpy(cot)).sum().backward()

  bn = layers.BatchNorm()
  variables = {"params": {"scale": jnp.asarray(w), "bias": jnp.asarray(b)},
               "batch_stats": {"mean": jnp.asarray(run_mean), "var": jnp.asarray(run_var)}}
  to_nhwc = lambda a: jnp.asarray(a.transpose(0, 2, 3, 1))
  cast = lambda tree: jax.tree.map(lambda a: a.astype(dtype), tree)

  def loss(params, xs):
    y, new = bn.apply({"params": cast(params), "batch_stats": variables["batch_stats"]}, xs.astype(dtype),
                      use_running_average=False, mutable=["batch_stats"])
    return jnp.sum(y.astype(jnp.float32) * to_nhwc(cot)), (y, new["batch_stats"])

  (_, (y, stats)), (gp, gx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
      variables["params"], to_nhwc(x))
  tol = 1e-4 if dtype == "float32" else 5e-2
  np.testing.assert_allclose(np.asarray(y, np.float32), yt.detach().numpy().transpose(0, 2, 3, 1),
                             atol=tol, rtol=tol)
  np.testing.assert_allclose(np.asarray(gx, np.float32), xt.grad.numpy().transpose(0, 2, 3, 1),
                             atol=tol, rtol=tol)
  np.testing.assert_allclose(np.asarray(gp["scale"]), bn_t.weight.grad.numpy(), atol=tol, rtol=tol)
  np.testing.assert_allclose(np.asarray(gp["bias"]), bn_t.bias.grad.numpy(), atol=tol, rtol=tol)
  # Statistics stay float32 in mixed precision: same tolerance for both dtypes but for the input
  # rounding to bf16.
  stat_tol = 1e-5 if dtype == "float32" else 2e-2
  np.testing.assert_allclose(np.asarray(stats["mean"]), bn_t.running_mean.numpy(), rtol=stat_tol, atol=stat_tol)
  np.testing.assert_allclose(np.asarray(stats["var"]), bn_t.running_var.numpy(), rtol=stat_tol, atol=stat_tol)
  assert stats["mean"].dtype == jnp.float32 and stats["var"].dtype == jnp.float32


def test_batch_norm_eval_uses_running_statistics():
  x = np.random.default_rng(6).normal(size=(1, 3, 4, 4)).astype(np.float32)
  bn_t = torch.nn.BatchNorm2d(4).eval()
  with torch.no_grad():
    bn_t.running_mean.uniform_(); bn_t.running_var.uniform_(1, 2); bn_t.weight.uniform_()
  variables = {"params": {"scale": jnp.asarray(bn_t.weight.detach().numpy()), "bias": jnp.zeros(4)},
               "batch_stats": {"mean": jnp.asarray(bn_t.running_mean.numpy()),
                               "var": jnp.asarray(bn_t.running_var.numpy())}}
  y = layers.BatchNorm().apply(variables, jnp.asarray(x), use_running_average=True)
  ref = bn_t(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(y), ref, atol=1e-5)


def test_norm_cfg_eps_and_momentum_reach_the_layer():
  """``norm_cfg=dict(type='BN', eps=1e-3, momentum=0.01)`` acts as ``nn.BatchNorm2d(eps=1e-3,
  momentum=0.01)``: training output and running statistics; evaluation output."""
  import flax.linen as nn

  class Norm(nn.Module):
    cfg: dict

    @nn.compact
    def __call__(self, x, train):
      return layers.norm_layer(self.cfg, name="bn")(x, train)

  rng = np.random.default_rng(7)
  x = (rng.normal(size=(2, 3, 5, 4)) * 0.05).astype(np.float32)  # small variance: eps matters
  bn_t = torch.nn.BatchNorm2d(4, eps=1e-3, momentum=0.01)
  model = Norm({"type": "SyncBN", "eps": 1e-3, "momentum": 0.01, "requires_grad": True})
  variables = model.init(jax.random.PRNGKey(0), x, False)
  y, new = model.apply(variables, x, True, mutable=["batch_stats"])
  ref = bn_t(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(y), ref, atol=1e-5)
  np.testing.assert_allclose(np.asarray(new["batch_stats"]["bn"]["mean"]), bn_t.running_mean.numpy(), atol=1e-7)
  np.testing.assert_allclose(np.asarray(new["batch_stats"]["bn"]["var"]), bn_t.running_var.numpy(), rtol=1e-6)
  y = model.apply({"params": variables["params"], **new}, x, False)
  ref = bn_t.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(y), ref, atol=1e-5)


def test_norm_cfg_unknown_key_is_named():
  with pytest.raises(ValueError, match=r"\['affine'\].*BN does not take"):
    layers.norm_layer({"type": "BN", "affine": False})


@pytest.mark.parametrize("pad_first_max_growth", [0.0, float("inf")])
@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 1, 1), (1, 12, 12), (2, 2, 2), (3, 0, 1), (2, 4, 3), (1, 18, 18)])
def test_depthwise_conv_gradients_match_torch(stride, padding, dilation, pad_first_max_growth, monkeypatch):
  """A depthwise GroupedConv (shifted slices, written-out backward): output, input and kernel gradients
  equal PyTorch's, with strides that leave rows and columns unused and taps that see only padding;
  the output both under differentiation (one sample per loop iteration) and without it; stride-1
  taps as slices of the padded input and as padded slices of the input."""
  monkeypatch.setattr(layers, "PAD_FIRST_MAX_GROWTH", pad_first_max_growth)
  rng = np.random.default_rng(6)
  x = rng.normal(size=(2, 5, 17, 14)).astype(np.float32)
  w = rng.normal(size=(5, 1, 3, 3)).astype(np.float32)
  xt, wt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
  yt = F.conv2d(xt, wt, stride=stride, padding=padding, dilation=dilation, groups=5)
  cot = rng.normal(size=yt.shape).astype(np.float32)
  (yt * torch.from_numpy(cot)).sum().backward()
  conv = layers.conv2d(5, 3, stride, padding, dilation, groups=5, use_bias=False)

  def loss(kernel, x_nhwc):
    y = conv.apply({"params": {"kernel": kernel}}, x_nhwc)
    return jnp.sum(y * cot.transpose(0, 2, 3, 1)), y

  (_, y), (dkernel, dx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
      jnp.asarray(w.transpose(2, 3, 1, 0)), jnp.asarray(x.transpose(0, 2, 3, 1)))
  np.testing.assert_allclose(np.asarray(y), yt.detach().numpy().transpose(0, 2, 3, 1), atol=1e-5)
  y_inference = conv.apply({"params": {"kernel": w.transpose(2, 3, 1, 0)}}, x.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(np.asarray(y_inference), yt.detach().numpy().transpose(0, 2, 3, 1), atol=1e-5)
  np.testing.assert_allclose(np.asarray(dx), xt.grad.numpy().transpose(0, 2, 3, 1), atol=1e-4)
  np.testing.assert_allclose(np.asarray(dkernel), wt.grad.numpy().transpose(2, 3, 1, 0), atol=1e-3)


def _norm_module(cfg, name):
  import flax.linen as nn

  class Norm(nn.Module):
    @nn.compact
    def __call__(self, x, train):
      return layers.norm_layer(cfg, name=name)(x, train)
  return Norm()


def test_mmsyncbn_is_syncbn():
  """mmcv's MMSyncBN, like torch's SyncBN, is BatchNorm over the global batch (what BatchNorm is
  under jit over a batch-sharded mesh): the same layer, named 'bn' as mmcv's abbreviation."""
  x = np.random.default_rng(2).normal(size=(2, 3, 5, 4)).astype(np.float32)
  outs = []
  for kind in ("SyncBN", "MMSyncBN"):
    model = _norm_module({"type": kind, "momentum": 0.01, "requires_grad": True}, layers.NORM_NAMES[kind])
    variables = model.init(jax.random.PRNGKey(0), x, False)
    outs.append(model.apply(variables, x, True, mutable=["batch_stats"]))
  assert jax.tree.map(jnp.shape, outs[0]) == jax.tree.map(jnp.shape, outs[1])
  jax.tree.map(np.testing.assert_array_equal, outs[0], outs[1])


@pytest.mark.parametrize("cfg", [{"type": "IN"}, {"type": "IN", "affine": True, "eps": 1e-3}])
def test_instance_norm_matches_torch(cfg):
  """norm_cfg IN is torch's InstanceNorm2d with mmcv's defaults (affine=False,
  track_running_stats=False): per image and channel over H, W, in training and evaluation."""
  rng = np.random.default_rng(3)
  x = rng.normal(2.0, 3.0, size=(2, 5, 6, 4)).astype(np.float32)
  ref_t = torch.nn.InstanceNorm2d(4, eps=cfg.get("eps", 1e-5), affine=cfg.get("affine", False))
  model = _norm_module(cfg, layers.NORM_NAMES["IN"])
  variables = model.init(jax.random.PRNGKey(0), x, True)
  if cfg.get("affine"):
    w, b = rng.normal(size=4).astype(np.float32), rng.normal(size=4).astype(np.float32)
    ref_t.weight.data, ref_t.bias.data = torch.from_numpy(w), torch.from_numpy(b)
    variables = {"params": {"in": {"scale": jnp.asarray(w), "bias": jnp.asarray(b)}}}
  else:
    assert not variables.get("params")  # no weight, no bias, no running statistics
  ref = ref_t(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
  for train in (True, False):
    np.testing.assert_allclose(np.asarray(model.apply(variables, x, train)), ref, atol=1e-5)
  with pytest.raises(ValueError, match="track_running_stats"):
    layers.norm_layer({"type": "IN", "track_running_stats": True})


@pytest.mark.parametrize("rows", [7, 12])  # 12: three full blocks of 4; 7: the last block padded
def test_softmax_attention_in_query_blocks_is_the_full_softmax(monkeypatch, rows):
  monkeypatch.setattr(layers, "ATTENTION_BLOCK_ROWS", 4)
  rng = np.random.default_rng(0)
  q, k, v = (rng.normal(size=s) for s in ((2, rows, 3), (2, 9, 3), (2, 9, 5)))
  energy = np.einsum("nqc,nkc->nqk", q, k) * 0.7
  weights = np.exp(energy - energy.max(-1, keepdims=True))
  expected = (weights / weights.sum(-1, keepdims=True)) @ v
  got = layers.softmax_attention(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)), scale=0.7)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)
  # Gradients through the blocked, rematerialised path equal those of the one-map formula.
  full = lambda q, k, v: jax.nn.softmax(jnp.einsum("nqc,nkc->nqk", q, k) * 0.7, -1) @ v
  args = [jnp.asarray(a, jnp.float32) for a in (q, k, v)]
  cotangent = jnp.asarray(rng.normal(size=expected.shape), jnp.float32)
  blocked_grads = jax.vjp(lambda *a: layers.softmax_attention(*a, scale=0.7), *args)[1](cotangent)
  for got_grad, want_grad in zip(blocked_grads, jax.vjp(full, *args)[1](cotangent)):
    np.testing.assert_allclose(np.asarray(got_grad), np.asarray(want_grad), rtol=1e-5, atol=1e-6)


def test_multi_head_attention_matches_torch_and_keeps_one_map_for_the_backward_pass(capsys):
  """Output and gradients of softmax(q k^T / sqrt(d) + bias) v as PyTorch computes them
  (float64 reference); of the (N, heads, Lq, Lk) maps only the weights are kept for the backward
  pass (autodiff of jax.nn.softmax keeps the exponentials too)."""
  rng = np.random.default_rng(3)
  q, k, v = (rng.normal(size=(2, l, 3, 8)) for l in (6, 10, 10))
  bias = rng.normal(size=(1, 3, 6, 10))
  cot = rng.normal(size=(2, 6, 3, 8))
  qt, kt, vt = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
  weights = torch.softmax(torch.einsum("nqhd,nkhd->nhqk", qt, kt) / np.sqrt(8) + torch.from_numpy(bias), -1)
  ref = torch.einsum("nhqk,nkhd->nqhd", weights, vt)
  (ref * torch.from_numpy(cot)).sum().backward()
  args = [jnp.asarray(a, jnp.float32) for a in (q, k, v)]
  attend = lambda q, k, v: layers.multi_head_attention(None, q, k, v, bias=jnp.asarray(bias, jnp.float32))
  out, vjp = jax.vjp(attend, *args)
  np.testing.assert_allclose(np.asarray(out), ref.detach().numpy(), rtol=1e-5, atol=1e-6)
  for got, want in zip(vjp(jnp.asarray(cot, jnp.float32)), (qt, kt, vt)):
    np.testing.assert_allclose(np.asarray(got), want.grad.numpy(), rtol=1e-5, atol=1e-5)
  from jax.ad_checkpoint import print_saved_residuals
  print_saved_residuals(lambda *a: attend(*a).sum(), *args)
  kept = capsys.readouterr().out
  sizes = [math.prod(map(int, shape.split(","))) for shape in re.findall(r"f32\[([\d,]+)\]", kept)]
  assert sizes.count(2 * 3 * 6 * 10) == 1, kept


@pytest.mark.parametrize("in_size, factor", [(5, 4), (16, 8), (3, 2), (1, 4)])
def test_whole_factor_upsampling_by_shifted_slices_equals_the_gathered_taps(in_size, factor):
  # The shifted-slice path is taken for these sizes, and it computes PyTorch's taps
  # (i0, i1, w0, w1 of upsample_bilinear2d) as the gather formula does: equal to the last bit.
  i0, i1, w0, w1 = layers._bilinear_taps(in_size, in_size * factor, False)
  assert layers._phase_shifts((i0, i1), (w0, w1), in_size, in_size * factor) is not None
  x = np.random.default_rng(0).normal(size=(2, in_size, 3, 4)).astype(np.float32)
  expected = np.take(x, i0, 1) * w0[:, None, None] + np.take(x, i1, 1) * w1[:, None, None]
  got = layers.resize(jnp.asarray(x), (in_size * factor, 3))
  np.testing.assert_array_equal(np.asarray(got), expected)
  torch = pytest.importorskip("torch")
  reference = torch.nn.functional.interpolate(torch.tensor(x).permute(0, 3, 1, 2), (in_size * factor, 3),
                                              mode="bilinear", align_corners=False)
  np.testing.assert_allclose(np.asarray(got), reference.permute(0, 2, 3, 1).numpy(), rtol=0, atol=1e-6)
