"""Evaluate a checkpoint on a config's test set (``data.test``), as mmseg's tools/test.py.

  python tools/test.py configs/pspnet_cityscapes.py CHECKPOINT --eval mIoU [mDice mFscore]
      [--aug-test] [--show-dir DIR --opacity 0.5] [--out results.npz] [--split val]
      [--format-only --eval-options imgfile_prefix=DIR] [--cfg-options data.test.data_root=...]

``data.test`` is what mmseg's tools/test.py evaluates (the val set in most configs; Dark Zurich
or Nighttime Driving in the Cityscapes-trained ``*_dark`` / ``*_night_driving`` configs).

CHECKPOINT: a segjax workdir or checkpoint folder, a directory from tools/convert_weights.py, or
an mmseg .pth. ``--aug-test`` uses mmseg's ratios 0.5-1.75 with flip. ``--format-only`` on
Cityscapes writes label-id PNGs (train ids mapped back) for the evaluation server. ``--out``
writes the label maps as ``.npz`` (``pred_00000``, ... in dataset order, and ``filenames``), which
``numpy.load(allow_pickle=False)`` reads without running code, unlike mmseg's pickle.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segjax import xla_flags  # noqa: E402

xla_flags.apply_defaults()

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from segjax import apis, evaluation  # noqa: E402
from segjax.config import apply_overrides, load_config  # noqa: E402
from segjax.data.cityscapes_ids import TRAIN_ID_TO_LABEL_ID  # noqa: E402
from segjax.data.datasets import CityscapesDataset, build_split  # noqa: E402

AUG_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def cityscapes_label_ids(seg: np.ndarray) -> np.ndarray:
  out = np.zeros_like(seg, dtype=np.uint8)
  for train_id, label_id in TRAIN_ID_TO_LABEL_ID.items():
    out[seg == train_id] = label_id
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("config", help="configs/X.py[:variant]")
  parser.add_argument("checkpoint")
  parser.add_argument("--eval", nargs="*", default=[], choices=evaluation.METRICS)
  parser.add_argument("--split", default="test", choices=["test", "val"],
                      help="the config's data split to evaluate (mmseg: test)")
  parser.add_argument("--aug-test", action="store_true")
  parser.add_argument("--show-dir")
  parser.add_argument("--opacity", type=float, default=0.5)
  parser.add_argument("--out", help="write the predicted label maps here (.npz)")
  parser.add_argument("--format-only", action="store_true")
  parser.add_argument("--eval-options", nargs="*", default=[], help="imgfile_prefix=DIR for --format-only")
  parser.add_argument("--cfg-options", nargs="*", default=[], help="a.b=value overrides")
  args = parser.parse_args(argv)
  if not (args.eval or args.format_only or args.show_dir or args.out):
    parser.error("give at least one of --eval, --format-only, --show-dir, --out")
  if args.out and not args.out.endswith(".npz"):
    parser.error(f"--out {args.out}: predictions are written as .npz (never pickled); name a .npz file")
  options = dict(o.split("=", 1) for o in args.eval_options)

  config = load_config(args.config)
  apply_overrides(config, args.cfg_options)
  dataset = build_split(config.data, args.split)
  segmentor = apis.init_segmentor(config, args.checkpoint)
  scales, flip = (AUG_RATIOS, True) if args.aug_test else ((1.0,), False)
  preds, gts, filenames = [], [], []
  for i in range(len(dataset)):
    ds, j = dataset.locate(i)
    info = ds.img_infos[j]
    path = os.path.join(ds.img_dir, info["filename"])
    seg = apis.inference_segmentor(segmentor, path, scales=scales, flip=flip)
    if args.eval:
      gts.append(ds.get_gt_seg_map(j))
    preds.append(seg)
    filenames.append(info["filename"])
    stem = os.path.splitext(os.path.basename(info["filename"]))[0]
    if args.show_dir:
      apis.show_result(segmentor, path, seg, args.opacity, os.path.join(args.show_dir, stem + ".png"))
    if args.format_only:
      prefix = options.get("imgfile_prefix")
      if not prefix:
        parser.error("--format-only needs --eval-options imgfile_prefix=DIR")
      os.makedirs(prefix, exist_ok=True)
      out = cityscapes_label_ids(seg) if isinstance(dataset, CityscapesDataset) else seg.astype(np.uint8)
      Image.fromarray(out).save(os.path.join(prefix, stem + ".png"))
    print(f"[{i + 1}/{len(dataset)}] {info['filename']}", file=sys.stderr)
  if args.out:
    np.savez_compressed(args.out, filenames=np.asarray(filenames),
                        **{f"pred_{i:05d}": p.astype(np.uint8 if p.max(initial=0) < 256 else np.int32)
                           for i, p in enumerate(preds)})
  if args.eval:
    metrics = evaluation.eval_metrics(preds, gts, dataset.num_classes, dataset.ignore_index,
                                      metrics=args.eval)
    print(evaluation.format_table(metrics, dataset.CLASSES))
    print("  ".join(f"{k} {100 * v:.2f}" for k, v in evaluation.summary(metrics).items()))


if __name__ == "__main__":
  main()
