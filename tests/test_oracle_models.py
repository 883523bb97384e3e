"""Converted MMSegmentation checkpoints give MMSegmentation's logits (../shared/oracle/<case>)."""
import json
import os

import jax
import numpy as np
import pytest

from conftest import ORACLE, require
from segjax.convert import CheckpointMismatchError, convert_checkpoint, convert_state_dict, load_torch_checkpoint
from segjax.models import build_segmentor
from segjax.models.segmentor import encode_decode

pytest.importorskip("torch")
CASES = ["fcn_r50-d8", "pspnet_r50-d8", "pspnet_r18-d8", "deeplabv3_r50-d8", "deeplabv3plus_r50-d8",
         "upernet_r50"]


def nhwc(a):
  return np.asarray(a).transpose(0, 2, 3, 1)


def tolerance(ref):
  # The float32 noise floor through 50 layers: against a float64 evaluation of the same network,
  # MMSegmentation's float32 logits are off by up to 1.1e-4 x max|logit| and segjax's by up to
  # 2.3e-4 x (measured on deeplabv3plus_r50-d8, logits up to 7). A structural mistake (padding,
  # dilation, eps, align_corners) moves logits by 1e-2 or more.
  return 1e-4 + 3e-4 * float(np.abs(ref).max())


@pytest.fixture(scope="module", params=CASES)
def case(request):
  d = require(os.path.join(ORACLE, request.param))
  cfg = json.load(open(os.path.join(d, "mmseg_model.json")))
  model = build_segmentor(cfg)
  x = nhwc(np.load(os.path.join(d, "input.npy")))
  variables = convert_checkpoint(os.path.join(d, "model.pth"), model, x.shape)
  return d, model, variables, x


def test_logits_match(case):
  d, model, variables, x = case
  out = jax.jit(lambda v, x: encode_decode(model, v, x))(variables, x)
  ref = nhwc(np.load(os.path.join(d, "logits.npy")))
  assert out.shape == ref.shape
  assert np.abs(np.asarray(out) - ref).max() <= tolerance(ref)
  # Predictions agree wherever mmseg's top-2 logits are not within the noise floor.
  top2 = np.sort(ref, -1)[..., -2:]
  clear = (top2[..., 1] - top2[..., 0]) > 2 * tolerance(ref)
  assert (np.argmax(np.asarray(out), -1) == np.argmax(ref, -1))[clear].all()


def test_head_and_aux_logits_match(case):
  d, model, variables, x = case
  out = model.apply(variables, x)
  ref = nhwc(np.load(os.path.join(d, "head_logits.npy")))
  assert np.abs(np.asarray(out["decode"]) - ref).max() <= tolerance(ref)
  for i, aux in enumerate(out["aux"]):
    ref = nhwc(np.load(os.path.join(d, f"aux_logits_{i}.npy")))
    assert np.abs(np.asarray(aux) - ref).max() <= tolerance(ref)


def test_backbone_features_match(case):
  d, model, variables, x = case
  from segjax.models import build_module
  backbone = build_module(model.backbone, "backbone")(None)
  feats = backbone.apply({"params": variables["params"]["backbone"],
                          "batch_stats": variables["batch_stats"]["backbone"]}, x)
  refs = np.load(os.path.join(d, "backbone_feats.npz"))
  for i, f in enumerate(feats):
    ref = nhwc(refs[f"feat_{i}"])
    assert np.abs(np.asarray(f) - ref).max() <= tolerance(ref)


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
  assert "decode_head.bottleneck.conv.weight: checkpoint (3, 3, 544, 32)" in msg or \
         "decode_head.bottleneck.conv.weight" in msg
  assert "decode_head.extra.weight" in msg


def test_to_state_dict_gives_back_mmseg_checkpoint(case):
  # Inverse conversion: every key and value of the mmseg checkpoint (num_batches_tracked aside).
  from segjax.convert import to_state_dict
  d, _, variables, _ = case
  original = {k: v for k, v in load_torch_checkpoint(os.path.join(d, "model.pth")).items()
              if not k.endswith("num_batches_tracked")}
  back = to_state_dict(variables)
  assert back.keys() == original.keys()
  for k, v in original.items():
    np.testing.assert_array_equal(back[k], v, err_msg=k)
