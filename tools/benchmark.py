"""Inference speed of a config's model, as mmseg's tools/benchmark.py measures it.

  python tools/benchmark.py configs/pspnet_cityscapes.py [CHECKPOINT] --shape 1024 2048 --repeat 200

Batch 1, test-mode logits (whole or slide per the config's test_cfg), the first 5 iterations are
warm-up and excluded; compilation is timed and reported separately.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segjax import xla_flags  # noqa: E402

xla_flags.apply_defaults()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from segjax import apis  # noqa: E402
from segjax.config import apply_overrides, load_config  # noqa: E402

WARMUP = 5


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("config", help="configs/X.py[:variant]")
  parser.add_argument("checkpoint", nargs="?", default=None, help="optional; random weights otherwise")
  parser.add_argument("--shape", type=int, nargs=2, default=[1024, 2048], metavar=("H", "W"))
  parser.add_argument("--repeat", type=int, default=200, help="timed images after warm-up")
  parser.add_argument("--log-interval", type=int, default=50)
  parser.add_argument("--cfg-options", nargs="*", default=[])
  args = parser.parse_args(argv)
  config = load_config(args.config)
  apply_overrides(config, args.cfg_options)
  segmentor = apis.init_segmentor(config, args.checkpoint)
  x = np.random.default_rng(0).normal(size=(1, *args.shape, 3)).astype(np.float32)
  start = time.perf_counter()
  jax.block_until_ready(apis.inference_logits(segmentor, x))
  print(f"compile + first run: {time.perf_counter() - start:.2f} s")
  for _ in range(WARMUP - 1):
    jax.block_until_ready(apis.inference_logits(segmentor, x))
  start = time.perf_counter()
  for i in range(1, args.repeat + 1):
    jax.block_until_ready(apis.inference_logits(segmentor, x))
    if i % args.log_interval == 0:
      print(f"Done image [{i:<3}/ {args.repeat}], fps: {i / (time.perf_counter() - start):.2f} img / s")
  elapsed = time.perf_counter() - start
  print(f"Overall fps: {args.repeat / elapsed:.2f} img / s ({elapsed / args.repeat:.3f} s / img)")


if __name__ == "__main__":
  main()
