"""Evaluation as MMSegmentation's: scores at the label file's original size whatever the val
pipeline resizes (training, ``--mode=eval`` and tools/test.py alike), ``evaluation.metric`` /
``save_best`` / ``interval=0`` as mmseg's EvalHook, the config's MultiScaleFlipAug and
``--aug-test``, ADE20K and Cityscapes result formats and the ``cityscapes`` metric,
``separate_eval`` of concatenated val sets, and O(num_classes) evaluation state."""
import importlib.util
import json
import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from segjax import apis, evaluation
from segjax.config import validate
from segjax.data.datasets import ADE20KDataset, CityscapesDataset, ConcatDataset, build_dataset
from segjax.train import checkpoint, loop
from test_train import tiny_config

IMG_NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
# A val pipeline that loads the labels and then resizes them with the image (64 px -> 40 px).
RESIZING_VAL = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
                dict(type="Resize", img_scale=(48, 40), keep_ratio=True), dict(type="Normalize", **IMG_NORM)]


BN = dict(type="BN", requires_grad=True)
# One ResNet stage and an FCN head: the smallest model the loop trains (compiles in seconds).
MICRO_MODEL = dict(
    type="EncoderDecoder", pretrained=None,
    backbone=dict(type="ResNetV1c", depth=18, num_stages=1, out_indices=(0,), strides=(1,), dilations=(1,),
                  stem_channels=8, base_channels=8, norm_cfg=BN, contract_dilation=True),
    decode_head=dict(type="FCNHead", in_channels=8, in_index=0, channels=8, num_convs=1, concat_input=False,
                     num_classes=6, norm_cfg=BN, align_corners=False,
                     loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(), test_cfg=dict(mode="whole"))


def resizing_config(data_root):
  c = tiny_config(data_root, total_iters=1)
  with c.unlocked():
    c.model = MICRO_MODEL
  c.checkpoint.interval = 1
  c.evaluation = dict(interval=1, metric=["mIoU", "mDice"], save_best="mIoU", rule=None)
  c.data.val.pipeline = c.data.test.pipeline = RESIZING_VAL
  return c


def load_tools_test():
  spec = importlib.util.spec_from_file_location("segjax_tools_test", os.path.join(ROOT, "tools", "test.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
  """One training step evaluated (and its best checkpoint kept) on a val pipeline that resizes;
  returns (workdir, config, summary, the area totals of that evaluation)."""
  workdir = str(tmp_path_factory.mktemp("eval_conformance") / "run")
  c = resizing_config(tiny_dataset)
  seen = []
  real_evaluate = loop.evaluate

  def keep_totals(*args):
    seen.append(real_evaluate(*args))
    return seen[-1]

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(loop, "evaluate", keep_totals)
    summary = loop.train_and_evaluate(c, workdir)
  return workdir, c, summary, seen[0]


def per_class(results, key="IoU"):
  return {k: v for k, v in results.items() if k.startswith(key + ".")}


def test_training_eval_mode_eval_and_tools_test_score_at_the_original_size(trained, tiny_dataset, tmp_path):
  workdir, c, summary, totals = trained
  val = build_dataset(c.data.val)
  gts = [val.get_gt_seg_map(i) for i in range(len(val))]
  # Every labelled pixel of the 64x64 label files, not of the 40x40 labels the pipeline made.
  assert totals.areas[0, 3].sum() == sum(int((g != 255).sum()) for g in gts)
  assert gts[0].shape == (64, 64)

  eval_results = loop.evaluate_checkpoint(c, workdir)
  config_file = tmp_path / "resizing.py"
  config_file.write_text("import sys\nsys.path.insert(0, %r)\nfrom test_eval_conformance import resizing_config\n\n\n"
                         "def get_config():\n  return resizing_config(%r)\n" % (os.path.join(ROOT, "tests"), tiny_dataset))
  load_tools_test().main([str(config_file), workdir, "--split", "val", "--eval", "mIoU", "mDice",
                          "--work-dir", str(tmp_path / "test_out")])
  (dumped,) = os.listdir(tmp_path / "test_out")
  tools_results = json.load(open(tmp_path / "test_out" / dumped))["metric"]
  assert len(per_class(summary)) == 6
  assert per_class(summary) == per_class(eval_results) == per_class(tools_results)
  assert per_class(summary, "Dice") == per_class(tools_results, "Dice")

  # Independently: the inference API's label maps at the original size, scored by mmseg's formulas.
  segmentor = apis.init_segmentor(c, workdir)
  preds = [apis.inference_segmentor(segmentor, val.file_name(i, "img")) for i in range(len(val))]
  expected = evaluation.eval_metrics(preds, gts, 6, 255, metrics=["mIoU"])
  for name, iou in zip(val.CLASSES, expected["IoU"]):
    assert summary[f"IoU.{name}"] == pytest.approx(iou, abs=2e-3, nan_ok=True)


def test_training_evaluation_metrics_and_best_checkpoint(trained):
  workdir, _, summary, _ = trained
  assert {"aAcc", "mIoU", "mAcc", "mDice"} <= set(summary)
  best = os.path.join(workdir, "best_mIoU_iter_1")
  record = json.load(open(os.path.join(workdir, "best_checkpoint.json")))
  assert record["path"] == best and record["score"] == summary["mIoU"] and record["rule"] == "greater"
  saved, last = checkpoint.load_variables(best), checkpoint.load_variables(workdir)
  for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(last)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert any(r["mode"] == "val" and "mDice" in r and "IoU.disc" in r for r in rows)


def test_save_best_keeps_only_the_best_by_mmcv_rules(tmp_path):
  best = evaluation.BestCheckpoint(str(tmp_path), "auto")
  variables = {"params": {"w": np.ones(3, np.float32)}, "batch_stats": {}}
  # 'auto' is the first key of mmseg's results, aAcc, compared by 'greater'.
  assert best.update(10, {"aAcc": 0.5, "mIoU": 0.2}, variables).endswith("best_aAcc_iter_10")
  assert best.rule == "greater"
  assert best.update(20, {"aAcc": 0.5, "mIoU": 0.3}, variables) is None  # not strictly better
  assert best.update(30, {"aAcc": 0.6, "mIoU": 0.1}, variables).endswith("best_aAcc_iter_30")
  assert sorted(p for p in os.listdir(tmp_path) if p.startswith("best_a")) == ["best_aAcc_iter_30"]
  # A resumed run knows the best score so far.
  assert evaluation.BestCheckpoint(str(tmp_path), "aAcc").update(40, {"aAcc": 0.55}, variables) is None
  assert evaluation.best_rule("mDice") == "greater" and evaluation.best_rule("mPrecision") == "greater"
  with pytest.raises(ValueError, match="rule"):
    evaluation.best_rule("mFscore")  # mmcv cannot infer it either
  assert evaluation.best_rule("mFscore", "greater") == "greater"


def test_interval_zero_and_no_validate_mean_no_evaluation(tiny_dataset, tmp_path, monkeypatch):
  c = tiny_config(tiny_dataset)
  c.evaluation.interval = 0
  validate(c)

  def fail(*args):
    raise AssertionError("evaluated although evaluation.interval=0")

  monkeypatch.setattr(loop, "evaluate", fail)
  action = loop.Evaluate(0, 4, None, None, 4, writer=None)
  for step in range(1, 5):
    action(step, None, {})
  import main
  captured = {}
  monkeypatch.setattr(main.loop, "train_and_evaluate", lambda config, workdir: captured.update(config=config))
  try:
    main.parse_flags(["main.py", f"--config={ROOT}/configs/pspnet_synthetic.py", f"--workdir={tmp_path}",
                      "--no-validate"])
    main.main([])
  finally:
    main.FLAGS.unparse_flags()
  assert captured["config"].evaluation.interval == 0


def test_mmseg_evaluation_dict_is_carried_and_checked():
  from segjax.convert.mmseg_config import to_segjax_config
  model = tiny_config("unused").model.to_dict()
  c = to_segjax_config({"model": model, "evaluation": dict(interval=8, metric=["mIoU", "mFscore"],
                                                           save_best="mIoU", pre_eval=True)})
  assert (c.evaluation.interval, list(c.evaluation.metric), c.evaluation.save_best) == (8, ["mIoU", "mFscore"], "mIoU")
  with pytest.raises(ValueError, match="start"):
    to_segjax_config({"model": model, "evaluation": dict(interval=8, start=4)})
  c = tiny_config("unused")
  c.evaluation.metric = "mAP"
  with pytest.raises(ValueError, match="mAP"):
    validate(c)


def flip_pipeline(**aug):
  return [dict(type="LoadImageFromFile"),
          dict(type="MultiScaleFlipAug", img_scale=None, **aug,
               transforms=[dict(type="Resize", keep_ratio=True), dict(type="RandomFlip"),
                           dict(type="Normalize", **IMG_NORM), dict(type="ImageToTensor", keys=["img"]),
                           dict(type="Collect", keys=["img"])])]


def test_tools_test_honours_the_configs_flip_and_aug_test_sets_mmseg_ratios(trained, tiny_dataset, tmp_path):
  workdir, c, _, _ = trained
  tools_test = load_tools_test()
  # --aug-test: mmseg's ratios and flip on the config's MultiScaleFlipAug, its other settings kept.
  aug = tools_test.aug_test(dict(type="SyntheticDataset", pipeline=flip_pipeline(img_ratios=[1.0], flip_direction="vertical")))
  assert aug["pipeline"][1]["img_ratios"] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75] and aug["pipeline"][1]["flip"]
  assert aug["pipeline"][1]["flip_direction"] == "vertical"
  with pytest.raises(ValueError, match="MultiScaleFlipAug"):
    tools_test.aug_test(dict(type="SyntheticDataset", pipeline=RESIZING_VAL))

  # A config whose test pipeline flips vertically: softmax of the image and of its flip, averaged.
  config_file = tmp_path / "flip.py"
  config_file.write_text(
      "import sys\nsys.path.insert(0, %r)\nfrom test_eval_conformance import resizing_config, flip_pipeline\n\n\n"
      "def get_config():\n  c = resizing_config(%r)\n"
      "  c.data.test.pipeline = flip_pipeline(img_ratios=[1.0], flip=True, flip_direction='vertical')\n"
      "  return c\n" % (os.path.join(ROOT, "tests"), tiny_dataset))
  out = str(tmp_path / "preds.npz")
  tools_test.main([str(config_file), workdir, "--out", out, "--batch-size", "2"])
  segmentor = apis.init_segmentor(c, workdir)
  val = build_dataset(c.data.val)
  with np.load(out, allow_pickle=False) as preds:
    for i in (0, 5):
      bgr = cv2.imread(val.file_name(i, "img")).astype(np.float32)
      x = ((bgr[..., ::-1] - IMG_NORM["mean"]) / IMG_NORM["std"])[None]
      probs = jax.nn.softmax(apis.inference_logits(segmentor, x), -1)
      flipped = jax.nn.softmax(apis.inference_logits(segmentor, x[:, ::-1]), -1)[:, ::-1]
      expected = np.asarray(jnp.argmax(probs + flipped, -1))[0]
      assert (preds[f"pred_{i:05d}"] == expected).mean() > 0.999
      unflipped = np.asarray(jnp.argmax(probs, -1))[0]
      assert (expected != unflipped).mean() > 0.01  # the flip matters for this model and image


def fake_predict(variables, img, label, *, augs):
  """A stand-in model: predicts the label shifted by one class where the column is odd."""
  cols = jnp.arange(label.shape[2])[None, None, :] % 2
  pred = jnp.where((cols == 1) & (label != 255), (label + 1) % 6, jnp.where(label == 255, 0, label))
  areas = jax.vmap(lambda p, l: evaluation.batch_areas(p[None], l[None], 6, 255))(pred, label)
  return pred, areas


def fake_pred_numpy(label):
  cols = np.arange(label.shape[1])[None, :] % 2
  return np.where((cols == 1) & (label != 255), (label + 1) % 6, np.where(label == 255, 0, label))


@pytest.mark.parametrize("separate_eval", [True, False])
def test_concatenated_val_sets_are_evaluated_separately_or_merged(tiny_dataset, separate_eval):
  pipeline = flip_pipeline(img_ratios=[1.0])
  parts = [dict(type="SyntheticDataset", data_root=tiny_dataset, img_dir=f"img_dir/{s}", ann_dir=f"ann_dir/{s}",
                pipeline=pipeline) for s in ("val", "train")]
  dataset = build_dataset(dict(type="ConcatDataset", datasets=parts, separate_eval=separate_eval))
  assert isinstance(dataset, ConcatDataset)
  totals = evaluation.evaluate_dataset(jax.jit(fake_predict, static_argnames="augs"), {}, dataset, 4,
                                       progress=False)
  results, _ = evaluation.dataset_results(totals, dataset, ["mIoU", "mDice"])
  gts = [[d.get_gt_seg_map(i) for i in range(len(d))] for d in dataset.datasets]
  expect = lambda labels: evaluation.eval_results(evaluation.eval_metrics(
      [fake_pred_numpy(g) for g in labels], labels, 6, 255, metrics=["mIoU", "mDice"]), dataset.CLASSES)
  if separate_eval:  # mmseg's ConcatDataset.evaluate: each dataset's keys prefixed by its position
    want = {f"{k}_{key}": v for k, labels in enumerate(gts) for key, v in expect(labels).items()}
  else:
    want = expect(gts[0] + gts[1])
  assert results.keys() == want.keys()
  for key, value in want.items():
    assert results[key] == pytest.approx(value, nan_ok=True), key


def test_evaluation_state_does_not_grow_with_the_number_of_images(tiny_dataset):
  """The evaluator keeps per-class totals, never per-image arrays (mmseg's pre_eval)."""
  sizes = []
  for split in ("val", "train"):  # 8 and 16 images
    dataset = build_dataset(dict(type="SyntheticDataset", data_root=tiny_dataset, img_dir=f"img_dir/{split}",
                                 ann_dir=f"ann_dir/{split}", pipeline=flip_pipeline(img_ratios=[1.0])))
    totals = evaluation.evaluate_dataset(jax.jit(fake_predict, static_argnames="augs"), {}, dataset, 2,
                                         progress=False)
    assert totals.images.sum() == len(dataset)
    sizes.append(sum(np.asarray(v).nbytes for v in vars(totals).values()))
    assert totals.areas.shape == (1, 4, 6)
  assert sizes[0] == sizes[1]


def write_png(path, array, mode=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array.astype(np.uint8), mode).save(path)


def test_ade20k_format_only_writes_labels_plus_one(tmp_path):
  root = tmp_path / "ade"
  rng = np.random.default_rng(0)
  (root / "images" / "validation").mkdir(parents=True)
  for name in ("ADE_val_00000001", "ADE_val_00000002"):
    cv2.imwrite(str(root / "images" / "validation" / f"{name}.jpg"), rng.integers(0, 255, (6, 8, 3)).astype(np.uint8))
    write_png(str(root / "annotations" / "validation" / f"{name}.png"), rng.integers(0, 151, (6, 8)))
  ade = ADE20KDataset([dict(type="LoadImageFromFile")], "images/validation", ann_dir="annotations/validation",
                      data_root=str(root))
  pred = rng.integers(0, 150, (6, 8))
  path = evaluation.format_result(ade, 1, pred, str(tmp_path / "submission"))
  assert os.path.basename(path) == "ADE_val_00000002.png"
  np.testing.assert_array_equal(np.array(Image.open(path)), pred + 1)  # mmseg: 1..150, 0 = other


# cityscapesscripts' documented label table (helpers/labels.py), as the test's own reference:
# the category of each label id; the ids with a train id are evaluated, the rest ignoreInEval.
CITYSCAPES_CATEGORIES = {"void": range(0, 7), "flat": range(7, 11), "construction": range(11, 17),
                         "object": range(17, 21), "nature": range(21, 23), "sky": range(23, 24),
                         "human": range(24, 26), "vehicle": range(26, 34)}
CITYSCAPES_EVALUATED = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]


def test_cityscapes_format_and_metric_follow_cityscapesscripts_formulas(tmp_path):
  from segjax.data.cityscapes_ids import TRAIN_ID_TO_LABEL_ID
  root = tmp_path / "cityscapes"
  rng = np.random.default_rng(1)
  to_train_id = {v: k for k, v in TRAIN_ID_TO_LABEL_ID.items()}
  gt_ids, preds = [], []
  for frame in ("000019", "000020"):
    stem = f"aachen_000000_{frame}"
    gt = rng.choice(CITYSCAPES_EVALUATED[:-2] + [0, 1, 4, 9, 30], size=(12, 16))  # 32, 33 absent
    write_png(str(root / "gtFine" / "val" / "aachen" / f"{stem}_gtFine_labelIds.png"), gt)
    write_png(str(root / "gtFine" / "val" / "aachen" / f"{stem}_gtFine_labelTrainIds.png"),
              np.vectorize(lambda i: to_train_id.get(i, 255))(gt))
    write_png(str(root / "leftImg8bit" / "val" / "aachen" / f"{stem}_leftImg8bit.png"), rng.integers(0, 255, (12, 16, 3)))
    gt_ids.append(gt)
    preds.append(rng.integers(0, 18, (12, 16)))  # train id 18 (bicycle, label id 33) never predicted
  dataset = CityscapesDataset([dict(type="LoadImageFromFile")], "leftImg8bit/val", ann_dir="gtFine/val",
                              data_root=str(root))
  confusion = evaluation.CityscapesConfusion()
  for i, pred in enumerate(preds):
    path = evaluation.format_result(dataset, i, pred, str(tmp_path / "pngs"))
    assert Image.open(path).mode == "P"  # mmseg's results2img: label ids in a palette PNG
    np.testing.assert_array_equal(np.array(Image.open(path)), np.vectorize(TRAIN_ID_TO_LABEL_ID.get)(pred))
    gt_file = evaluation.cityscapes_label_ids_file(dataset, i)
    assert gt_file.endswith("_gtFine_labelIds.png")
    confusion.add(np.array(Image.open(gt_file)), pred)
  results = confusion.results()

  # cityscapesscripts' pixel-level IoU on label ids: TP / (TP + FP + FN), where FN counts the
  # class's ground-truth pixels predicted as anything else and FP the pixels predicted as the class
  # whose ground truth is another evaluated (not ignoreInEval) class; categories the same over
  # their evaluated classes; the averages skip NaN.
  gt = np.concatenate([g.ravel() for g in gt_ids])
  pr = np.concatenate([np.vectorize(TRAIN_ID_TO_LABEL_ID.get)(p).ravel() for p in preds])

  def iou(ids):
    in_gt, in_pred = np.isin(gt, ids), np.isin(pr, ids)
    tp, fn = np.sum(in_gt & in_pred), np.sum(in_gt & ~in_pred)
    fp = np.sum(in_pred & np.isin(gt, CITYSCAPES_EVALUATED) & ~in_gt)
    return tp / (tp + fp + fn) if tp + fp + fn else np.nan

  classes = [iou([i]) for i in CITYSCAPES_EVALUATED]
  np.testing.assert_allclose(list(results["classScores"].values()), classes)
  assert np.isnan(results["classScores"]["bicycle"]) and results["classScores"]["motorcycle"] == 0.0
  assert results["averageScoreClasses"] == pytest.approx(np.nanmean(classes))
  categories = {name: iou([i for i in ids if i in CITYSCAPES_EVALUATED])
                for name, ids in CITYSCAPES_CATEGORIES.items() if name != "void"}
  assert results["categoryScores"] == pytest.approx(categories)
  assert results["averageScoreCategories"] == pytest.approx(np.mean(list(categories.values())))
