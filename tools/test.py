"""Evaluate a checkpoint on a config's test set (``data.test``), as mmseg's tools/test.py.

  python tools/test.py configs/pspnet_cityscapes.py CHECKPOINT --eval mIoU [mDice mFscore]
      [--aug-test] [--show-dir DIR --opacity 0.5] [--out results.npz] [--split val]
      [--format-only --eval-options imgfile_prefix=DIR] [--work-dir DIR] [--batch-size 1]
      [--cfg-options data.test.data_root=...]
  python tools/test.py CONFIG CHECKPOINT --eval cityscapes [mIoU ...]

``data.test`` is what mmseg's tools/test.py evaluates (the val set in most configs; Dark Zurich
or Nighttime Driving in the Cityscapes-trained ``*_dark`` / ``*_night_driving`` configs).

CHECKPOINT: a segjax workdir or checkpoint folder, a directory from tools/convert_weights.py, or
an mmseg .pth. Images run through the config's test pipeline, honouring its ``MultiScaleFlipAug``
(``img_ratios``, ``flip``, ``flip_direction``: the softmax averaged over them, as mmseg's
``aug_test``); ``--aug-test`` sets its ``img_ratios`` to 0.5-1.75 and ``flip=True``, as mmseg's
tools/test.py. Predictions are scored against the label files at the original size, one image
at a time (only per-class totals are kept, as mmseg's ``pre_eval``), in batches of
``--batch-size`` images per device over every device of this host; with
``--cfg-options distributed.enabled=True`` (and the coordinator settings, see README) every host
takes its share and the totals are summed over hosts.

``--format-only`` writes mmseg's submission PNGs into ``imgfile_prefix``: ADE20K labels + 1,
Cityscapes label ids (train ids mapped back). ``--eval cityscapes`` is cityscapesscripts'
pixel-level evaluation (class and category IoU on label ids against the ``*_gtFine_labelIds.png``
files), computed by segjax from the predictions as they come (``evaluation.CityscapesConfusion``;
mmseg writes the PNGs first and runs cityscapesscripts, whose current release fails on numpy 2.4);
unlike mmseg it may be combined with the other metrics. ``--out`` writes the label maps as they come into an ``.npz`` (``pred_00000``, ... by
dataset index, and ``filenames``; with several processes, one ``OUT.process<i>.npz`` each, with
``indices``), which ``numpy.load(allow_pickle=False)`` reads without running code, unlike mmseg's
pickle. ``--work-dir`` dumps the results as ``eval_<time>.json`` (mmseg's format).
"""
import argparse
import json
import os
import sys
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segjax import xla_flags  # noqa: E402

xla_flags.apply_defaults()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from segjax import apis, evaluation, sharding  # noqa: E402
from segjax.config import apply_overrides, load_config, to_plain  # noqa: E402
from segjax.data.datasets import build_split  # noqa: E402
from PIL import Image  # noqa: E402

AUG_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def aug_test(dataset_cfg: dict) -> dict:
  """mmseg's ``--aug-test``: the dataset's test pipeline with its ``MultiScaleFlipAug`` at
  ``img_ratios`` 0.5-1.75 and ``flip=True`` (``img_scale`` and ``flip_direction`` kept), in every
  dataset of a wrapper."""
  cfg = dict(dataset_cfg)
  if "datasets" in cfg:
    cfg["datasets"] = [aug_test(d) for d in cfg["datasets"]]
    return cfg
  if "dataset" in cfg:
    cfg["dataset"] = aug_test(cfg["dataset"])
    return cfg
  steps = [dict(step) for step in cfg["pipeline"]]
  augs = [step for step in steps if step.get("type") == "MultiScaleFlipAug"]
  if not augs:
    raise ValueError(f"--aug-test sets the test pipeline's MultiScaleFlipAug (img_ratios, flip), as "
                     f"mmseg; this pipeline has none: {[s.get('type') for s in steps]}")
  augs[0].update(img_ratios=list(AUG_RATIOS), flip=True)
  cfg["pipeline"] = steps
  return cfg


class NpzWriter:
  """``--out``: label maps written one by one into an ``.npz`` (a zip of ``.npy`` members), so
  none is held in memory."""

  def __init__(self, path: str):
    self.zip = zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, allowZip64=True)
    self.indices, self.filenames = [], []

  def write(self, name: str, array: np.ndarray) -> None:
    with self.zip.open(name + ".npy", "w", force_zip64=True) as f:
      np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)

  def add(self, index: int, filename: str, pred: np.ndarray) -> None:
    self.write(f"pred_{index:05d}", pred.astype(np.uint8 if pred.max(initial=0) < 256 else np.int32))
    self.indices.append(index)
    self.filenames.append(filename)

  def close(self) -> None:
    self.write("filenames", np.asarray(self.filenames))
    if jax.process_count() > 1:
      self.write("indices", np.asarray(self.indices, np.int64))
    self.zip.close()


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("config", help="configs/X.py[:variant]")
  parser.add_argument("checkpoint")
  parser.add_argument("--eval", nargs="+", default=[], choices=(*evaluation.METRICS, "cityscapes"))
  parser.add_argument("--split", default="test", choices=["test", "val"],
                      help="the config's data split to evaluate (mmseg: test)")
  parser.add_argument("--aug-test", action="store_true",
                      help="MultiScaleFlipAug at ratios 0.5-1.75 with flip (mmseg's --aug-test)")
  parser.add_argument("--batch-size", type=int, default=1, help="images per device and batch")
  parser.add_argument("--show-dir")
  parser.add_argument("--opacity", type=float, default=0.5)
  parser.add_argument("--out", help="write the predicted label maps here (.npz)")
  parser.add_argument("--format-only", action="store_true")
  parser.add_argument("--work-dir", help="dump the evaluation results here as eval_<time>.json")
  parser.add_argument("--eval-options", nargs="*", default=[], help="imgfile_prefix=DIR for --format-only")
  parser.add_argument("--cfg-options", nargs="*", default=[], help="a.b=value overrides")
  args = parser.parse_args(argv)
  if not (args.eval or args.format_only or args.show_dir or args.out):
    parser.error("give at least one of --eval, --format-only, --show-dir, --out")
  if args.eval and args.format_only:
    parser.error("--eval and --format-only cannot be both specified (as mmseg)")
  if args.out and not args.out.endswith(".npz"):
    parser.error(f"--out {args.out}: predictions are written as .npz (never pickled); name a .npz file")
  if args.batch_size < 1:
    parser.error(f"--batch-size {args.batch_size}: expected at least 1")
  options = dict(o.split("=", 1) for o in args.eval_options)
  prefix = options.get("imgfile_prefix")
  if args.format_only and not prefix:
    parser.error("--format-only needs --eval-options imgfile_prefix=DIR")

  config = load_config(args.config)
  apply_overrides(config, args.cfg_options)
  sharding.initialize_distributed(config)
  data_cfg = to_plain(config.data)
  if args.aug_test:
    data_cfg = dict(data_cfg, **{args.split: aug_test(data_cfg[args.split])})
  dataset = build_split(data_cfg, args.split)
  segmentor = apis.init_segmentor(config, args.checkpoint)
  predict_fn = evaluation.jit_predict_and_score(segmentor.model, segmentor.model_cfg,
                                                dataset.num_classes, dataset.ignore_index)
  variables = jax.device_put(segmentor.variables, sharding.replicated(sharding.make_mesh(local=True)))

  out = None
  if args.out:
    out = NpzWriter(args.out if jax.process_count() == 1
                    else f"{args.out[:-len('.npz')]}.process{jax.process_index()}.npz")

  metrics = [m for m in args.eval if m != "cityscapes"]
  confusion = evaluation.CityscapesConfusion() if "cityscapes" in args.eval else None

  def on_prediction(index: int, pred: np.ndarray) -> None:
    ds, j = dataset.locate(index)
    if confusion is not None:
      gt_file = evaluation.cityscapes_label_ids_file(dataset, index)
      with Image.open(gt_file) as gt:
        confusion.add(np.array(gt), pred, gt_file)
    if out is not None:
      out.add(index, ds.img_infos[j]["filename"], pred)
    if args.show_dir:
      stem = os.path.splitext(os.path.basename(ds.img_infos[j]["filename"]))[0]
      apis.show_result(segmentor, ds.file_name(j, "img"), pred, args.opacity,
                       os.path.join(args.show_dir, stem + ".png"))
    if args.format_only:
      evaluation.format_result(dataset, index, pred, prefix)

  totals = evaluation.evaluate_dataset(
      predict_fn, variables, dataset, args.batch_size * jax.local_device_count(),
      on_prediction if (out or args.show_dir or args.format_only or confusion) else None,
      labels=bool(metrics), desc=os.path.basename(args.config.split(":")[0]))
  if out is not None:
    out.close()
  if not args.eval:
    return
  results = {}
  if metrics:
    results, tables = evaluation.dataset_results(totals, dataset, metrics)
  if confusion is not None:
    confusion.sum_over_processes()
    cityscapes = confusion.results()
  if jax.process_index() != 0:
    return
  if confusion is not None:
    print("\n".join(f"{name:<14} {100 * iou:6.2f}" for name, iou in
                    {**cityscapes["classScores"], **cityscapes["categoryScores"]}.items()))
  if metrics:
    print(evaluation.report(results, tables, dataset.CLASSES))
  if confusion is not None:
    print(f"averageScoreClasses {100 * cityscapes['averageScoreClasses']:.2f}  "
          f"averageScoreCategories {100 * cityscapes['averageScoreCategories']:.2f}")
    results.update(cityscapes)
  if args.work_dir:
    os.makedirs(args.work_dir, exist_ok=True)
    path = os.path.join(args.work_dir, f"eval_{time.strftime('%Y%m%d_%H%M%S')}.json")
    with open(path, "w") as f:
      json.dump(dict(config=args.config, metric=results), f, indent=4,
                default=lambda v: v.tolist() if isinstance(v, np.ndarray) else float(v))


if __name__ == "__main__":
  main()
