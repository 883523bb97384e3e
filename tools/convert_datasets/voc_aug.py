"""Pascal VOC 2012 + SBD aug: SBD's ``.mat`` class maps -> ``SegmentationClassAug/*.png`` and the
``trainaug.txt`` / ``aug.txt`` split lists.

  python tools/convert_datasets/voc_aug.py data/VOCdevkit data/VOCdevkit/VOCaug [-o OUT] [--nproc 8]

Reads ``VOCaug/dataset/cls/*.mat`` (``GTcls.Segmentation``) and ``VOCaug/dataset/{train,val}.txt``;
``aug.txt`` lists SBD images in neither VOC train nor val, ``trainaug.txt`` VOC train plus those
(10582 names on the full data, as mmseg checks).
"""
import os
import sys

import numpy as np
from scipy.io import loadmat

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from segjax.data import prepare  # noqa: E402

AUG_LEN = 10582


def convert_mat(src: str, dst: str) -> None:
  mask = loadmat(src)["GTcls"][0]["Segmentation"][0].astype(np.uint8)
  prepare.save_png(mask, dst)


def read_list(path: str) -> list[str]:
  with open(prepare.require(path, "split list")) as f:
    return [line.strip() for line in f if line.strip()]


def main(argv=None):
  parser = prepare.argument_parser(__doc__, out_help="default: devkit_path/VOC2012/SegmentationClassAug", unpacks=False)
  parser.add_argument("devkit_path", help="VOCdevkit (holding VOC2012)")
  parser.add_argument("aug_path", help="the unpacked SBD benchmark (holding dataset/cls)")
  args = parser.parse_args(argv)
  out_dir = args.out_dir or os.path.join(args.devkit_path, "VOC2012", "SegmentationClassAug")
  cls_dir = prepare.require(os.path.join(args.aug_path, "dataset", "cls"), "SBD class maps")
  mats = prepare.files(cls_dir, ".mat")
  prepare.parallel([(convert_mat, m, os.path.join(out_dir, os.path.basename(m)[:-4] + ".png"))
                    for m in mats], args.nproc)
  sbd = read_list(os.path.join(args.aug_path, "dataset", "train.txt"))
  sbd += read_list(os.path.join(args.aug_path, "dataset", "val.txt"))
  seg_dir = os.path.join(args.devkit_path, "VOC2012", "ImageSets", "Segmentation")
  voc_train = read_list(os.path.join(seg_dir, "train.txt"))
  voc_val = read_list(os.path.join(seg_dir, "val.txt"))
  trainaug = sorted(set(voc_train + sbd) - set(voc_val))
  aug = sorted(set(sbd) - set(voc_train + voc_val))
  prepare.write_list(os.path.join(seg_dir, "trainaug.txt"), trainaug)
  prepare.write_list(os.path.join(seg_dir, "aug.txt"), aug)
  note = "" if len(trainaug) == AUG_LEN else f" (the full VOC + SBD gives {AUG_LEN})"
  print(f"converted {len(mats)} maps into {out_dir}; trainaug.txt: {len(trainaug)} names{note}, "
        f"aug.txt: {len(aug)}")


if __name__ == "__main__":
  main()
