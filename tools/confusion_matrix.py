"""Confusion matrix of saved predictions (mmseg's tools/confusion_matrix.py).

  python tools/test.py CONFIG CKPT --out results.npz
  python tools/confusion_matrix.py CONFIG results.npz OUT_DIR [--show] [--color-theme plasma]

Rows are ground-truth classes, columns predictions, each row normalised to percent (NaN-free:
rows of absent classes stay 0). Writes confusion_matrix.png and confusion_matrix.npy (counts).
Predictions are read only from tools/test.py's ``.npz`` with ``allow_pickle=False``: mmseg's
pickled results are refused, since unpickling a file can run any code in it.
"""
import argparse
import os
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from segjax.config import apply_overrides, load_config  # noqa: E402
from segjax.data.datasets import build_split  # noqa: E402


def confusion_matrix(preds, gts, num_classes: int, ignore_index: int) -> np.ndarray:
  """Pixel counts [gt, pred] over valid pixels."""
  matrix = np.zeros((num_classes, num_classes), np.int64)
  for pred, gt in zip(preds, gts):
    valid = (gt != ignore_index) & (gt < num_classes)
    matrix += np.bincount(num_classes * gt[valid].astype(np.int64) + pred[valid],
                          minlength=num_classes ** 2).reshape(num_classes, num_classes)
  return matrix


def load_predictions(path: str) -> tuple[list[np.ndarray], list[str]]:
  """(label maps, image file names) from ``tools/test.py --out``; anything else is refused."""
  if not zipfile.is_zipfile(path):
    raise SystemExit(f"{path} is not an .npz file from tools/test.py --out; other formats (mmseg's "
                     "pickled results among them) are refused: unpickling a file can run code")
  try:
    with np.load(path, allow_pickle=False) as data:
      keys = sorted(k for k in data.files if k.startswith("pred_"))
      return [data[k] for k in keys], data["filenames"].tolist()
  except (ValueError, KeyError, OSError) as e:  # object arrays (pickles) inside the npz, missing keys
    raise SystemExit(f"{path}: not predictions written by tools/test.py --out ({e})") from None


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("config")
  parser.add_argument("prediction_path", help=".npz from tools/test.py --out")
  parser.add_argument("save_dir")
  parser.add_argument("--show", action="store_true")
  parser.add_argument("--color-theme", default="plasma")
  parser.add_argument("--cfg-options", nargs="*", default=[])
  args = parser.parse_args(argv)
  config = load_config(args.config)
  apply_overrides(config, args.cfg_options)
  dataset = build_split(config.data, "val")
  preds, filenames = load_predictions(args.prediction_path)
  if len(preds) != len(dataset):
    sys.exit(f"{args.prediction_path} has {len(preds)} predictions for {len(dataset)} images")
  records = [dataset.locate(i) for i in range(len(dataset))]
  for i, (ds, j) in enumerate(records):
    if filenames[i] != ds.img_infos[j]["filename"]:
      sys.exit(f"{args.prediction_path}: prediction {i} is of {filenames[i]}, but the val set's image "
               f"{i} is {ds.img_infos[j]['filename']} (tools/test.py --split val writes the val set)")
  gts = [ds.get_gt_seg_map(j) for ds, j in records]
  counts = confusion_matrix(preds, gts, dataset.num_classes, dataset.ignore_index)
  os.makedirs(args.save_dir, exist_ok=True)
  np.save(os.path.join(args.save_dir, "confusion_matrix.npy"), counts)
  rows = counts.sum(1, keepdims=True)
  percent = np.divide(100.0 * counts, rows, out=np.zeros(counts.shape), where=rows > 0)

  import matplotlib
  if not args.show:
    matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  n = dataset.num_classes
  fig, ax = plt.subplots(figsize=(max(6, 0.5 * n), max(5, 0.45 * n)))
  im = ax.imshow(percent, cmap=args.color_theme, vmin=0, vmax=100)
  fig.colorbar(im, ax=ax)
  ax.set_xticks(range(n), labels=dataset.CLASSES, rotation=90)
  ax.set_yticks(range(n), labels=dataset.CLASSES)
  ax.set_xlabel("prediction")
  ax.set_ylabel("ground truth")
  if n <= 30:
    for i in range(n):
      for j in range(n):
        ax.text(j, i, f"{percent[i, j]:.0f}", ha="center", va="center", fontsize=7, color="w")
  fig.tight_layout()
  fig.savefig(os.path.join(args.save_dir, "confusion_matrix.png"))
  if args.show:
    plt.show()
  print(f"wrote {args.save_dir}/confusion_matrix.png and .npy")


if __name__ == "__main__":
  main()
