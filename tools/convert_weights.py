"""Convert an MMSegmentation checkpoint into a segjax directory.

  python tools/convert_weights.py pspnet_r50-d8.pth OUT_DIR --mmseg-config pspnet_r50-d8_512x1024_40k_cityscapes.py

``--mmseg-config`` is the mmseg config file (``_base_`` inheritance resolved, no mmcv needed) or a
JSON dump of its ``model`` dict. OUT_DIR receives ``config.json`` and an orbax checkpoint; use it
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
from segjax.convert.mmseg_config import load_mmseg_config  # noqa: E402
from segjax.models import build_segmentor, to_plain  # noqa: E402


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("checkpoint", help="mmseg .pth checkpoint")
  parser.add_argument("out_dir", help="output directory")
  parser.add_argument("--mmseg-config", required=True, help="mmseg config .py or model-dict .json")
  args = parser.parse_args(argv)
  cfg = load_mmseg_config(args.mmseg_config)
  model_cfg = to_plain(cfg["model"])
  model = build_segmentor(model_cfg)
  variables = convert_checkpoint(args.checkpoint, model)
  pipeline = (cfg.get("data", {}).get("test", {}) or {}).get("pipeline") or cfg.get("test_pipeline") or []
  save_converted(args.out_dir, model_cfg, variables, test_settings(pipeline))
  print(f"wrote {args.out_dir}: config.json and checkpoints/0")


if __name__ == "__main__":
  main()
