"""FLOPs of one training image (forward + backward + update) from XLA's cost analysis, and the
images/s that implies on accelerators at a given MFU. Nothing is executed.

  python experiments/bench/train_flops.py configs/pspnet_cityscapes.py:r50-d8_512x1024_40k --crop 512 1024
"""
import argparse
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from segjax.config import load_config, to_plain  # noqa: E402
from segjax.models import build_segmentor  # noqa: E402
from segjax.train import loop, optim  # noqa: E402

# Dense bf16 peak, TFLOP/s (vendor data sheets: A100 SXM, H100 SXM).
PEAK = {"A100": 312e12, "H100": 989e12}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("config")
  parser.add_argument("--crop", type=int, nargs=2, default=[512, 1024])
  args = parser.parse_args(argv)
  config = load_config(args.config)
  model_cfg = to_plain(config.model)
  model = build_segmentor(model_cfg)
  tx, schedule = optim.build_optimizer(config)
  state = jax.eval_shape(functools.partial(loop.create_train_state, model, tx), jax.random.PRNGKey(0))
  batch = {"img": jax.ShapeDtypeStruct((1, *args.crop, 3), np.float32),
           "gt_semantic_seg": jax.ShapeDtypeStruct((1, *args.crop), np.int32)}
  step = jax.jit(functools.partial(loop.train_step, model=model, tx=tx, schedule=schedule))
  analysis = step.lower(state, batch).compile().cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  flops = float(analysis["flops"])
  print(f"{args.config} {args.crop[0]}x{args.crop[1]}: {flops / 1e12:.2f} TFLOP per training image")
  for name, peak in PEAK.items():
    for mfu in (0.4, 0.6):
      print(f"  {name} at {int(mfu * 100)}% MFU: {peak * mfu / flops:.1f} images/s")


if __name__ == "__main__":
  main()
