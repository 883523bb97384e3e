"""FLOPs and parameters of a config's model from XLA's cost analysis (mmseg's tools/get_flops.py).

  python tools/get_flops.py configs/pspnet_cityscapes.py --shape 1024 2048

XLA counts a multiply-add as two FLOPs; mmcv's ``get_model_complexity_info`` (what mmseg's table
shows as "Flops") counts it as one, so both are printed. Nothing is executed: the model is only
lowered and compiled for the shape.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segjax import xla_flags  # noqa: E402

xla_flags.apply_defaults()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from segjax.config import apply_overrides, load_config  # noqa: E402
from segjax.models import build_segmentor  # noqa: E402
from segjax.models.segmentors.inference import encode_decode  # noqa: E402


def model_flops(model, shape) -> tuple[float, int]:
  """(XLA FLOPs of one whole-image forward at ``shape`` (N, H, W, C), parameter count)."""
  x = jax.ShapeDtypeStruct(shape, np.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
  compiled = jax.jit(lambda v, x: encode_decode(model, v, x)).lower(variables, x).compile()
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(variables["params"]))
  return float(analysis["flops"]), params


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("config", help="configs/X.py[:variant]")
  parser.add_argument("--shape", type=int, nargs="+", default=[2048, 1024], help="H W (or one size)")
  parser.add_argument("--cfg-options", nargs="*", default=[])
  args = parser.parse_args(argv)
  h, w = (args.shape * 2)[:2]
  config = load_config(args.config)
  apply_overrides(config, args.cfg_options)
  flops, params = model_flops(build_segmentor(config.model), (1, h, w, 3))
  print("=" * 30)
  print(f"Input shape: (3, {h}, {w})")
  print(f"Flops: {flops / 2e9:.2f} GFLOPs (mmcv convention, multiply-adds); XLA: {flops / 1e9:.2f} GFLOP")
  print(f"Params: {params / 1e6:.2f} M")
  print("=" * 30)


if __name__ == "__main__":
  main()
