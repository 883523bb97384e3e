"""Write README.md's model-zoo summary and configs/ZOO.md (every mmseg config with its published
result and command) from configs/zoo.py, i.e. from mmseg's config files and metafiles.

  python tools/zoo_table.py           # rewrite both
  python tools/zoo_table.py --check   # exit 1 if either differs from what it would write

tests/test_configs.py checks the checked-in files equal the output, so they cannot drift.
"""
import argparse
import ast
import collections
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import zoo  # noqa: E402

README = os.path.join(ROOT, "README.md")
ZOO_MD = os.path.join(ROOT, "configs", "ZOO.md")
BEGIN = "<!-- model zoo summary: written by tools/zoo_table.py, do not edit -->"
END = "<!-- end of model zoo summary -->"


def short_names() -> dict[str, str]:
  """mmseg config path -> ``configs/<algo>_<dataset>.py:<variant>``, read from the files calling
  ``zoo.shim_config(family, dataset, variant)``."""
  out = {}
  for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))):
    with open(path) as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr == "shim_config"):
        family, dataset = (a.value for a in node.args[:2])
        for variant, entry in zoo.variants(family, dataset).items():
          out[entry.config] = f"configs/{os.path.basename(path)}:{variant}"
  return out


def _result(value) -> str:
  return "" if value is None else f"{value:.2f}"


def readme_section() -> str:
  """The lines between BEGIN and END in README.md: the command form and a per-family summary."""
  entries = zoo.entries()
  shorts = short_names()
  families = collections.defaultdict(list)
  for e in entries:
    families[e.family].append(e)
  rows = []
  for family, group in sorted(families.items()):
    datasets = sorted({e.dataset for e in group if e.dataset})
    rows.append(f"| {family} | {len(group)} | {sum(e.single_scale is not None for e in group)} | "
                f"{sum(e.config in shorts for e in group)} | {', '.join(datasets)} |")
  return "\n".join([
      BEGIN,
      f"Every config file of MMSegmentation 0.30.0 ({len(entries)} in {len(families)} families, "
      "vendored unchanged in `configs/mmseg_configs/`)",
      "runs as it is, by its path under that folder, its bare name, or the path of any mmseg-style",
      "`.py` file of your own:",
      "",
      "```",
      "python main.py --config=configs/mmseg.py:pspnet/pspnet_r50-d8_512x1024_40k_cityscapes.py --workdir=DIR",
      "python main.py --config=configs/mmseg.py:pspnet_r50-d8_512x1024_40k_cityscapes --workdir=DIR",
      "python main.py --config=configs/pspnet_cityscapes.py:r50-d8_512x1024_40k --workdir=DIR  # short name",
      "```",
      "",
      "`configs/<algo>_<dataset>.py:<variant>` is a short name for mmseg's",
      "`configs/<algo>/<algo>_<variant>_<dataset>.py` (fcn, pspnet, deeplabv3, deeplabv3plus, upernet).",
      "[`configs/ZOO.md`](configs/ZOO.md) lists every config with its dataset, crop, schedule, mmseg's",
      "published single-scale and multi-scale (ms+flip) mIoU (Dice for the vessel sets) and its",
      "command. Both tables are written by `python tools/zoo_table.py` from mmseg's metafiles",
      "(`configs/mmseg_configs/<family>/<family>.yml`; `configs/results_not_in_metafiles.yml` adds the",
      "results mmseg's READMEs publish for configs its metafiles omit). Trained mmseg weights convert",
      "with `tools/convert_weights.py`.",
      "",
      "| family | configs | with published result | short names | datasets |",
      "|---|---|---|---|---|",
      *rows,
      END,
  ])


def zoo_md() -> str:
  """configs/ZOO.md: one row per mmseg config, grouped by family."""
  shorts = short_names()
  lines = ["# MMSegmentation 0.30.0's configs in segjax", "",
           "Written by `python tools/zoo_table.py` from `configs/zoo.py` (mmseg's config files and",
           "metafiles); do not edit. Published results are mmseg's: single-scale and ms+flip mIoU",
           "(Dice for the DRIVE/STARE/CHASE_DB1/HRF configs); an empty cell: mmseg publishes none.",
           "Run a row with its command; `short name` is the same config through",
           "`configs/<algo>_<dataset>.py`.", ""]
  families = collections.defaultdict(list)
  for e in zoo.entries():
    families[e.family].append(e)
  for family, group in sorted(families.items()):
    lines += [f"## {family}", "",
              "| config | dataset | crop | iterations | metric | single-scale | ms+flip | command | short name |",
              "|---|---|---|---|---|---|---|---|---|"]
    for e in group:
      short = f"`{shorts[e.config]}`" if e.config in shorts else ""
      lines.append(f"| {e.name} | {e.dataset} | {e.crop} | {e.iters or ''} | {e.metric} | "
                   f"{_result(e.single_scale)} | {_result(e.multi_scale)} | `{e.command}` | {short} |")
    lines.append("")
  return "\n".join(lines)


def readme_with_section(readme: str) -> str:
  if readme.count(BEGIN) != 1 or readme.count(END) != 1:
    raise ValueError(f"{README} must hold the markers {BEGIN!r} and {END!r} once each")
  head, rest = readme.split(BEGIN)
  _, tail = rest.split(END)
  return head + readme_section() + tail


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
  args = parser.parse_args(argv)
  with open(README) as f:
    readme = f.read()
  wanted = {README: readme_with_section(readme), ZOO_MD: zoo_md()}
  stale = []
  for path, text in wanted.items():
    current = open(path).read() if os.path.exists(path) else None
    if current != text:
      stale.append(path)
      if not args.check:
        with open(path, "w") as f:
          f.write(text)
  if args.check and stale:
    sys.exit(f"out of date: {', '.join(stale)}; run python tools/zoo_table.py")
  print("up to date" if not stale else f"wrote {', '.join(stale)}")


if __name__ == "__main__":
  main()
