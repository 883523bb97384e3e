"""CHASE_DB1 -> data/CHASE_DB1/{images,annotations}/{training,validation}.

  python tools/convert_datasets/chase_db1.py CHASEDB1.zip [-o data/CHASE_DB1]

The archive holds 28 images (``Image_01L.jpg``) with two masks each (``Image_01L_1stHO.png``,
``Image_01L_2ndHO.png``); as in mmseg the first 60 files (sorted, 20 images) go to ``training``,
the rest to ``validation``. Images become ``.png``, masks keep their names with values 0/1.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from segjax.data import prepare  # noqa: E402

TRAINING_LEN = 60


def main(argv=None):
  parser = prepare.argument_parser(__doc__, os.path.join("data", "CHASE_DB1"))
  parser.add_argument("dataset_path", help="CHASEDB1.zip")
  args = parser.parse_args(argv)
  jobs = []
  with tempfile.TemporaryDirectory(dir=args.tmp_dir) as tmp:
    srcs = prepare.files(prepare.extract(args.dataset_path, tmp), (".jpg", ".png"))
    for i, src in enumerate(srcs):
      split = "training" if i < TRAINING_LEN else "validation"
      stem, ext = os.path.splitext(os.path.basename(src))
      is_label = ext.lower() != ".jpg"
      dst = os.path.join(args.out_dir, "annotations" if is_label else "images", split, stem + ".png")
      jobs.append((prepare.vessel_label if is_label else prepare.copy_image, src, dst))
    prepare.parallel(jobs, args.nproc)
  print(f"wrote {len(jobs)} files under {args.out_dir}")


if __name__ == "__main__":
  main()
