"""LoveDA (Train.zip, Val.zip, Test.zip in one folder) -> data/loveDA/{img_dir,ann_dir}/{train,val,test}.

  python tools/convert_datasets/loveda.py /path/to/loveDA [-o data/loveDA]

``<Split>/{Rural,Urban}/images_png/*.png`` go to ``img_dir/<split>``, ``masks_png`` to
``ann_dir/<split>`` (Test has no masks). Masks keep LoveDA's values (0 = no data, ignored by
reduce_zero_label; 1..7 the classes).
"""
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from segjax.data import prepare  # noqa: E402


def main(argv=None):
  parser = prepare.argument_parser(__doc__, os.path.join("data", "loveDA"))
  parser.add_argument("dataset_path", help="folder holding Train.zip, Val.zip and Test.zip")
  args = parser.parse_args(argv)
  count = 0
  with tempfile.TemporaryDirectory(dir=args.tmp_dir) as tmp:
    for part in ("Train", "Val", "Test"):
      prepare.extract(os.path.join(args.dataset_path, f"{part}.zip"), tmp)
      for location in ("Rural", "Urban"):
        for kind, folder in (("images_png", "img_dir"), ("masks_png", "ann_dir")):
          if part == "Test" and kind == "masks_png":
            continue
          src_dir = prepare.require(os.path.join(tmp, part, location, kind), f"{part}.zip contents")
          dst_dir = os.path.join(args.out_dir, folder, part.lower())
          os.makedirs(dst_dir, exist_ok=True)
          for src in prepare.files(src_dir, ".png"):
            shutil.move(src, os.path.join(dst_dir, os.path.basename(src)))
            count += 1
  print(f"moved {count} files into {args.out_dir}")


if __name__ == "__main__":
  main()
