"""Pascal Context (VOC 2010) -> ``VOC2010/SegmentationClassContext/*.png`` (60 classes, 0 =
background) and ``ImageSets/SegmentationContext/{train,val}.txt``.

  python tools/convert_datasets/pascal_context.py data/VOCdevkit data/VOCdevkit/VOC2010/trainval_merged.json \\
      [--label-dir trainval] [-o OUT]

The split comes from ``trainval_merged.json`` (its ``images`` with ``phase`` train/val). The masks
come from the Detail API (``detail.Detail(...).getMask``, as mmseg) when it is installed, otherwise
from the official PASCAL-Context 459-class ``LabelMap`` ``.mat`` files (``trainval.tar.gz``) in
``--label-dir``. Both use the 459-class ids; the 59 frequent classes map to 1..59 in mmseg's sorted
order and every other id to background 0.
"""
import json
import os
import sys

import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from segjax.data import prepare  # noqa: E402

# The 459-class ids of mmseg's 60 classes (background first), sorted as mmseg's converter.
CONTEXT_IDS = np.sort(np.array([
    0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159, 416, 33, 162,
    420, 454, 295, 296, 427, 44, 45, 46, 308, 59, 440, 445, 31, 232, 65, 354, 424, 68, 326, 72, 458,
    34, 207, 80, 355, 85, 347, 220, 349, 360, 98, 187, 104, 105, 366, 189, 368, 113, 115]))


def to_context60(label_map: np.ndarray) -> np.ndarray:
  lut = np.zeros(max(int(label_map.max()) + 1, 460), np.uint8)
  lut[CONTEXT_IDS] = np.arange(len(CONTEXT_IDS), dtype=np.uint8)
  return lut[label_map]


def convert_mat(src: str, dst: str) -> None:
  from scipy.io import loadmat
  prepare.save_png(to_context60(loadmat(src)["LabelMap"].astype(np.int64)), dst)


def main(argv=None):
  parser = prepare.argument_parser(__doc__, out_help="default: devkit_path/VOC2010/SegmentationClassContext", unpacks=False)
  parser.add_argument("devkit_path", help="VOCdevkit (holding VOC2010/JPEGImages)")
  parser.add_argument("json_path", help="trainval_merged.json")
  parser.add_argument("--label-dir", help="459-class LabelMap .mat files (when detail is not installed)")
  args = parser.parse_args(argv)
  voc = os.path.join(args.devkit_path, "VOC2010")
  out_dir = args.out_dir or os.path.join(voc, "SegmentationClassContext")
  with open(prepare.require(args.json_path, "trainval_merged.json")) as f:
    images = json.load(f)["images"]
  try:
    from detail import Detail  # the Detail API, optional
  except ImportError:
    Detail = None
  if Detail is None and not args.label_dir:
    prepare.fail("the Detail API (github.com/zhanghang1989/detail-api) is not installed: give "
                 "--label-dir with PASCAL-Context's LabelMap .mat files instead")
  for phase in ("train", "val"):
    names = sorted(os.path.splitext(im["file_name"])[0] for im in images if im.get("phase") == phase)
    if Detail is not None:
      detail = Detail(args.json_path, os.path.join(voc, "JPEGImages"), phase)
      for img in tqdm(detail.getImgs(), desc=f"{phase} label maps", unit="file", disable=None):
        prepare.save_png(to_context60(detail.getMask(img)),
                         os.path.join(out_dir, os.path.splitext(img["file_name"])[0] + ".png"))
    else:
      jobs = [(convert_mat, prepare.require(os.path.join(args.label_dir, n + ".mat"), "LabelMap"),
               os.path.join(out_dir, n + ".png")) for n in names]
      prepare.parallel(jobs, args.nproc, desc=f"{phase} label maps")
    prepare.write_list(os.path.join(voc, "ImageSets", "SegmentationContext", f"{phase}.txt"), names)
    print(f"{phase}: {len(names)} label maps in {out_dir}")


if __name__ == "__main__":
  main()
