"""This machine's attainable fp32 throughput: a large matrix product in XLA (and PyTorch if installed).

The ceiling against which experiments/bench/README.md weighs the speed targets: a training step
of known FLOPs (train_flops.py) cannot run faster than FLOPs / this rate.

  python experiments/bench/peak_flops.py --size 4096 --repeat 5
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from segjax import xla_flags  # noqa: E402

xla_flags.apply_defaults()

import jax  # noqa: E402
import numpy as np  # noqa: E402


def _median_seconds(fn, repeat):
  fn()  # warm-up: compile / allocate
  times = []
  for _ in range(repeat):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--size", type=int, default=4096, help="N of an N x N x N product")
  parser.add_argument("--repeat", type=int, default=5)
  args = parser.parse_args(argv)
  n = args.size
  flops = 2.0 * n ** 3
  a, b = (np.random.default_rng(i).standard_normal((n, n), dtype=np.float32) for i in range(2))
  matmul = jax.jit(jax.numpy.dot)
  ja, jb = jax.device_put(a), jax.device_put(b)
  seconds = _median_seconds(lambda: matmul(ja, jb).block_until_ready(), args.repeat)
  print(f"jax {jax.__version__} dot {n}^3 fp32: {seconds:.3f} s, {flops / seconds / 1e9:.0f} GFLOP/s")
  try:
    import torch
  except ImportError:
    return
  torch.set_num_threads(os.cpu_count())
  ta, tb = torch.from_numpy(a), torch.from_numpy(b)
  seconds = _median_seconds(lambda: ta @ tb, args.repeat)
  print(f"torch {torch.__version__} matmul {n}^3 fp32, {torch.get_num_threads()} threads: "
        f"{seconds:.3f} s, {flops / seconds / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
  main()
