"""Check a config's datasets before training: every problem names the file.

  python tools/check_dataset.py configs/pspnet_cityscapes.py [--split train val] [--cfg-options ...]

Reports images without labels and labels without images, unreadable files, image/label size
mismatches, RGB label images, label values outside [0, num_classes) U {ignore_index} (after
reduce_zero_label), and prints the class distribution. Exit status 1 when a problem was found.
A progress bar goes to stderr when it is a terminal; the report goes to stdout.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segjax.config import apply_overrides, load_config  # noqa: E402
from segjax.models.segmentors.encoder_decoder import final_decode_head  # noqa: E402
from segjax.data.check import check_dataset, class_table  # noqa: E402
from segjax.data.datasets import build_split  # noqa: E402


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("config", help="configs/X.py[:variant]")
  parser.add_argument("--split", nargs="+", default=["train", "val"], choices=["train", "val"])
  parser.add_argument("--cfg-options", nargs="*", default=[])
  args = parser.parse_args(argv)
  config = load_config(args.config)
  apply_overrides(config, args.cfg_options)
  num_classes = final_decode_head(config.model)["num_classes"]
  found = False
  for split in args.split:
    dataset = build_split(config.data, split)
    problems, counts = check_dataset(dataset, num_classes, progress=f"checking {split}")
    print(f"== {split}: {len(dataset)} images in {dataset.name}, {len(problems)} problem(s)")
    for p in problems:
      print("  " + p)
    print(class_table(dataset.CLASSES, counts))
    found |= bool(problems)
  sys.exit(1 if found else 0)


if __name__ == "__main__":
  main()
