"""Side-by-side runs of segjax and MMSegmentation for the model families of issues 19-23.

  MMSEG_PYTHON=/tmp/mmvenv/bin/python python experiments/bench/families.py --rows 23 21 --rounds 2 \
      --out /tmp/families.jsonl
  python experiments/bench/families.py --summary /tmp/families.jsonl

One process at a time, segjax and mmseg interleaved per row and round (segjax, mmseg, segjax, ...);
each run is its own process under ``/usr/bin/time`` (peak RSS) and prints the median and fastest
of its timed calls (experiments/bench/infer.py, train_step.py, mmseg_reference.py). Each result
is appended to ``--out`` as one JSON line; ``--summary`` prints the README table: per side the
median over runs of the per-run medians, the fastest call, the largest peak RSS, and the ratios.
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MM = "configs/mmseg.py:"
CITY = (512, 1024)
SQUARE = (512, 512)

# (issue, name, config, mode, shape, batch, repeat, sides)
ROWS = [
  (23, "BiSeNetV2", "bisenetv2/bisenetv2_fcn_4x4_1024x1024_160k_cityscapes.py", "infer", CITY, 1, 10, "both"),
  (23, "Fast-SCNN", "fastscnn/fast_scnn_lr0.12_8x4_160k_cityscapes.py", "infer", CITY, 1, 10, "both"),
  (23, "STDC1", "stdc/stdc1_512x1024_80k_cityscapes.py", "infer", CITY, 1, 10, "both"),
  (23, "MobileNetV3-LRASPP", "mobilenet_v3/lraspp_m-v3-d8_512x1024_320k_cityscapes.py", "infer", CITY, 1, 10, "both"),
  (23, "ERFNet", "erfnet/erfnet_fcn_4x4_512x1024_160k_cityscapes.py", "infer", CITY, 1, 10, "both"),
  (23, "CGNet", "cgnet/cgnet_512x1024_60k_cityscapes.py", "infer", CITY, 1, 10, "both"),
  (21, "SegFormer-B0", "segformer/segformer_mit-b0_512x512_160k_ade20k.py", "infer", SQUARE, 1, 10, "both"),
  (21, "Swin-T UPerNet", "swin/upernet_swin_tiny_patch4_window7_512x512_160k_ade20k_pretrain_224x224_1K.py", "infer", SQUARE, 1, 5, "both"),
  (21, "SegFormer-B0", "segformer/segformer_mit-b0_512x512_160k_ade20k.py", "train", SQUARE, 2, 3, "both"),
  (21, "Swin-T UPerNet", "swin/upernet_swin_tiny_patch4_window7_512x512_160k_ade20k_pretrain_224x224_1K.py", "train", SQUARE, 2, 3, "both"),
  (19, "DANet R50-D8", "danet/danet_r50-d8_512x1024_40k_cityscapes.py", "infer", CITY, 1, 3, "both"),
  (19, "DANet R50-D8", "danet/danet_r50-d8_512x1024_40k_cityscapes.py", "train", SQUARE, 2, 2, "both"),
  (20, "OCRNet HR18", "ocrnet/ocrnet_hr18_512x1024_40k_cityscapes.py", "infer", CITY, 1, 3, "both"),
  (20, "OCRNet HR18", "ocrnet/ocrnet_hr18_512x1024_40k_cityscapes.py", "train", SQUARE, 2, 2, "both"),
  (22, "ViT-B UPerNet MLN", "vit/upernet_vit-b16_mln_512x512_80k_ade20k.py", "infer", SQUARE, 1, 3, "both"),
  (22, "ViT-B UPerNet MLN", "vit/upernet_vit-b16_mln_512x512_80k_ade20k.py", "train", SQUARE, 2, 2, "both"),
]
# images/s at batch 8 (segjax only)
BATCH8 = [(230, name, cfg, "infer", CITY, 8, 3, "segjax") for (issue, name, cfg, *_rest) in ROWS[:6]]


def command(side, config, mode, shape, batch, repeat):
  h, w = shape
  if side == "mmseg":
    py = os.environ["MMSEG_PYTHON"]
    return [py, "experiments/bench/mmseg_reference.py", MM + config, "--mode", mode, "--batch", str(batch),
            "--crop", str(h), str(w), "--repeat", str(repeat), "--warmup", "2" if mode == "infer" else "1"]
  if mode == "infer":
    return [sys.executable, "experiments/bench/infer.py", MM + config, "--batch", str(batch),
            "--shape", str(h), str(w), "--repeat", str(repeat)]
  return [sys.executable, "experiments/bench/train_step.py", MM + config, "--batch", str(batch),
          "--crop", str(h), str(w), "--repeat", str(repeat)]


def run(side, row):
  issue, name, config, mode, shape, batch, repeat, _ = row
  env = dict(os.environ)
  if side == "mmseg":  # mmcv imports torchvision; the lite venv has a one-line stub for it
    env["PYTHONPATH"] = os.environ.get("MMSEG_STUB", "/tmp/mmstub")
  proc = subprocess.run(["/usr/bin/time", "-f", "PEAK_RSS_KB %M"] + command(side, config, mode, shape, batch, repeat),
                        cwd=REPO, env=env, capture_output=True, text=True)
  text = proc.stdout + proc.stderr
  out = dict(issue=issue, name=name, config=config, mode=mode, shape=shape, batch=batch, side=side,
             returncode=proc.returncode)
  m = re.search(r"(?:infer|train step|mmseg train): median ([\d.]+) s, min ([\d.]+)", text)
  if m:
    out.update(median=float(m.group(1)), min=float(m.group(2)))
  m = re.search(r"compile(?: \+ first run)?: ([\d.]+) s", text)
  if m:
    out["compile"] = float(m.group(1))
  m = re.search(r"PEAK_RSS_KB (\d+)", text)
  if m:
    out["peak_rss_gb"] = int(m.group(1)) / 1e6
  if "median" not in out:
    out["tail"] = text[-1500:]
  return out


def summary(path):
  runs = collections.defaultdict(list)
  for line in open(path):
    r = json.loads(line)
    if "median" in r:
      runs[(r["issue"], r["name"], r["mode"], r["batch"], r["side"])].append(r)
  keys = sorted({k[:4] for k in runs}, key=lambda k: (k[0], k[2], k[1]))
  print("| issue | measurement | segjax median (fastest); peak RSS | mmseg median (fastest); peak RSS | "
        "ratio time (fastest); RSS | runs |")
  print("|---|---|---:|---:|---:|---:|")

  def stats(rs):
    med = sorted(r["median"] for r in rs)[len(rs) // 2] if len(rs) % 2 else \
        sum(sorted(r["median"] for r in rs)[len(rs) // 2 - 1:len(rs) // 2 + 1]) / 2
    return med, min(r["min"] for r in rs), max(r["peak_rss_gb"] for r in rs)

  for k in keys:
    issue, name, mode, batch = k
    s, m = runs.get(k + ("segjax",)), runs.get(k + ("mmseg",))
    shape = s[0]["shape"] if s else m[0]["shape"]
    what = f"{name} {'inference' if mode == 'infer' else 'train step'} {batch}x{shape[0]}x{shape[1]}"
    cells = []
    for rs in (s, m):
      if rs:
        med, fastest, rss = stats(rs)
        cells.append(f"{med:.3f} s ({fastest:.3f}); {rss:.2f} GB")
      else:
        cells.append("-")
    if s and m:
      (sm, sf, sr), (mm, mf, mr) = stats(s), stats(m)
      ratio = f"{sm / mm:.2f}x ({sf / mf:.2f}x); {sr / mr:.2f}x"
    else:
      ratio = f"{batch / stats(s)[0]:.2f} images/s" if s else "-"
    print(f"| {issue} | {what} | {cells[0]} | {cells[1]} | {ratio} | {len(s or [])} / {len(m or [])} |")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--rows", type=int, nargs="*", default=[23, 21, 19, 20, 22, 230],
                      help="issue numbers (230: segjax batch 8 of issue 23's models)")
  parser.add_argument("--names", nargs="*", default=None, help="only these row names")
  parser.add_argument("--modes", nargs="*", default=["infer", "train"])
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--out", default="/tmp/families.jsonl")
  parser.add_argument("--summary", default=None, help="print the table of a results file and exit")
  args = parser.parse_args(argv)
  if args.summary:
    summary(args.summary)
    return
  rows = [r for r in ROWS + BATCH8 if r[0] in args.rows and r[3] in args.modes
          and (args.names is None or r[1] in args.names)]
  for issue in args.rows:
    for _ in range(args.rounds):
      for row in (r for r in rows if r[0] == issue):
        for side in (("segjax", "mmseg") if row[7] == "both" else (row[7],)):
          result = run(side, row)
          if "median" not in result:  # the shared tree can be mid-edit by another engineer: once more
            print(json.dumps(result), flush=True)
            time.sleep(30)
            result = run(side, row)
          print(json.dumps(result), flush=True)
          with open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
  main()
