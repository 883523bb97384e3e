"""Segment one image and write the palette overlay (mmseg's demo/image_demo.py).

  python tools/image_demo.py demo.png CONVERTED_DIR --out-file result.png [--opacity 0.5]
  python tools/image_demo.py demo.png configs/pspnet_synthetic.py WORKDIR --out-file result.png
  python tools/image_demo.py demo.png MMSEG_CONFIG.py CHECKPOINT.pth --out-file result.png

CONFIG is anything ``segjax.apis.init_segmentor`` takes: a converted directory, a segjax config
(``configs/X.py[:variant]``), an mmseg ``.py`` config or a ``.json`` model dict; CHECKPOINT a
segjax workdir or checkpoint folder (a model trained with segjax), or an mmseg ``.pth``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segjax import xla_flags  # noqa: E402

xla_flags.apply_defaults()

from segjax import apis  # noqa: E402


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("img")
  parser.add_argument("config", help="converted directory, segjax config, or mmseg config (.py/.json)")
  parser.add_argument("checkpoint", nargs="?", default=None,
                      help="segjax workdir/checkpoint folder, or mmseg .pth")
  parser.add_argument("--out-file", required=True)
  parser.add_argument("--opacity", type=float, default=0.5)
  args = parser.parse_args(argv)
  segmentor = apis.init_segmentor(args.config, args.checkpoint)
  seg = apis.inference_segmentor(segmentor, args.img)
  apis.show_result(segmentor, args.img, seg, opacity=args.opacity, out_file=args.out_file)
  print(f"wrote {args.out_file}")


if __name__ == "__main__":
  main()
