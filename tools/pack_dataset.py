"""Pack a config's datasets into TFDS array_record shards for multi-host or remote storage.

  python tools/pack_dataset.py configs/pspnet_cityscapes.py OUT_DIR [--split train val] [--cfg-options ...]

Writes OUT_DIR/segjax_packed/1.0.0 (tensorflow-datasets layout; no TensorFlow needed) holding the
original image and label files of each split plus the dataset spec. Train (or test) from it with
``--config.data.packed_dir=OUT_DIR/segjax_packed/1.0.0``: the splits keep their pipelines and
read the packed records instead of the folders.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segjax.config import apply_overrides, load_config  # noqa: E402
from segjax.data.datasets import build_dataset  # noqa: E402


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("config", help="configs/X.py[:variant]")
  parser.add_argument("out_dir")
  parser.add_argument("--split", nargs="+", default=["train", "val"], choices=["train", "val"])
  parser.add_argument("--cfg-options", nargs="*", default=[])
  args = parser.parse_args(argv)
  from segjax.data import packed
  config = load_config(args.config)
  apply_overrides(config, args.cfg_options)
  path = packed.pack({split: build_dataset(config.data[split]) for split in args.split}, args.out_dir)
  print(f"packed {', '.join(args.split)} into {path}; use it with --config.data.packed_dir={path}")


if __name__ == "__main__":
  main()
