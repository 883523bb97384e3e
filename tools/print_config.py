"""Print a config with overrides applied (mmseg's tools/print_config.py).

  python tools/print_config.py configs/pspnet_cityscapes.py:r101-d8_769x769_80k [--cfg-options a.b=v ...] [--format json]

The default output is Python, mmcv-style: one ``key = dict(...)`` per top-level key, tuples as
tuples, every value written out (no YAML tags or anchors), so it pastes into a config file.
Saved as a file it is a CONFIG again, equal to this one (``python main.py
--config=configs/mmseg.py:printed.py``, or any tool's CONFIG), to run as it is or edited.
``--format json`` prints the same values as JSON (tuples become lists).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segjax.config import apply_overrides, load_config, to_python  # noqa: E402


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("config", help="configs/X.py[:variant] or an mmseg config .py")
  parser.add_argument("--cfg-options", nargs="*", default=[], help="a.b=value overrides")
  parser.add_argument("--format", choices=["py", "json"], default="py")
  args = parser.parse_args(argv)
  config = load_config(args.config)
  apply_overrides(config, args.cfg_options)
  if args.format == "py":
    print(to_python(config), end="")
  else:
    print(json.dumps(config.to_dict(), indent=2))


if __name__ == "__main__":
  main()
