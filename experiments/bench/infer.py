"""Time test-mode inference of a config (compile separately), per call, for side-by-side tables.

  python experiments/bench/infer.py configs/mmseg.py:fastscnn/fast_scnn_lr0.12_8x4_160k_cityscapes.py \
      --batch 1 --shape 512 1024 --repeat 10

Same program as tools/benchmark.py (``apis.inference_logits``: the config's test_cfg, logits at
the input size), but prints the median and fastest of the timed calls and takes a batch size
(images/s at batch 8). The first calls after compiling are warm-up and not timed.
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

from segjax import apis  # noqa: E402
from segjax.config import load_config  # noqa: E402
from timing import call_times  # noqa: E402  (this script's folder)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("config")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--shape", type=int, nargs=2, default=[512, 1024], metavar=("H", "W"))
  parser.add_argument("--repeat", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  args = parser.parse_args(argv)
  segmentor = apis.init_segmentor(load_config(args.config))
  x = np.random.default_rng(0).normal(size=(args.batch, *args.shape, 3)).astype(np.float32)
  start = time.perf_counter()
  jax.block_until_ready(apis.inference_logits(segmentor, x))
  print(f"compile + first run: {time.perf_counter() - start:.2f} s")
  times = np.array(call_times(lambda: jax.block_until_ready(apis.inference_logits(segmentor, x)),
                              args.repeat, args.warmup))
  print(f"segjax infer: median {np.median(times):.3f} s, min {times.min():.3f}, max {times.max():.3f} "
        f"over {args.repeat} (batch {args.batch}: {args.batch / np.median(times):.2f} images/s)")


if __name__ == "__main__":
  main()
