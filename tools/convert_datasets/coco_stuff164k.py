"""COCO-Stuff 164k -> ``annotations/{train2017,val2017}/<name>_labelTrainIds.png``.

  python tools/convert_datasets/coco_stuff164k.py data/coco_stuff164k [-o OUT] [--nproc 8]

Expects ``images/{train2017,val2017}/*.jpg`` (COCO 2017) and ``annotations/{train2017,val2017}/*.png``
(stuffthingmaps_trainval2017.zip: ids 0..181, 255 unlabeled). The 171 used ids are renumbered
0..170; everything else becomes 255 (ignored).
"""
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from segjax.data import prepare  # noqa: E402

# stuffthingmaps ids are COCO ids - 1; the 11 unused thing ids are left out.
UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
USED_IDS = [i for i in range(182) if i not in UNUSED_IDS]


def to_train_ids(ids: np.ndarray) -> np.ndarray:
  lut = np.full(256, 255, np.uint8)
  lut[USED_IDS] = np.arange(len(USED_IDS))
  return lut[ids]


def convert(src: str, dst: str) -> None:
  with Image.open(src) as im:
    prepare.save_png(to_train_ids(np.array(im, np.uint8)), dst)


def main(argv=None):
  parser = prepare.argument_parser(__doc__, out_help="default: coco_path", unpacks=False)
  parser.add_argument("coco_path", help="holds images/ and annotations/ as above")
  args = parser.parse_args(argv)
  out = args.out_dir or args.coco_path
  jobs = []
  for split in ("train2017", "val2017"):
    ann = prepare.require(os.path.join(args.coco_path, "annotations", split), "stuffthingmaps")
    for src in prepare.files(ann, ".png"):
      if not src.endswith("_labelTrainIds.png"):
        name = os.path.basename(src)[:-4]
        jobs.append((convert, src, os.path.join(out, "annotations", split, name + "_labelTrainIds.png")))
  prepare.parallel(jobs, args.nproc)
  print(f"converted {len(jobs)} label maps into {out}/annotations")


if __name__ == "__main__":
  main()
