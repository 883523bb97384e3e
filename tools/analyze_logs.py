"""Plot metrics from a run's metrics.jsonl (mmseg's tools/analyze_logs.py).

  python tools/analyze_logs.py work_dirs/run/metrics.jsonl --keys mIoU loss --out curves.png
"""
import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_series(path: str, key: str) -> tuple[list, list]:
  """(steps, values) of ``key`` over every record that has it."""
  steps, values = [], []
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      if record.get(key) is not None:
        steps.append(record["step"])
        values.append(record[key])
  return steps, values


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("logs", nargs="+", help="metrics.jsonl files")
  parser.add_argument("--keys", nargs="+", default=["loss"])
  parser.add_argument("--out", required=True, help="output image (png, pdf, ...)")
  parser.add_argument("--title")
  args = parser.parse_args(argv)
  fig, axes = plt.subplots(len(args.keys), 1, figsize=(7, 3 * len(args.keys)), squeeze=False)
  for ax, key in zip(axes[:, 0], args.keys):
    for log in args.logs:
      steps, values = read_series(log, key)
      if not steps:
        raise SystemExit(f"{log} has no '{key}' values")
      ax.plot(steps, values, marker="o" if len(steps) < 20 else None, label=log)
    ax.set_xlabel("iteration")
    ax.set_ylabel(key)
    ax.legend(fontsize="small")
  if args.title:
    fig.suptitle(args.title)
  fig.tight_layout()
  fig.savefig(args.out)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
