"""Time the jitted training step of a config (compile separately), for experiments/bench/README.md.

  python experiments/bench/train_step.py configs/pspnet_cityscapes.py:r50-d8_512x1024_40k \
      --batch 2 --crop 512 512 --repeat 5
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
import numpy as np  # noqa: E402

from segjax.config import load_config, to_plain  # noqa: E402
from segjax.models import build_segmentor, init_variables  # noqa: E402
from segjax.models.segmentors.encoder_decoder import final_decode_head  # noqa: E402
from segjax.train import loop, optim  # noqa: E402


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("config")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--crop", type=int, nargs=2, default=[512, 512])
  parser.add_argument("--repeat", type=int, default=5)
  parser.add_argument("--compute-dtype", default="float32", help="bfloat16: mixed precision")
  args = parser.parse_args(argv)
  config = load_config(args.config)
  model_cfg = to_plain(config.model)
  model = build_segmentor(model_cfg)
  # the parameter tree's shapes: paramwise_cfg (the transformers' AdamW) needs them
  param_shapes = jax.eval_shape(lambda r: init_variables(model, r)["params"], jax.random.PRNGKey(0))
  tx, schedule = optim.build_optimizer(config, param_shapes)
  state = loop.create_train_state(model, tx, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  num_classes = final_decode_head(model_cfg)["num_classes"]
  batch = {"img": rng.normal(size=(args.batch, *args.crop, 3)).astype(np.float32),
           "gt_semantic_seg": rng.integers(0, num_classes, size=(args.batch, *args.crop)).astype(np.int32)}
  step = jax.jit(functools.partial(loop.train_step, model=model, tx=tx, schedule=schedule,
                                   compute_dtype=jax.numpy.dtype(args.compute_dtype)),
                 donate_argnums=0)
  start = time.perf_counter()
  compiled = xla_flags.compile_and_trim(step, state, batch)
  print(f"compile: {time.perf_counter() - start:.1f} s")
  times = []
  for _ in range(args.repeat + 1):
    start = time.perf_counter()
    state, logs = compiled(state, batch)
    jax.block_until_ready(logs["loss"])
    times.append(time.perf_counter() - start)
  times = np.array(times[1:])  # the first call also allocates
  print(f"train step: median {np.median(times):.2f} s, min {times.min():.2f}, max {times.max():.2f} "
        f"over {args.repeat}")


if __name__ == "__main__":
  main()
