"""Behaviour of APC/DM/ISA/Enc/PSA/FPN heads, JPU and ResNeSt that the registry and oracle tests
do not see: EncHead's two forward outputs against mmseg's (encnet_r50-d8), its SE-loss targets
and loss against torch's histc and BCE, mmcv's PSAMask (forward and gradient) against a numpy
transcription of mmcv's CPU kernel, DMHead's dynamic filters and ResNeSt's radix softmax against
torch's grouped convolution / mmseg's RSoftmax, and the errors bad arguments give."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ORACLE, require
from segjax.models.backbones.resnest import SplitAttentionConv2d
from segjax.models.heads.dm_head import dynamic_depthwise_conv
from segjax.models.heads.enc_head import EncHead, class_presence, presence_bce
from segjax.models.heads.fpn_head import FPNHead
from segjax.models.heads.isa_head import ISAHead
from segjax.models.heads.psa_head import PSAHead, psa_mask
from segjax.models.necks.jpu import JPU

torch = pytest.importorskip("torch")
BN = dict(type="BN", requires_grad=True)


def nhwc(a):
  return np.asarray(a).transpose(0, 2, 3, 1)


# ---- EncHead ------------------------------------------------------------------------------

def test_enc_head_forward_outputs_match_mmseg():
  """(seg logits, SE logits) of the converted encnet_r50-d8 head on the converted backbone's
  features, within 2x mmseg's own float32 error on its logits (config.json)."""
  from segjax.convert import convert_checkpoint
  from segjax.models import build_segmentor
  d = require(os.path.join(ORACLE, "encnet_r50-d8"))
  cfg = json.load(open(os.path.join(d, "mmseg_model.json")))
  model = build_segmentor(cfg)
  x = nhwc(np.load(os.path.join(d, "input.npy")))
  variables = convert_checkpoint(os.path.join(d, "model.pth"), model, x.shape)
  feats = model.apply(variables, x)["backbone"]
  head = EncHead(**{k: v for k, v in cfg["decode_head"].items() if k != "type"})
  head_vars = {c: variables[c]["decode_head"] for c in ("params", "batch_stats")}
  seg, se = head.apply(head_vars, feats)
  ref = np.load(os.path.join(d, "head_forward_outputs.npz"))
  floor = json.load(open(os.path.join(d, "config.json")))["float32_vs_float64_max_abs"]
  assert seg.shape == nhwc(ref["out0"]).shape and se.shape == ref["out1"].shape
  assert np.abs(np.asarray(seg) - nhwc(ref["out0"])).max() <= 2 * floor
  assert np.abs(np.asarray(se) - ref["out1"]).max() <= 2 * floor
  # forward_test gives the segmentation logits alone.
  np.testing.assert_array_equal(head.apply(head_vars, feats, method=EncHead.forward_test), seg)


def test_se_targets_are_torch_histc_presence():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 7, size=(3, 9, 11))
  labels[0, labels[0] == 3] = 255  # ignored pixels and an absent class
  labels[1] = 6  # only the last class (histc's closed right edge)
  labels[2, :4] = 255
  expected = np.stack([(torch.histc(torch.tensor(l, dtype=torch.float32), bins=7, min=0, max=6) > 0).numpy()
                       for l in labels]).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(class_presence(jnp.asarray(labels), 7)), expected)


def test_se_loss_is_mean_bce_times_loss_weight():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 5)).astype(np.float32) * 3
  target = (rng.random((2, 5)) > 0.5).astype(np.float32)
  pos_weight = np.array([0.5, 1, 2, 1, 3], np.float32)
  expected = torch.nn.functional.binary_cross_entropy_with_logits(
      torch.tensor(logits), torch.tensor(target), pos_weight=torch.tensor(pos_weight))
  got = presence_bce(jnp.asarray(logits), jnp.asarray(target), pos_weight)
  assert float(got) == pytest.approx(float(expected), rel=1e-6)
  # Through the head's losses: loss_se = loss_weight x that, from the labels' class presence.
  head = EncHead(in_channels=(4,), in_index=(0,), channels=4, num_codes=2, num_classes=5,
                 loss_se_decode=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=0.2))
  labels = np.zeros((2, 3, 3), np.int32)
  labels[0, 0, 0], labels[1] = 4, 2
  seg = jnp.zeros((2, 3, 3, 5))
  out = head.losses((seg, jnp.asarray(logits)), jnp.asarray(labels))
  presence = np.array([[1, 0, 0, 0, 1], [0, 0, 1, 0, 0]], np.float32)
  expected = 0.2 * torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(logits), torch.tensor(presence))
  assert sorted(out) == ["acc_seg", "loss_ce", "loss_se"]
  assert float(out["loss_se"]) == pytest.approx(float(expected), rel=1e-6)


def test_enc_head_rejects_a_softmax_se_loss():
  head = EncHead(in_channels=(4,), in_index=(0,), channels=4, num_codes=2, num_classes=3,
                 loss_se_decode=dict(type="CrossEntropyLoss", use_sigmoid=False))
  with pytest.raises(ValueError, match="loss_se_decode"):
    head.losses((jnp.zeros((1, 2, 2, 3)), jnp.zeros((1, 3))), jnp.zeros((1, 2, 2), jnp.int32))


# ---- PSAMask ------------------------------------------------------------------------------

def mmcv_psamask_forward(mask, psa_type, mask_h, mask_w):
  """mmcv's psamask_collect_forward / psamask_distribute_forward (CPU kernel), NCHW, into a
  zero-initialised (N, H*W, H, W) buffer."""
  n, _, h_feature, w_feature = mask.shape
  half_h, half_w = (mask_h - 1) // 2, (mask_w - 1) // 2
  out = np.zeros((n, h_feature * w_feature, h_feature, w_feature), mask.dtype)
  for b in range(n):
    for h in range(h_feature):
      for w in range(w_feature):
        for hidx in range(max(0, half_h - h), min(mask_h, h_feature + half_h - h)):
          for widx in range(max(0, half_w - w), min(mask_w, w_feature + half_w - w)):
            q = (hidx + h - half_h) * w_feature + (widx + w - half_w)
            value = mask[b, hidx * mask_w + widx, h, w]
            if psa_type == "collect":
              out[b, q, h, w] = value
            else:
              out[b, h * w_feature + w, q // w_feature, q % w_feature] = value
  return out


def mmcv_psamask_backward(grad_out, psa_type, mask_h, mask_w):
  """mmcv's psamask_*_backward: each mask entry takes the gradient of the buffer entry it wrote."""
  n, _, h_feature, w_feature = grad_out.shape
  half_h, half_w = (mask_h - 1) // 2, (mask_w - 1) // 2
  grad = np.zeros((n, mask_h * mask_w, h_feature, w_feature), grad_out.dtype)
  for b in range(n):
    for h in range(h_feature):
      for w in range(w_feature):
        for hidx in range(max(0, half_h - h), min(mask_h, h_feature + half_h - h)):
          for widx in range(max(0, half_w - w), min(mask_w, w_feature + half_w - w)):
            q = (hidx + h - half_h) * w_feature + (widx + w - half_w)
            if psa_type == "collect":
              grad[b, hidx * mask_w + widx, h, w] = grad_out[b, q, h, w]
            else:
              grad[b, hidx * mask_w + widx, h, w] = grad_out[b, h * w_feature + w, q // w_feature, q % w_feature]
  return grad


@pytest.mark.parametrize("psa_type", ["collect", "distribute"])
@pytest.mark.parametrize("feature, mask", [((3, 4), (5, 7)), ((4, 5), (3, 3)), ((5, 3), (4, 2)), ((2, 2), (9, 9))])
def test_psa_mask_matches_mmcv_kernel(psa_type, feature, mask):
  rng = np.random.default_rng(0)
  h, w = feature
  mask_h, mask_w = mask
  x = rng.normal(size=(2, mask_h * mask_w, h, w))
  expected = mmcv_psamask_forward(x, psa_type, mask_h, mask_w)
  got, vjp = jax.vjp(lambda m: psa_mask(m, psa_type, mask), jnp.asarray(nhwc(x), jnp.float32))
  np.testing.assert_array_equal(np.asarray(got), nhwc(expected).astype(np.float32))
  cotangent = rng.normal(size=expected.shape)
  (grad,) = vjp(jnp.asarray(nhwc(cotangent), jnp.float32))
  np.testing.assert_allclose(np.asarray(grad), nhwc(mmcv_psamask_backward(cotangent, psa_type, mask_h, mask_w)),
                             rtol=1e-6)


def test_psa_mask_errors():
  with pytest.raises(ValueError, match="mask_size"):
    psa_mask(jnp.zeros((1, 3, 4, 10)), "collect", (3, 3))
  with pytest.raises(ValueError, match="psa_type"):
    psa_mask(jnp.zeros((1, 3, 4, 9)), "both", (3, 3))


@pytest.mark.parametrize("psa_type", ["collect", "distribute", "bi-direction"])
@pytest.mark.parametrize("compact", [False, True])
def test_psa_head_modes_run(psa_type, compact):
  # 8x10 -> shrunk 4x5 (both sides divide); compact needs mask_h * mask_w == 4 * 5.
  head = PSAHead(in_channels=6, channels=4, num_classes=3, mask_size=(4, 5) if compact else (3, 5),
                 psa_type=psa_type, compact=compact, norm_cfg=BN)
  x = [jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 10, 6)), jnp.float32)]
  variables = head.init(jax.random.PRNGKey(0), x)
  assert head.apply(variables, x).shape == (2, 8, 10, 3)


def test_psa_head_errors():
  x = [jnp.zeros((1, 8, 10, 6))]
  with pytest.raises(ValueError, match="psa_type"):
    PSAHead(in_channels=6, channels=4, mask_size=(3, 3), psa_type="both").init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match="compact"):
    PSAHead(in_channels=6, channels=4, mask_size=(3, 3), compact=True).init(jax.random.PRNGKey(0), x)


# ---- DMHead, ResNeSt --------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_dynamic_filters_match_mmseg_grouped_conv(k):
  """mmseg's DCM: pad (k-1)//2 (one more at the top/left for even k), F.conv2d of (1, n*c, h, w)
  with the (n*c, 1, k, k) generated filters, groups n*c."""
  rng = np.random.default_rng(k)
  n, c, h, w = 2, 3, 6, 7
  x = rng.normal(size=(n, c, h, w)).astype(np.float32)
  filters = rng.normal(size=(n, c, k, k)).astype(np.float32)
  pad = (k - 1) // 2
  p2d = (pad, pad, pad, pad) if (k - 1) % 2 == 0 else (pad + 1, pad, pad + 1, pad)
  padded = torch.nn.functional.pad(torch.tensor(x).view(1, n * c, h, w), p2d)
  expected = torch.nn.functional.conv2d(padded, torch.tensor(filters).view(n * c, 1, k, k), groups=n * c).view(n, c, h, w)
  got = dynamic_depthwise_conv(jnp.asarray(nhwc(x)), jnp.asarray(nhwc(filters)))
  np.testing.assert_allclose(np.asarray(got), nhwc(expected.numpy()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("radix, groups", [(2, 1), (4, 2), (1, 1)])
def test_split_attention_matches_mmseg_rsoftmax(radix, groups):
  """SplitAttentionConv2d against mmseg's forward (torch, NCHW) with the same weights (no norm)."""
  rng = np.random.default_rng(radix)
  channels, in_channels = 8, 8
  module = SplitAttentionConv2d(channels, groups=groups, radix=radix, norm_cfg=BN)
  x = rng.normal(size=(2, 5, 6, in_channels)).astype(np.float32)
  variables = module.init(jax.random.PRNGKey(0), jnp.asarray(x))
  params = jax.tree.map(lambda p: np.asarray(jax.random.normal(jax.random.PRNGKey(p.size), p.shape)) * 0.5,
                        variables["params"])
  got = module.apply({**variables, "params": params}, jnp.asarray(x))
  t = lambda a: torch.tensor(np.asarray(a))
  kernel = lambda k: t(k).permute(3, 2, 0, 1)  # (kh, kw, in/groups, out) -> torch's (out, in/groups, kh, kw)

  def bn(y, name):  # eval mode, running mean 0 / var 1 (init)
    return y / np.sqrt(1 + 1e-5) * t(params[name]["scale"]).view(1, -1, 1, 1) + t(params[name]["bias"]).view(1, -1, 1, 1)

  y = torch.relu(bn(torch.nn.functional.conv2d(t(x).permute(0, 3, 1, 2), kernel(params["conv"]["kernel"]),
                                               padding=1, groups=groups * radix), "bn0"))
  batch = y.shape[0]
  splits = y.view(batch, radix, -1, *y.shape[2:]) if radix > 1 else y
  gap = (splits.sum(dim=1) if radix > 1 else y).mean(dim=(2, 3), keepdim=True)
  gap = torch.nn.functional.conv2d(gap, kernel(params["fc1"]["kernel"]), t(params["fc1"]["bias"]), groups=groups)
  atten = torch.nn.functional.conv2d(torch.relu(bn(gap, "bn1")), kernel(params["fc2"]["kernel"]),
                                     t(params["fc2"]["bias"]), groups=groups)
  if radix > 1:  # mmseg's RSoftmax
    atten = torch.softmax(atten.view(batch, groups, radix, -1).transpose(1, 2), dim=1).reshape(batch, -1)
    expected = (atten.view(batch, radix, -1, 1, 1) * splits).sum(dim=1)
  else:
    expected = torch.sigmoid(atten.view(batch, -1)).view(batch, -1, 1, 1) * y
  np.testing.assert_allclose(np.asarray(got), nhwc(expected.numpy()), rtol=1e-4, atol=1e-5)


# ---- argument errors ----------------------------------------------------------------------------

def test_errors_name_the_argument():
  feats = [jnp.zeros((1, 16 // s, 16 // s, c)) for c, s in ((4, 1), (8, 2))]
  with pytest.raises(ValueError, match="isa_channels"):
    ISAHead(in_channels=8, in_index=1, channels=4).init(jax.random.PRNGKey(0), feats)
  with pytest.raises(ValueError, match="feature_strides"):
    FPNHead(in_channels=(4, 8), in_index=(0, 1), channels=4, feature_strides=(8,)).init(jax.random.PRNGKey(0), feats)
  with pytest.raises(ValueError, match="in_channels"):
    JPU(in_channels=(4, 8, 16), mid_channels=4).init(jax.random.PRNGKey(0), feats)
  with pytest.raises(ValueError, match="in_channels"):
    JPU(in_channels=(4, 6), mid_channels=4).init(jax.random.PRNGKey(0), feats)
