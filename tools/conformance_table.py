"""README's table of mmseg configs that run in segjax, per mmseg config folder.

  python tools/conformance_table.py [--reference ../shared/reference] [--write README.md]

Prints the table (or replaces README's section between its marker comments with it). A config
runs when segjax has every class it names and its model builds; tests/test_conformance.py checks
that each such model has mmseg's parameter count and takes mmseg's state_dict key for key, and
that README's table equals this output.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from segjax.convert import conformance  # noqa: E402


def replace_section(text: str, section: str) -> str:
  """``text`` with its conformance section (marker comments included) replaced by ``section``."""
  start, end = text.find(conformance.TABLE_START), text.find(conformance.TABLE_END)
  if start < 0 or end < start:
    raise ValueError(f"README has no section between {conformance.TABLE_START!r} and "
                     f"{conformance.TABLE_END!r}")
  return text[:start] + section + text[end + len(conformance.TABLE_END):]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--reference", default=os.path.join(ROOT, "..", "shared", "reference"),
                      help="folder with mmseg_configs/ and mmseg_zoo/")
  parser.add_argument("--write", metavar="README", help="replace this file's table section")
  args = parser.parse_args(argv)
  counts = conformance.family_counts(args.reference, conformance.load_index(args.reference))
  section = conformance.readme_section(counts)
  if not args.write:
    print(section)
    return
  with open(args.write) as f:
    text = f.read()
  with open(args.write, "w") as f:
    f.write(replace_section(text, section))


if __name__ == "__main__":
  main()
