"""COCO-Stuff 10k (cocostuff-10k-v1.1.zip, unpacked) -> mmseg's layout.

  python tools/convert_datasets/coco_stuff10k.py data/coco_stuff10k [-o OUT] [--nproc 8]

Reads ``images/*.jpg``, ``annotations/*.mat`` (``S``: COCO ids 0..182, 0 unlabeled) and
``imageLists/{train,test}.txt``; moves the images to ``images/{train2014,test2014}``, writes
``annotations/{train2014,test2014}/<name>_labelTrainIds.png`` with the 171 used ids renumbered
1..171 (0 stays unlabeled; the configs ignore it with reduce_zero_label) and the split lists
``imagesLists/{train,test}.txt`` the configs read.
"""
import os
import shutil
import sys

import numpy as np
from scipy.io import loadmat

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from segjax.data import prepare  # noqa: E402

# COCO's 11 thing ids that no annotation uses; the other 171 of 1..182 are the classes.
UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
USED_IDS = [i for i in range(1, 183) if i not in UNUSED_IDS]
COCO_LEN = 10000


def to_train_ids(coco_ids: np.ndarray) -> np.ndarray:
  lut = np.zeros(256, np.uint8)  # 0 (unlabeled) and unused ids -> 0
  lut[USED_IDS] = np.arange(1, len(USED_IDS) + 1)
  return lut[coco_ids]


def convert(src_img: str, src_mat: str, dst_img: str, dst_label: str) -> None:
  shutil.move(src_img, dst_img)
  prepare.save_png(to_train_ids(loadmat(src_mat)["S"].astype(np.uint8)), dst_label)


def main(argv=None):
  parser = prepare.argument_parser(__doc__, out_help="default: coco_path", unpacks=False)
  parser.add_argument("coco_path", help="the unpacked cocostuff-10k-v1.1")
  args = parser.parse_args(argv)
  out = args.out_dir or args.coco_path
  jobs, total = [], 0
  for split, folder in (("train", "train2014"), ("test", "test2014")):
    with open(prepare.require(os.path.join(args.coco_path, "imageLists", f"{split}.txt"), "split list")) as f:
      names = [line.strip() for line in f if line.strip()]
    total += len(names)
    os.makedirs(os.path.join(out, "images", folder), exist_ok=True)
    for n in names:
      jobs.append((convert, prepare.require(os.path.join(args.coco_path, "images", n + ".jpg"), "image"),
                   prepare.require(os.path.join(args.coco_path, "annotations", n + ".mat"), "annotation"),
                   os.path.join(out, "images", folder, n + ".jpg"),
                   os.path.join(out, "annotations", folder, n + "_labelTrainIds.png")))
    prepare.write_list(os.path.join(out, "imagesLists", f"{split}.txt"), names)
  prepare.parallel(jobs, args.nproc)
  note = "" if total == COCO_LEN else f" (the full set has {COCO_LEN})"
  print(f"converted {total} images{note} into {out}")


if __name__ == "__main__":
  main()
