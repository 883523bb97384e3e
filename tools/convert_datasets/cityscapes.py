"""Write Cityscapes ``*_gtFine_labelTrainIds.png`` (19 train ids, 255 = ignore) and split lists.

  python tools/convert_datasets/cityscapes.py data/cityscapes [--gt-dir gtFine] [-o OUT] [--nproc 8]

Expects the official layout (``leftImg8bit/{train,val,test}/<city>/*_leftImg8bit.png`` and
``gtFine/<split>/<city>/*_gtFine_labelIds.png``, both in the official zips). mmseg draws the
train-id maps from the polygon JSONs with cityscapesscripts; the official ``*_labelIds.png`` are
drawn from the same polygons, so mapping their ids gives the same maps without that dependency.
Also writes ``train.txt``/``val.txt``/``test.txt`` listing the images (without suffix), as mmseg's
converter does.
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from segjax.data import prepare  # noqa: E402
from segjax.data.cityscapes_ids import LABEL_ID_TO_TRAIN_ID  # noqa: E402


def convert_one(path: str, out_path: str) -> None:
  ids = np.array(Image.open(path))
  lut = np.full(256, 255, np.uint8)
  for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
    lut[label_id] = train_id
  Image.fromarray(lut[ids]).save(out_path)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("cityscapes_path")
  parser.add_argument("--gt-dir", default="gtFine")
  parser.add_argument("-o", "--out-dir", help="where split lists go (default: cityscapes_path)")
  parser.add_argument("--nproc", default=1, type=int)
  args = parser.parse_args(argv)
  root = args.cityscapes_path
  gt_root = os.path.join(root, args.gt_dir)
  if not os.path.isdir(gt_root):
    sys.exit(f"{gt_root} does not exist: unzip gtFine_trainvaltest.zip into {root}")
  jobs = []
  for dirpath, _, files in os.walk(gt_root):
    for f in sorted(files):
      if f.endswith("_gtFine_labelIds.png"):
        src = os.path.join(dirpath, f)
        jobs.append((src, src.replace("_gtFine_labelIds.png", "_gtFine_labelTrainIds.png")))
  if not jobs:
    sys.exit(f"no *_gtFine_labelIds.png under {gt_root}")
  prepare.parallel([(convert_one, src, dst) for src, dst in jobs], args.nproc)
  out_dir = args.out_dir or root
  os.makedirs(out_dir, exist_ok=True)
  for split in ("train", "val", "test"):
    img_split = os.path.join(root, "leftImg8bit", split)
    if not os.path.isdir(img_split):
      continue
    names = sorted(os.path.relpath(os.path.join(d, f), img_split)[:-len("_leftImg8bit.png")]
                   for d, _, fs in os.walk(img_split) for f in fs if f.endswith("_leftImg8bit.png"))
    with open(os.path.join(out_dir, f"{split}.txt"), "w") as f:
      f.writelines(n + "\n" for n in names)
  print(f"converted {len(jobs)} label maps under {gt_root}")


if __name__ == "__main__":
  main()
