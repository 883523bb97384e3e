"""Print a config with overrides applied (mmseg's tools/print_config.py).

  python tools/print_config.py configs/pspnet_cityscapes.py:r101-d8_769x769_80k [--cfg-options a.b=v ...]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segjax.config import apply_overrides, load_config  # noqa: E402


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("config", help="configs/X.py[:variant]")
  parser.add_argument("--cfg-options", nargs="*", default=[], help="a.b=value overrides")
  args = parser.parse_args(argv)
  config = load_config(args.config)
  apply_overrides(config, args.cfg_options)
  print(config)


if __name__ == "__main__":
  main()
