"""ISPRS Potsdam (2_Ortho_RGB.zip, 5_Labels_all_noBoundary.zip) -> data/potsdam/{img_dir,ann_dir}/{train,val}.

  python tools/convert_datasets/potsdam.py /path/to/potsdam [-o data/potsdam] [--clip_size 512] [--stride_size 256]

Each 6000x6000 tile ``top_potsdam_2_10_RGB.tif`` / ``..._label_noBoundary.tif`` is cut into
``2_10_<x0>_<y0>_<x1>_<y1>.png`` clips with mmseg's rule (``segjax.data.prepare.isprs_boxes``);
label colours become 0 (boundary, ignored) .. 6. mmseg's fixed tile lists pick train and val
(3456 train and 2016 val clips with the defaults).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from segjax.data import prepare  # noqa: E402

TRAIN_TILES = ("2_10", "2_11", "2_12", "3_10", "3_11", "3_12", "4_10", "4_11", "4_12", "5_10", "5_11",
               "5_12", "6_10", "6_11", "6_12", "6_7", "6_8", "6_9", "7_10", "7_11", "7_12", "7_7",
               "7_8", "7_9")


def tile_of(path: str) -> tuple[str, bool]:
  """'top_potsdam_2_10_RGB.tif' -> ('2_10', is_label)."""
  parts = os.path.basename(path).split("_")
  return f"{parts[2]}_{parts[3]}", "label" in os.path.basename(path)


def main(argv=None):
  parser = prepare.isprs_argument_parser(__doc__, os.path.join("data", "potsdam"))
  args = parser.parse_args(argv)
  prepare.convert_isprs(args, tile_of, lambda tile: "train" if tile in TRAIN_TILES else "val")


if __name__ == "__main__":
  main()
