"""DRIVE -> data/DRIVE/{images,annotations}/{training,validation}.

  python tools/convert_datasets/drive.py training.zip test.zip [-o data/DRIVE]

``training/images/21_training.tif`` -> ``images/training/21.png``,
``training/1st_manual/21_manual1.gif`` -> ``annotations/training/21_manual1.png`` (0/1); the test
archive becomes ``validation`` (1st and, if present, 2nd manual: ``01_manual2.png``).
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from segjax.data import prepare  # noqa: E402


def main(argv=None):
  parser = prepare.argument_parser(__doc__, os.path.join("data", "DRIVE"))
  parser.add_argument("training_path", help="training.zip")
  parser.add_argument("testing_path", help="test.zip")
  args = parser.parse_args(argv)
  jobs = []
  with tempfile.TemporaryDirectory(dir=args.tmp_dir) as tmp:
    for archive, part, split, tag in ((args.training_path, "training", "training", "_training"),
                                      (args.testing_path, "test", "validation", "_test")):
      root = os.path.join(prepare.extract(archive, os.path.join(tmp, part)), part)
      prepare.require(os.path.join(root, "images"), f"{part}/images inside {archive}")
      for src in prepare.files(os.path.join(root, "images"), (".tif", ".png", ".jpg")):
        stem = os.path.splitext(os.path.basename(src))[0].replace(tag, "")
        jobs.append((prepare.copy_image, src, os.path.join(args.out_dir, "images", split, stem + ".png")))
      for manual in ("1st_manual", "2nd_manual"):
        for src in prepare.files(os.path.join(root, manual), (".gif", ".png", ".tif")):
          stem = os.path.splitext(os.path.basename(src))[0]
          jobs.append((prepare.vessel_label, src, os.path.join(args.out_dir, "annotations", split, stem + ".png")))
    prepare.parallel(jobs, args.nproc)
  print(f"wrote {len(jobs)} files under {args.out_dir}")


if __name__ == "__main__":
  main()
