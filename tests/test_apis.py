"""tools/convert_weights.py -> init_segmentor -> segmentor_logits reproduces mmseg; slide and
TTA inference follow mmseg's rules; mmseg config files are read with _base_ and _delete_."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs.common import BN
from conftest import ORACLE, ROOT, require
from segjax import apis
from segjax.convert.mmseg_config import load_mmseg_config
from segjax.models.segmentors.inference import encode_decode, slide_inference


def tiny_model_cfg(**head) -> dict:
  """ResNet-18 at 1/8 width with a one-conv FCN head (3 classes), ``head`` overriding its keys."""
  decode_head = dict(type="FCNHead", in_channels=64, in_index=3, channels=8, num_convs=1, num_classes=3,
                     norm_cfg=BN)
  decode_head.update(head)
  backbone = dict(type="ResNetV1c", depth=18, stem_channels=8, base_channels=8, norm_cfg=BN)
  return dict(type="EncoderDecoder", backbone=backbone, decode_head=decode_head)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  pytest.importorskip("torch")
  case = require(os.path.join(ORACLE, "pspnet_r18-d8"))
  out = str(tmp_path_factory.mktemp("converted") / "pspnet_r18")
  r = subprocess.run([sys.executable, "tools/convert_weights.py", os.path.join(case, "model.pth"), out,
                      "--mmseg-config", os.path.join(case, "mmseg_model.json")],
                     cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr
  return case, out


def test_converted_dir_reproduces_mmseg_logits(converted):
  case, out = converted
  model = apis.init_segmentor(out)
  x = np.load(os.path.join(case, "input.npy")).transpose(0, 2, 3, 1)
  ref = np.load(os.path.join(case, "logits.npy")).transpose(0, 2, 3, 1)
  assert np.abs(np.asarray(apis.encode_decode(model, x)) - ref).max() < 1e-4


def test_inference_segmentor_and_show_result(converted, tmp_path):
  _, out = converted
  model = apis.init_segmentor(out)
  img = (np.random.default_rng(0).random((37, 53, 3)) * 255).astype(np.uint8)
  seg = apis.inference_segmentor(model, img)
  assert seg.shape == (37, 53) and seg.min() >= 0 and seg.max() < 19
  probs = apis.inference_segmentor(model, img, scales=(0.5, 1.0), flip=True, probs=True)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  overlay = apis.show_result(model, img, np.zeros((37, 53), np.int64), opacity=0.5,
                             out_file=str(tmp_path / "o.png"))
  colour = np.asarray(apis._palette(model, 19)[0][::-1], np.float64)  # BGR
  np.testing.assert_array_equal(overlay, (img * 0.5 + colour * 0.5).astype(np.uint8))
  assert os.path.exists(tmp_path / "o.png")


def test_slide_inference_follows_mmseg_grid(converted):
  _, out = converted
  model = apis.init_segmentor(out)
  x = np.random.default_rng(1).normal(size=(1, 40, 70, 3)).astype(np.float32)
  # One crop covering the image equals whole inference (up to float32 differences between the
  # two compiled programs' fusions, seen up to 2e-5 here).
  whole = encode_decode(model.model, model.variables, x)
  one = slide_inference(model.model, model.variables, x, (48, 80), (32, 64))
  np.testing.assert_allclose(np.asarray(one), np.asarray(whole), atol=1e-4)
  # Crops (h 32, w 48) every (16, 32): rows y1 in {0, 8} (the last crop is moved flush with the
  # border), cols x1 in {0, 22}; the overlap is averaged.
  slide = np.asarray(slide_inference(model.model, model.variables, x, (32, 48), (16, 32)))
  expected = np.zeros_like(slide)
  count = np.zeros(slide.shape[:3] + (1,))
  for y1 in (0, 8):
    for x1 in (0, 22):
      expected[:, y1:y1 + 32, x1:x1 + 48] += np.asarray(
          encode_decode(model.model, model.variables, x[:, y1:y1 + 32, x1:x1 + 48]))
      count[:, y1:y1 + 32, x1:x1 + 48] += 1
  np.testing.assert_allclose(slide, expected / count, atol=1e-4)


def test_mmseg_config_base_and_delete(tmp_path):
  (tmp_path / "_base_").mkdir()
  (tmp_path / "_base_" / "model.py").write_text(
      "norm_cfg = dict(type='SyncBN', requires_grad=True)\n"
      "model = dict(type='EncoderDecoder', backbone=dict(type='ResNetV1c', depth=50, norm_cfg=norm_cfg),\n"
      "             decode_head=dict(type='PSPHead', channels=512, loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)))\n")
  (tmp_path / "child.py").write_text(
      "_base_ = ['./_base_/model.py']\n"
      "model = dict(backbone=dict(depth=101),\n"
      "             decode_head=dict(loss_decode=dict(_delete_=True, type='DiceLoss')))\n")
  cfg = load_mmseg_config(str(tmp_path / "child.py"))
  assert cfg["model"]["backbone"] == {"type": "ResNetV1c", "depth": 101,
                                      "norm_cfg": {"type": "SyncBN", "requires_grad": True}}
  assert cfg["model"]["decode_head"]["loss_decode"] == {"type": "DiceLoss"}
  assert cfg["model"]["decode_head"]["channels"] == 512


def test_mmseg_config_to_segjax_config(tmp_path):
  (tmp_path / "cfg.py").write_text(
      "model = dict(type='EncoderDecoder', backbone=dict(type='ResNetV1c', depth=18),\n"
      "             decode_head=dict(type='FCNHead', in_channels=512, channels=8, num_classes=3))\n"
      "optimizer = dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0005)\n"
      "lr_config = dict(policy='poly', power=0.9, min_lr=1e-4, by_epoch=False)\n"
      "runner = dict(type='IterBasedRunner', max_iters=40000)\n"
      "evaluation = dict(interval=4000, metric='mIoU')\n"
      "data = dict(samples_per_gpu=2, workers_per_gpu=2,\n"
      "            train=dict(type='CityscapesDataset', data_root='data/cityscapes', img_dir='a', ann_dir='b', pipeline=[]),\n"
      "            val=dict(type='CityscapesDataset', data_root='data/cityscapes', img_dir='c', ann_dir='d', pipeline=[]))\n")
  from segjax.convert.mmseg_config import to_segjax_config
  c = to_segjax_config(load_mmseg_config(str(tmp_path / "cfg.py")))
  assert c.total_iters == 40000 and c.evaluation.interval == 4000 and c.optimizer.lr == 0.02
  assert c.model.decode_head.num_classes == 3 and c.data.train.img_dir == "a"
  with pytest.raises(AttributeError):
    c.nonexistent = 1


def test_binary_head_thresholds_sigmoid():
  from segjax import losses
  from segjax.models.segmentors.inference import predict
  binary = dict(concat_input=False, num_classes=2, out_channels=1, threshold=0.6,
                loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0))
  model = apis.init_segmentor(tiny_model_cfg(**binary))
  assert model.threshold == 0.6
  img = (np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)
  probs = apis.inference_segmentor(model, img, probs=True)
  seg = apis.inference_segmentor(model, img)
  assert probs.shape == (40, 48, 1)
  np.testing.assert_array_equal(seg, (probs[..., 0] > 0.6).astype(np.int64))
  logits = np.array([[[[-1.0], [0.0], [2.0]]]], np.float32)  # sigmoid 0.27, 0.5, 0.88
  np.testing.assert_array_equal(np.asarray(predict(logits, 0.3)), [[[0, 1, 1]]])
  # BCE on the single channel: label 1 -> -log(sigmoid(x)), label 0 -> -log(1 - sigmoid(x))
  out = losses.cross_entropy(logits, np.array([[[1, 0, 255]]]), use_sigmoid=True)
  ref = (np.log1p(np.exp(1.0)) + np.log1p(np.exp(0.0))) / 3
  assert float(out) == pytest.approx(ref, rel=1e-5)
  with pytest.raises(ValueError, match="out_channels=3"):
    apis.init_segmentor(tiny_model_cfg(**dict(binary, out_channels=3)))


def test_segmentor_compiles_each_image_shape_once():
  """Segmentor.run compiles apart from the first run (xla_flags.compile_and_trim); jit's cache
  must then serve that call and later ones: one backend compile per program and image shape."""
  model = apis.init_segmentor(tiny_model_cfg())
  compiled = []

  def record(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
      compiled.append(kwargs.get("fun_name"))

  jax.monitoring.register_event_duration_secs_listener(record)
  try:
    for shape in [(1, 32, 48, 3), (1, 32, 48, 3), (1, 40, 40, 3), (1, 32, 48, 3)]:
      x = np.zeros(shape, np.float32)
      assert apis.encode_decode(model, x).shape == (*shape[:3], 3)
      assert apis.inference_logits(model, x).shape == (*shape[:3], 3)
  finally:
    jax.monitoring.unregister_event_duration_listener(record)
  assert sorted(compiled) == ["jit(encode_decode)"] * 2 + ["jit(inference_logits)"] * 2, compiled


def test_save_converted_twice_into_one_directory_keeps_the_second(tmp_path):
  """Re-running a conversion (tools/convert_weights.py, the inference notebook) into the same
  directory replaces the weights instead of failing on the existing step."""
  model_cfg = tiny_model_cfg()
  first = apis.init_segmentor(model_cfg).variables
  second = jax.tree.map(lambda v: np.asarray(v) + 1, first)
  out = str(tmp_path / "converted")
  apis.save_converted(out, model_cfg, first)
  apis.save_converted(out, model_cfg, second)
  loaded = apis.init_segmentor(out).variables
  for got, want in zip(jax.tree.leaves(loaded), jax.tree.leaves(second)):
    np.testing.assert_array_equal(np.asarray(got), want)


def test_init_segmentor_takes_what_mmseg_takes(converted, tmp_path):
  # A converted directory, a .json model dict, a model dict and an mmseg-style .py config file,
  # each with the mmseg checkpoint, all give mmseg's logits.
  pytest.importorskip("torch")
  case, out = converted
  pth, model_json = os.path.join(case, "model.pth"), os.path.join(case, "mmseg_model.json")
  model_dict = json.load(open(model_json))
  py = tmp_path / "mmseg_style.py"
  py.write_text(f"model = {model_dict!r}\n".replace("null", "None"))
  x = np.load(os.path.join(case, "input.npy")).transpose(0, 2, 3, 1)
  ref = np.load(os.path.join(case, "logits.npy")).transpose(0, 2, 3, 1)
  for config, checkpoint in [(out, None), (model_json, pth), (model_dict, pth), (str(py), pth)]:
    model = apis.init_segmentor(config, checkpoint)
    assert np.abs(np.asarray(apis.encode_decode(model, x)) - ref).max() < 1e-4, config
  with pytest.raises(FileNotFoundError, match="not a converted segjax directory"):
    apis.init_segmentor(str(tmp_path))


def test_segmentor_losses_are_mmsegs_forward_train(converted):
  pytest.importorskip("torch")
  case, out = converted
  expected = json.load(open(os.path.join(case, "train_loss.json")))["losses"]
  data = np.load(os.path.join(case, "train_input.npz"))
  got = apis.segmentor_losses(apis.init_segmentor(out), data["img"].astype(np.float32).transpose(0, 2, 3, 1),
                              data["gt_semantic_seg"][:, 0])
  assert got.keys() == expected.keys()
  for key in ("decode.loss_ce", "aux.loss_ce"):
    assert float(got[key]) == pytest.approx(expected[key], rel=2e-5)
