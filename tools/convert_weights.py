"""Convert an MMSegmentation checkpoint into a segjax directory.

  python tools/convert_weights.py pspnet_r50-d8.pth OUT_DIR --mmseg-config pspnet_r50-d8_512x1024_40k_cityscapes.py

``--mmseg-config`` is the mmseg config file (``_base_`` inheritance resolved, no mmcv needed), a
JSON dump of its ``model`` dict, or a segjax config (``configs/X.py[:variant]``, e.g.
``configs/pspnet_cityscapes.py:r18-d8_512x1024_80k``). OUT_DIR receives ``config.json`` and an orbax checkpoint; use it
with ``segjax.apis.init_segmentor(OUT_DIR)`` or ``--config.load_from=OUT_DIR``. Fails, naming the
keys, when the checkpoint does not fit the model.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segjax import xla_flags  # noqa: E402

xla_flags.apply_defaults()

from segjax.apis import save_converted, test_settings  # noqa: E402
from segjax.convert import convert_checkpoint  # noqa: E402
from segjax.config import defines_get_config, load_config  # noqa: E402
from segjax.convert.mmseg_config import load_mmseg_config  # noqa: E402
from segjax.models import build_segmentor, to_plain  # noqa: E402


def model_and_test_pipeline(spec: str) -> tuple[dict, list]:
  """The model dict and test pipeline of a segjax config spec or an mmseg config / model .json."""
  path = spec.partition(":")[0]
  if path.endswith(".py") and defines_get_config(path):
    config = load_config(spec)
    pipeline = to_plain(config.data.test.pipeline) if "data" in config else []
    return to_plain(config.model), list(pipeline)
  cfg = load_mmseg_config(spec)
  pipeline = (cfg.get("data", {}).get("test", {}) or {}).get("pipeline") or cfg.get("test_pipeline") or []
  return to_plain(cfg["model"]), pipeline


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("checkpoint", help="mmseg .pth checkpoint")
  parser.add_argument("out_dir", help="output directory")
  parser.add_argument("--mmseg-config", required=True,
                       help="mmseg config .py, model-dict .json or segjax configs/X.py[:variant]")
  args = parser.parse_args(argv)
  model_cfg, pipeline = model_and_test_pipeline(args.mmseg_config)
  model = build_segmentor(model_cfg)
  variables = convert_checkpoint(args.checkpoint, model)
  save_converted(args.out_dir, model_cfg, variables, test_settings(pipeline))
  print(f"wrote {args.out_dir}: config.json and checkpoints/0")


if __name__ == "__main__":
  main()
