"""LayerNorm over (tokens, C) and GroupNorm over NHWC on CPU: segjax's modules, candidate
formulations and PyTorch, forward and forward+backward, at transformer / PoolFormer sizes.

  python experiments/bench/norms.py --repeat 20

Each case prints, per call, the fastest wall time of ``--repeat`` calls / the median process CPU
time (ms; the host is shared, the candidates run interleaved call by call) of: ``segjax`` (segjax.layers.LayerNorm /
norm_layer's GroupNorm as they are in the tree), ``mean`` (the reductions as jnp.mean),
``dot`` (the reductions as products with a ones vector, autodiff backward), ``vjp`` (mean
reductions per token / group forward, a written-out backward whose scale and bias gradients,
sums over all tokens, are products with a ones vector as in BatchNorm) and ``torch``
(F.layer_norm / F.group_norm, NCHW for GN, 2 threads). Backward: gradient of sum(y * w) with
respect to x, scale and bias.
"""
import argparse
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from segjax import xla_flags  # noqa: E402

xla_flags.apply_defaults()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from segjax import layers  # noqa: E402
from timing import call_times  # noqa: E402  (this script's folder)

EPS = 1e-5
# (name, shape): LN over the last axis of (tokens, C); GN (groups) over NHWC.
LN_CASES = [("SegFormer-B0 stage 1, 2x128x128 tokens", (32768, 32)),
            ("Swin-T stage 1, 2x128x128 tokens", (32768, 96)),
            ("Swin-T stage 3, 2x32x32 tokens", (2048, 384)),
            ("ViT-B, 2x1024 tokens", (2048, 768))]
GN_CASES = [("PoolFormer-S12 stage 1, GN(1)", (2, 128, 128, 64), 1),
            ("PoolFormer-S12 stage 3, GN(1)", (2, 32, 32, 320), 1),
            ("GN(32) 2x128x128x256", (2, 128, 128, 256), 32)]


def ln_mean(x, scale, bias):
  centered = x - x.mean(-1, keepdims=True)
  var = (centered * centered).mean(-1, keepdims=True)
  return centered * jax.lax.rsqrt(var + EPS) * scale + bias


def _row_mean(x2d):
  ones = jnp.full((x2d.shape[-1],), 1.0 / x2d.shape[-1], x2d.dtype)
  return jax.lax.dot_general(x2d, ones, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)


def ln_dot(x, scale, bias):
  centered = x - _row_mean(x)[:, None]
  var = _row_mean(centered * centered)[:, None]
  return centered * jax.lax.rsqrt(var + EPS) * scale + bias


def _column_sum(x2d):
  """(M, C) -> (C,): the sum over M as a product with a ones vector (layers._channel_sum)."""
  return layers._channel_sum(x2d)


@jax.custom_vjp
def ln_vjp(x, scale, bias):
  return _ln_vjp_fwd(x, scale, bias)[0]


def _ln_vjp_fwd(x, scale, bias):
  centered = x - x.mean(-1, keepdims=True)
  inv = jax.lax.rsqrt((centered * centered).mean(-1, keepdims=True) + EPS)
  xhat = centered * inv
  return xhat * scale + bias, (xhat, inv, scale)


def _ln_vjp_bwd(res, dy):
  xhat, inv, scale = res
  x2d, dy2d = xhat.reshape(-1, xhat.shape[-1]), dy.reshape(-1, dy.shape[-1])
  g = dy * scale
  dx = inv * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
  return dx, _column_sum(dy2d * x2d), _column_sum(dy2d)


ln_vjp.defvjp(_ln_vjp_fwd, _ln_vjp_bwd)


def gn_mean(x, scale, bias, groups):
  n, h, w, c = x.shape
  xg = x.reshape(n, h * w, groups, c // groups)
  centered = xg - xg.mean((1, 3), keepdims=True)
  var = (centered * centered).mean((1, 3), keepdims=True)
  return (centered * jax.lax.rsqrt(var + EPS)).reshape(x.shape) * scale + bias


def _group_mean(x3d, groups):
  """(N, M, C) -> (N, 1, C): each channel's group mean over M and the group's channels."""
  n, m, c = x3d.shape
  ones = jnp.ones((m,), x3d.dtype)
  per_channel = jax.lax.dot_general(x3d, ones, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
  per_group = per_channel.reshape(n, groups, c // groups).sum(-1, keepdims=True) / (m * (c // groups))
  return jnp.broadcast_to(per_group, (n, groups, c // groups)).reshape(n, 1, c)


def gn_dot(x, scale, bias, groups):
  n, h, w, c = x.shape
  x3d = x.reshape(n, h * w, c)
  centered = x3d - _group_mean(x3d, groups)
  var = _group_mean(centered * centered, groups)
  return (centered * jax.lax.rsqrt(var + EPS)).reshape(x.shape) * scale + bias


def _group_stat(x3d, groups):
  """(N, M, C) -> (N, 1, C): group means, reductions over M as products with ones."""
  return _group_mean(x3d, groups)


def gn_vjp(x, scale, bias, groups):
  return _gn_vjp(groups, x, scale, bias)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _gn_vjp(groups, x, scale, bias):
  return _gn_vjp_fwd(groups, x, scale, bias)[0]


def _gn_vjp_fwd(groups, x, scale, bias):
  n, h, w, c = x.shape
  x3d = x.reshape(n, h * w, c)
  centered = x3d - _group_stat(x3d, groups)
  inv = jax.lax.rsqrt(_group_stat(centered * centered, groups) + EPS)
  xhat = centered * inv
  return (xhat * scale + bias).reshape(x.shape), (xhat, inv, scale)


def _gn_vjp_bwd(groups, res, dy):
  xhat, inv, scale = res
  n, m, c = xhat.shape
  dy3d = dy.reshape(xhat.shape)
  g = dy3d * scale
  dx = inv * (g - _group_stat(g, groups) - xhat * _group_stat(g * xhat, groups))
  dscale = _column_sum((dy3d * xhat).reshape(n * m, c))
  dbias = _column_sum(dy3d.reshape(n * m, c))
  return dx.reshape(dy.shape), dscale, dbias


_gn_vjp.defvjp(_gn_vjp_fwd, _gn_vjp_bwd)


def timed(fns, args, repeat):
  """{key: (fastest wall ms, median process CPU ms)} per call, the candidates interleaved call by
  call so that the shared host's load drifts over all of them alike."""
  for fn in fns.values():
    for _ in range(3):
      jax.block_until_ready(fn(*args))
  wall, cpu = {k: [] for k in fns}, {k: [] for k in fns}
  for _ in range(repeat):
    for key, fn in fns.items():
      start, start_cpu = time.perf_counter(), time.process_time()
      jax.block_until_ready(fn(*args))
      wall[key].append(time.perf_counter() - start)
      cpu[key].append(time.process_time() - start_cpu)
  return {k: (1e3 * float(np.min(wall[k])), 1e3 * float(np.median(cpu[k]))) for k in fns}


def fwd_bwd(apply):
  def loss(x, scale, bias, w):
    return jnp.sum(apply(x, scale, bias) * w)
  return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def torch_times(kind, x, w, groups, repeat):
  import torch
  import torch.nn.functional as F
  torch.set_num_threads(2)
  c = x.shape[-1]
  if kind == "ln":
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    fn = lambda a, s, b: F.layer_norm(a, (c,), s, b, EPS)
  else:  # NCHW, as mmseg runs it
    xt, wt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(w.transpose(0, 3, 1, 2).copy())
    fn = lambda a, s, b: F.group_norm(a, groups, s, b, EPS)
  s, b = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
  out = []
  for backward in (False, True):
    def call():
      if backward:
        a = xt.clone().requires_grad_(True)
        (fn(a, s, b) * wt).sum().backward()
      else:
        with torch.no_grad():
          fn(xt, s, b)
    out.append(1e3 * min(call_times(call, repeat, warmup=3)))
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeat", type=int, default=20)
  parser.add_argument("--no-torch", action="store_true")
  args = parser.parse_args(argv)
  rng = np.random.default_rng(0)
  print("| case | pass | segjax (tree) | mean | dot | vjp | torch |")
  print("|---|---|---:|---:|---:|---:|---:|")
  cases = [("ln", name, shape, None) for name, shape in LN_CASES] + \
          [("gn", name, shape, g) for name, shape, g in GN_CASES]
  for kind, name, shape, groups in cases:
    x = (rng.normal(size=shape) * 2 + 0.5).astype(np.float32)
    w = rng.normal(size=shape).astype(np.float32)
    c = shape[-1]
    scale, bias = jnp.ones((c,)), jnp.zeros((c,))
    if kind == "ln":
      module = layers.LayerNorm(EPS)
      candidates = {"mean": ln_mean, "dot": ln_dot, "vjp": ln_vjp}
    else:
      module = layers.norm_layer({"type": "GN", "num_groups": groups})
      candidates = {"mean": functools.partial(gn_mean, groups=groups),
                    "dot": functools.partial(gn_dot, groups=groups),
                    "vjp": functools.partial(gn_vjp, groups=groups)}
    if kind == "ln":
      tree = lambda a, s, b: module.apply({"params": {"scale": s, "bias": b}}, a)
    else:
      # norm_layer returns a callable over a module bound at init; rebuild it as a flax module call
      gn = layers.GroupNorm(num_groups=groups, epsilon=EPS) if hasattr(layers, "GroupNorm") else \
          __import__("flax.linen", fromlist=["GroupNorm"]).GroupNorm(num_groups=groups, epsilon=EPS,
                                                                   use_fast_variance=False)
      tree = lambda a, s, b: gn.apply({"params": {"scale": s, "bias": b}}, a)
    impls = {"segjax": tree, **candidates}
    ref = np.asarray(jax.jit(impls["mean"])(x, scale, bias))
    fwd, bwd = {}, {}
    ref_grad = [np.asarray(g) for g in fwd_bwd(impls["mean"])(x, scale, bias, w)]
    for key, impl in impls.items():
      diff = float(np.abs(np.asarray(jax.jit(impl)(x, scale, bias)) - ref).max())
      assert diff < 1e-4, (key, diff)
      for g, r in zip(fwd_bwd(impl)(x, scale, bias, w), ref_grad):
        assert np.abs(np.asarray(g) - r).max() <= 1e-4 * (1 + np.abs(r).max()), (key, "gradient")
    fwd = timed({k: jax.jit(impl) for k, impl in impls.items()}, (x, scale, bias), args.repeat)
    bwd = timed({k: fwd_bwd(impl) for k, impl in impls.items()}, (x, scale, bias, w), args.repeat)
    tt = ["-", "-"] if args.no_torch else [f"{t:.2f}" for t in torch_times(kind, x, w, groups, args.repeat)]
    label = f"{'LN' if kind == 'ln' else 'GN'} {name} {shape}"
    for i, (pass_name, times) in enumerate((("forward", fwd), ("forward+backward", bwd))):
      cells = " | ".join(f"{times[k][0]:.2f} / {times[k][1]:.1f}" for k in ("segjax", "mean", "dot", "vjp"))
      print(f"| {label} | {pass_name} | {cells} | {tt[i]} |", flush=True)


if __name__ == "__main__":
  main()
