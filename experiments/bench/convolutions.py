"""Each convolution of a config's inference, timed alone: segjax (XLA) or PyTorch.

  python experiments/bench/convolutions.py configs/mmseg.py:stdc/stdc1_512x1024_80k_cityscapes.py \
      --out /tmp/stdc1_convs.json
  /tmp/mmvenv/bin/python experiments/bench/convolutions.py --torch /tmp/stdc1_convs.json

The segjax side traces ``apis.inference_logits`` at batch 1 and ``--shape``, lists every
``conv_general_dilated`` and every product over the channels of an NHWC tensor (a 1x1
convolution) with its shapes, strides, padding, dilation and groups (and how often it occurs),
times each alone (fastest of ``--repeat`` jitted calls) and writes the list to ``--out``.
``--torch`` times the same list as ``nn.Conv2d`` in PyTorch (NCHW, 2 threads). The sums bound
what either side can reach: where the convolutions alone take as long as PyTorch's, only the
remaining operations are left to gain on.
"""
import argparse
import collections
import json
import os
import sys

from timing import call_times  # this script's folder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fastest(call, repeat):
  return min(call_times(call, repeat))


def list_segjax(config, shape):
  import jax
  import jax.extend.core

  from segjax import apis
  from segjax.config import load_config
  segmentor = apis.init_segmentor(load_config(config))
  x = jax.numpy.zeros((1, *shape, 3), jax.numpy.float32)
  counts = collections.Counter()

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "conv_general_dilated":
        p = eqn.params
        counts[("conv", eqn.invars[0].aval.shape, eqn.invars[1].aval.shape, p["window_strides"],
                tuple(map(tuple, p["padding"])), p["rhs_dilation"], p["feature_group_count"])] += 1
      elif (eqn.primitive.name == "dot_general" and eqn.invars[0].aval.ndim == 4 and eqn.invars[1].aval.ndim == 2
            and eqn.params["dimension_numbers"] == (((3,), (0,)), ((), ()))):  # a 1x1 convolution
        counts[("dot", eqn.invars[0].aval.shape, eqn.invars[1].aval.shape)] += 1
    for sub in jax.extend.core.subjaxprs(jaxpr):
      walk(sub)

  walk(segmentor.inference_logits.trace(segmentor.variables, x).jaxpr.jaxpr)
  return [[list(k), n] for k, n in counts.items()]


def time_segjax(op, repeat):
  import jax
  import jax.extend.core
  import jax.numpy as jnp
  if op[0] == "dot":
    x, w = jnp.ones(op[1]), jnp.ones(op[2])
    f = jax.jit(lambda x, w: jax.lax.dot_general(x, w, (((3,), (0,)), ((), ()))))
  else:
    _, xs, ks, strides, padding, dilation, groups = op
    x, w = jnp.ones(xs), jnp.ones(ks)
    f = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
        x, w, strides, padding, rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups))
  return fastest(lambda: f(x, w).block_until_ready(), repeat)


def time_torch(op, repeat):
  import torch
  if op[0] == "dot":
    (n, h, w, c), (_, co) = op[1], op[2]
    x, conv = torch.ones(n, c, h, w), torch.nn.Conv2d(c, co, 1, bias=False)
  else:
    _, (n, h, w, c), (kh, kw, _, co), strides, padding, dilation, groups = op
    x = torch.ones(n, c, h, w)
    conv = torch.nn.Conv2d(c, co, (kh, kw), strides, (padding[0][0], padding[1][0]), dilation,
                           groups=groups, bias=False)
  with torch.no_grad():
    return fastest(lambda: conv(x), repeat)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("config", nargs="?")
  parser.add_argument("--shape", type=int, nargs=2, default=[512, 1024], metavar=("H", "W"))
  parser.add_argument("--out", default="/tmp/convolutions.json")
  parser.add_argument("--torch", metavar="LIST", help="time this list (written by the segjax side) in PyTorch")
  parser.add_argument("--repeat", type=int, default=15)
  args = parser.parse_args(argv)
  if args.torch:
    import torch
    torch.set_num_threads(2)
    ops, timer, side = json.load(open(args.torch)), time_torch, "torch"
  else:
    sys.path.insert(0, REPO)
    from segjax import xla_flags
    xla_flags.apply_defaults()
    ops, timer, side = list_segjax(args.config, args.shape), time_segjax, "segjax"
    json.dump(ops, open(args.out, "w"))
  total = 0.0
  for op, count in ops:
    ms = 1e3 * count * timer(op, args.repeat)
    total += ms
    print(f"{ms:8.2f} ms  x{count}  {op}")
  print(f"{side}: {total:.1f} ms in {sum(n for _, n in ops)} convolutions and products")


if __name__ == "__main__":
  main()
