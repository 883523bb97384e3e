"""Converted MMSegmentation checkpoints give MMSegmentation's outputs and training losses, for
every case folder in ../shared/oracle (a case whose classes segjax lacks is skipped, naming them,
so a new case is tested the day its family lands)."""
import functools
import glob
import json
import os

import jax
import numpy as np
import pytest

from conftest import ORACLE, fast_jit, require
from segjax import layers
from segjax.convert import CheckpointMismatchError, convert_checkpoint, convert_state_dict, load_torch_checkpoint
from segjax.models import build_segmentor
from segjax.models.heads.point_head import given_points

pytest.importorskip("torch")
CASES = sorted(os.path.basename(os.path.dirname(p))
               for p in glob.glob(os.path.join(ORACLE, "*", "mmseg_model.json")))


def nhwc(a):
  return np.asarray(a).transpose(0, 2, 3, 1)


def outputs(model, variables, x):
  """Every output the oracle records, by its file name: ``logits`` (encode_decode), the decode
  head's test logits, each stage's (cascades), each auxiliary head's, every backbone and neck
  level."""
  out = model.apply(variables, x)
  named = {"logits": model.apply(variables, x, mode="encode_decode"), "head_logits": out["decode"],
           **{f"aux_logits_{i}": a for i, a in enumerate(out["aux"])},
           **levels("feat", out["backbone"]), **levels("neck", out.get("neck", ()))}
  if "stages" in out:
    named["head_logits_stage0"] = out["stages"][0]
  return named


def levels(prefix, feats):
  """``prefix_<i>`` per level; a level that is a tuple (a ViT's map and cls token with
  ``output_cls_token``) gives ``prefix_<i>_<j>``, as backbone_feats.npz names them."""
  named = {}
  for i, f in enumerate(feats):
    if isinstance(f, (list, tuple)):
      named.update({f"{prefix}_{i}_{j}": part for j, part in enumerate(f)})
    else:
      named[f"{prefix}_{i}"] = f
  return named


def npz_key(name):
  """``feat_0`` / ``neck_0_1`` -> the key in backbone_feats.npz / neck_feats.npz."""
  return "feat_" + name.split("_", 1)[1]


def reference(d, name):
  """The oracle's array for an output name, NHWC (maps) or as stored (cls tokens); None if the
  case does not record it."""
  to_nhwc = lambda a: nhwc(a) if a.ndim == 4 else a
  if name.startswith(("feat_", "neck_")):
    path = os.path.join(d, "backbone_feats.npz" if name.startswith("feat_") else "neck_feats.npz")
    if not os.path.exists(path) or npz_key(name) not in np.load(path):
      return None
    return to_nhwc(np.load(path)[npz_key(name)])
  path = os.path.join(d, f"{name}.npy")
  return to_nhwc(np.load(path)) if os.path.exists(path) else None


def channel_stats_reference(d, name):
  """(shape, per-channel mean, per-channel std) of a backbone / neck level the case stores only
  as statistics (LRASPP's large maps), NCHW shape; None otherwise."""
  if not name.startswith(("feat_", "neck_")):
    return None
  path = os.path.join(d, "backbone_feats.npz" if name.startswith("feat_") else "neck_feats.npz")
  key = npz_key(name)
  if not os.path.exists(path) or f"{key}_chmean" not in np.load(path):
    return None
  data = np.load(path)
  return tuple(data[f"{key}_shape"]), data[f"{key}_chmean"], data[f"{key}_chstd"]


def build_case(name):
  """The segjax model of case ``name``, or a skip naming the class segjax does not have."""
  d = require(os.path.join(ORACLE, name))
  cfg = json.load(open(os.path.join(d, "mmseg_model.json")))
  try:
    return d, build_segmentor(cfg)
  except ValueError as e:
    if "is not available" in str(e):
      pytest.skip(f"{name}: {e}")
    raise


# How far a float32 implementation may land from MMSegmentation's float32 output. Any float32
# implementation rounds every activation; the network's own sensitivity to that rounding sets the
# floor. It is measured per case and per output, in float64, as the largest change caused by
# rounding the input alone (half a float32 ulp, random signs): 3.1e-6 on pspnet_r18-d8's logits,
# 2.4e-4 on deeplabv3plus_r50-d8's. Measured against a float64 evaluation, mmseg's and segjax's
# float32 outputs each sit 3-5 times that far away (experiments/oracle_noise_floor.py), so 1e-4
# absolute is below float32's reach for the ResNet-50 cases. A structural mistake (padding,
# dilation, eps, align_corners) moves logits by 1e-2 or more.
NOISE_MULTIPLE = 20
# Some float32 rounding is not an input's: PyTorch computes bilinear weights in float32 (segjax
# copies it), a transformer's softmax rounds. Where segjax's own float32 output lies further from
# its float64 one than the floor says, that distance measures the output's float32 noise too;
# mmseg's float32 output may be five times as far (it has the same noise, independently drawn).
FLOAT32_MULTIPLE = 5
# segjax in float64 against mmseg's float64 logits (logits64.npy): both exact up to float64
# rounding, so they agree to ~1e-14 (transformers) or ~1e-8 where mmseg keeps a float32 constant
# in its float64 run (APCNet): far below mmseg's float32 error (1e-2 of it), or 1e-9.
FLOAT64_OF_FLOAT32_ERROR = 1e-2
FLOAT64_RTOL = 1e-9


def training_batch(d):
  """The case's training batch: NHWC float32 images, (N, H, W) labels, and variables to add for
  it: PointRend trains on the points mmseg's head sampled at random (``point_coords``)."""
  data = np.load(os.path.join(d, "train_input.npz"))
  extra = given_points(data["point_coords"]) if "point_coords" in data else {}
  return nhwc(data["img"].astype(np.float32)), data["gt_semantic_seg"][:, 0].astype(np.int32), extra


def float64_noise_floor(d, model):
  """Convert case ``d``; return the float64 outputs and training losses and, per output, the
  largest change that rounding the input to float32 (half an ulp, random signs, two draws)
  causes."""
  x = nhwc(np.load(os.path.join(d, "input.npy")))
  variables = convert_checkpoint(os.path.join(d, "model.pth"), model, x.shape)
  img, labels, extra = training_batch(d)
  with jax.enable_x64(True):
    run64 = fast_jit(functools.partial(outputs_and_training_losses, model))
    v64 = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
    x64, img64 = x.astype(np.float64), img.astype(np.float64)
    exact, exact_losses = jax.tree.map(np.asarray, run64(v64, x64, img64, labels, extra))
    rng = np.random.default_rng(0)
    noise = {k: 0.0 for k in exact}
    for _ in range(2):
      rounded = x64 * (1 + rng.choice([-1.0, 1.0], x.shape) * 2.0**-24)
      for k, v in run64(v64, rounded, img64, labels, extra)[0].items():
        noise[k] = max(noise[k], float(np.abs(np.asarray(v) - exact[k]).max()))
  return variables, x, exact, exact_losses, noise


# The test programs run once on tiny inputs: ``fast_jit`` compiles them for compile time (XLA's
# optimisations would take most of each case's time; they change rounding only, which the
# floors cover).


def outputs_and_training_losses(model, variables, x, img, labels, extra):
  """One program: every eval-mode output of ``x`` and the training loss dict of a batch."""
  losses, _ = model.apply({**variables, **extra}, img, labels, train=True, mode="loss",
                          mutable=["batch_stats"])
  return outputs(model, variables, x), losses


@pytest.fixture(scope="module", params=CASES)
def case(request):
  d, model = build_case(request.param)
  variables, x, exact, exact_losses, noise = float64_noise_floor(d, model)
  batch = training_batch(d)
  out, train_losses = jax.tree.map(np.asarray, fast_jit(
      functools.partial(outputs_and_training_losses, model))(variables, x, *batch))
  tolerance = {k: max(NOISE_MULTIPLE * n, FLOAT32_MULTIPLE * float(np.abs(out[k] - exact[k]).max()))
               for k, n in noise.items()}
  return d, model, variables, out, exact, tolerance, batch, train_losses, exact_losses


def test_logits_match(case):
  d, _, _, outs, _, tolerance, *_ = case
  out, ref = outs["logits"], reference(d, "logits")
  assert out.shape == ref.shape
  assert np.abs(out - ref).max() <= tolerance["logits"]
  # Predictions agree wherever mmseg's top-2 logits are not within the noise floor.
  top2 = np.sort(ref, -1)[..., -2:]
  clear = (top2[..., 1] - top2[..., 0]) > 2 * tolerance["logits"]
  assert (np.argmax(out, -1) == np.argmax(ref, -1))[clear].all()


def test_float32_as_close_to_float64_truth_as_mmseg(case):
  # The faithfulness rule: segjax's float32 logits are within 2x mmseg's own float32 distance to
  # the float64 result (mmseg's logits64.npy where shipped; else segjax's float64 evaluation,
  # which test_float64_evaluation_matches ties to mmseg).
  d, _, _, outs, exact, *_ = case
  truth = reference(d, "logits64")
  if truth is None:
    truth = exact["logits"]
    mmseg_error = json.load(open(os.path.join(d, "train_loss.json")))["float32_vs_float64_max_abs"]
  else:
    mmseg_error = float(np.abs(reference(d, "logits") - truth).max())
  assert np.abs(outs["logits"] - truth).max() <= 2 * mmseg_error


def test_every_output_matches(case):
  d, _, _, out, exact, tolerance, *_ = case
  assert out.keys() == exact.keys()
  compared = 0
  for name, value in out.items():
    ref = reference(d, name)
    stats = channel_stats_reference(d, name)
    if stats is not None:
      # A per-channel mean or (population) std moves by at most the largest element change.
      shape, mean, std = stats
      assert value.shape == (shape[0], shape[2], shape[3], shape[1]), name
      assert np.abs(value.mean((0, 1, 2)) - mean).max() <= tolerance[name], name
      assert np.abs(value.std((0, 1, 2)) - std).max() <= tolerance[name], name
      compared += 1
    if ref is None:
      continue
    assert value.shape == ref.shape, name
    assert np.abs(value - ref).max() <= tolerance[name], name
    compared += 1
  assert compared >= 3  # at least logits, head logits and a backbone level


def test_float64_evaluation_matches(case):
  # Without segjax's own float32 rounding, what is left is mmseg's: the same floor holds; and
  # where mmseg's float64 logits are shipped, segjax's float64 logits equal them.
  d, _, _, _, exact, tolerance, *_ = case
  for name, value in exact.items():
    ref = reference(d, name)
    if ref is not None:
      assert np.abs(value - ref).max() <= tolerance[name], name
  truth = reference(d, "logits64")
  if truth is not None:
    mmseg_error = np.abs(reference(d, "logits") - truth).max()
    allowed = max(FLOAT64_RTOL * max(1.0, np.abs(truth).max()), FLOAT64_OF_FLOAT32_ERROR * mmseg_error)
    assert np.abs(exact["logits"] - truth).max() <= allowed


# A loss term is a float32 reduction over ~10^4-10^5 pixels of a deep network's output: mmseg's
# own float32 value sits 1e-7 to 5e-5 (relative) from the float64 one (ResNeSt-101 the most).
# segjax's must be no further from the float64 truth than twice mmseg's distance, or 2e-5.
LOSS_RTOL = 2e-5


def flippable_pixels(model, variables, img, labels, logit_tolerance):
  """How many labelled pixels have their top-2 training-mode logits (any head, resized to the
  labels as the losses resize them) within the logits' noise tolerance: float32 rounding may
  change their argmax, so acc_seg may differ by that many pixels and no more."""
  from segjax import layers
  out, _ = fast_jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, img)
  heads = [out["decode"], *out["aux"], *out.get("stages", [])]
  worst = 0
  for logits in heads:
    logits = np.asarray(layers.resize(logits, labels.shape[1:3], False))
    top2 = np.sort(logits, -1)[..., -2:]
    near = (top2[..., 1] - top2[..., 0]) <= 2 * logit_tolerance
    worst = max(worst, int((near & (labels != 255)).sum()))
  return worst


def test_training_losses_match(case):
  d, model, variables, _, _, tolerance, (img, labels, _), got, exact = case
  expected = json.load(open(os.path.join(d, "train_loss.json")))
  assert sorted(got) == sorted(expected["losses"])
  valid = max(int((labels != expected["ignore_index"]).sum()), 1)
  for key, value in expected["losses"].items():
    if "loss" in key:
      truth = float(exact[key])
      allowed = max(2 * abs(value - truth), LOSS_RTOL * abs(truth))
      assert abs(float(got[key]) - truth) <= allowed, (key, float(got[key]), value, truth)
  points = [k for k in expected["losses"] if k.endswith("acc_point")]
  if points:  # PointRend's accuracy over the given points: at most one point may flip at a tie
    coords = np.load(os.path.join(d, "train_input.npz"))["point_coords"]
    for key in points:
      allowed = 100.0 / (coords.shape[0] * coords.shape[1]) * 1.01
      assert abs(float(got[key]) - expected["losses"][key]) <= allowed, (key, float(got[key]))
  accuracies = [k for k in expected["losses"] if k.endswith("acc_seg")]
  if any(abs(float(got[k]) - expected["losses"][k]) > 100.0 / valid for k in accuracies):
    # More than one pixel apart: allowed only for pixels whose top-2 logits are within noise.
    flippable = flippable_pixels(model, variables, img, labels, tolerance["logits"])
    for key in accuracies:
      tol = 100.0 * (flippable + 0.5) / valid
      assert abs(float(got[key]) - expected["losses"][key]) <= tol, (key, float(got[key]), tol)
  from segjax.losses import parse_losses
  total, _ = parse_losses(got)
  truth, _ = parse_losses(exact)
  allowed = max(2 * abs(expected["total_loss"] - float(truth)), LOSS_RTOL * abs(float(truth)))
  assert abs(float(total) - float(truth)) <= allowed


@pytest.mark.parametrize("name", ["stdc1", "fcn_hr18"])
def test_float32_faithful_with_every_3x3_convolution_by_winograd(name, monkeypatch):
  """At real size the wide 3x3 convolutions on large maps run by Winograd's F(2x2, 3x3)
  (``layers.conv3x3``); the oracle's small models on small inputs would not reach it. With the
  thresholds lowered to 1 every 3x3 stride-1 convolution takes it, and segjax's float32 logits
  still lie within 2x mmseg's own float32 distance to the float64 truth."""
  monkeypatch.setattr(layers, "_WINOGRAD_MIN_CHANNELS", 1)
  monkeypatch.setattr(layers, "_WINOGRAD_MIN_PIXELS", 1)
  taken = []
  winograd = layers._conv3x3_winograd
  monkeypatch.setattr(layers, "_conv3x3_winograd", lambda x, kernel: taken.append(x.shape) or winograd(x, kernel))
  d, model = build_case(name)
  x = nhwc(np.load(os.path.join(d, "input.npy")))
  variables = convert_checkpoint(os.path.join(d, "model.pth"), model, x.shape)
  logits = np.asarray(fast_jit(lambda v, x: model.apply(v, x, mode="encode_decode"))(variables, x))
  assert len(taken) >= 5  # input shapes that took it (each traced once)
  truth = reference(d, "logits64")
  assert np.abs(logits - truth).max() <= 2 * np.abs(reference(d, "logits") - truth).max()


def test_mismatched_checkpoint_names_the_keys():
  d = require(os.path.join(ORACLE, "pspnet_r50-d8"))
  cfg = json.load(open(os.path.join(d, "mmseg_model.json")))
  cfg["decode_head"]["channels"] = 48  # the checkpoint has 32
  model = build_segmentor(cfg)
  state = load_torch_checkpoint(os.path.join(d, "model.pth"))
  state["decode_head.extra.weight"] = np.zeros(3, np.float32)
  target = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 64, 64, 3), np.float32)))
  with pytest.raises(CheckpointMismatchError) as e:
    convert_state_dict(state, target)
  msg = str(e.value)
  assert "decode_head.bottleneck.conv.weight" in msg
  assert "decode_head.extra.weight" in msg


def test_to_state_dict_gives_back_mmseg_checkpoint(case):
  # Inverse conversion: every key and value of the mmseg checkpoint (num_batches_tracked aside,
  # and keys the family's checkpoint rules skip: e.g. ANN's APNB lists its one shared key/query
  # projection twice).
  import re
  from segjax.convert import checkpoint_rules, to_state_dict
  d, _, variables, *_ = case
  rules = checkpoint_rules(json.load(open(os.path.join(d, "mmseg_model.json"))))

  def skipped(key):
    return any(key.startswith(prefix) and any(re.search(p, key[len(prefix):]) for p in rule.skip)
               for prefix, rule in rules.items())

  original = {k: v for k, v in load_torch_checkpoint(os.path.join(d, "model.pth")).items()
              if not k.endswith("num_batches_tracked") and not skipped(k)}
  back = to_state_dict(variables)
  assert back.keys() == original.keys()
  for k, v in original.items():
    np.testing.assert_array_equal(back[k], v, err_msg=k)
