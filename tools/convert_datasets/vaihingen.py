"""ISPRS Vaihingen (ISPRS_semantic_labeling_Vaihingen.zip,
ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip) -> data/vaihingen/{img_dir,ann_dir}/{train,val}.

  python tools/convert_datasets/vaihingen.py /path/to/vaihingen [-o data/vaihingen] [--clip_size 512] [--stride_size 256]

Images are the ``top/top_mosaic_09cm_area<N>.tif`` tiles, labels the eroded
``top_mosaic_09cm_area<N>_noBoundary.tif``; both are cut into ``area<N>_<x0>_<y0>_<x1>_<y1>.png``
clips with mmseg's rule; label colours become 0 (boundary, ignored) .. 6. mmseg's fixed area
lists pick train and val (344 train and 398 val clips with the defaults).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from segjax.data import prepare  # noqa: E402

TRAIN_AREAS = ("area1", "area11", "area13", "area15", "area17", "area21", "area23", "area26",
               "area28", "area3", "area30", "area32", "area34", "area37", "area5", "area7")


def tile_of(path: str) -> tuple[str, bool] | None:
  """'top/top_mosaic_09cm_area1.tif' -> ('area1', False); labels carry 'noBoundary'. Other tifs in
  the archives (DSMs, the boundary-labelled gts_for_participants) are skipped."""
  name = os.path.basename(path)
  is_label = "noBoundary" in name
  if not name.startswith("top_mosaic_09cm_area") or not (is_label or os.path.basename(os.path.dirname(path)) == "top"):
    return None
  return name.split("_")[3].replace(".tif", ""), is_label


def main(argv=None):
  parser = prepare.isprs_argument_parser(__doc__, os.path.join("data", "vaihingen"))
  args = parser.parse_args(argv)
  prepare.convert_isprs(args, tile_of, lambda tile: "train" if tile in TRAIN_AREAS else "val")


if __name__ == "__main__":
  main()
