"""Segment one image and write the palette overlay (mmseg's demo/image_demo.py).

  python tools/image_demo.py demo.png CONVERTED_DIR --out-file result.png [--opacity 0.5]
  python tools/image_demo.py demo.png CONFIG.json CHECKPOINT.pth --out-file result.png
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segjax import xla_flags  # noqa: E402

xla_flags.apply_defaults()

from segjax import apis  # noqa: E402
from segjax.convert.mmseg_config import load_model_dict  # noqa: E402


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("img")
  parser.add_argument("config", help="converted directory, or an mmseg config (.py/.json)")
  parser.add_argument("checkpoint", nargs="?", default=None, help="segjax checkpoint or mmseg .pth")
  parser.add_argument("--out-file", required=True)
  parser.add_argument("--opacity", type=float, default=0.5)
  args = parser.parse_args(argv)
  if os.path.isdir(args.config):
    segmentor = apis.init_segmentor(args.config, args.checkpoint)
  else:
    segmentor = apis.init_segmentor(load_model_dict(args.config), args.checkpoint)
  seg = apis.inference_segmentor(segmentor, args.img)
  apis.show_result(segmentor, args.img, seg, opacity=args.opacity, out_file=args.out_file)
  print(f"wrote {args.out_file}")


if __name__ == "__main__":
  main()
