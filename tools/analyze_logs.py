"""Plot metrics from a run's metrics.jsonl (mmseg's tools/analyze_logs.py).

  python tools/analyze_logs.py work_dirs/run/metrics.jsonl --keys mIoU loss sec_per_step --out curves.png

Values are plotted as written: evaluation metrics (aAcc, mIoU, ...) as fractions, ``sec_per_step``
in seconds, ``*acc_seg`` in percent (README, "Running"). Rows written before ``time`` was split
into ``sec_per_step`` (train rows) and ``timestamp`` (all rows) are read under the new names, so
a run resumed across that change plots as one.
"""
import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_records(path: str) -> list[dict]:
  """The rows of a metrics.jsonl, older rows under today's field names."""
  records = []
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      if "time" in record:  # older rows: seconds per step in train rows, Unix time in the others
        record["sec_per_step" if record.get("mode") == "train" else "timestamp"] = record.pop("time")
      records.append(record)
  return records


def read_series(records: list[dict], key: str) -> tuple[list, list]:
  """(steps, values) of ``key`` over every record that has it."""
  found = [r for r in records if r.get(key) is not None]
  return [r["step"] for r in found], [r[key] for r in found]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("logs", nargs="+", help="metrics.jsonl files")
  parser.add_argument("--keys", nargs="+", default=["loss"])
  parser.add_argument("--out", required=True, help="output image (png, pdf, ...)")
  parser.add_argument("--title")
  args = parser.parse_args(argv)
  records = {log: read_records(log) for log in args.logs}
  fig, axes = plt.subplots(len(args.keys), 1, figsize=(7, 3 * len(args.keys)), squeeze=False)
  for ax, key in zip(axes[:, 0], args.keys):
    for log in args.logs:
      steps, values = read_series(records[log], key)
      if not steps:
        keys = sorted({k for r in records[log] for k in r} - {"mode", "step", "timestamp"})
        raise SystemExit(f"{log} has no '{key}' values; its keys: {', '.join(keys)}")
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
