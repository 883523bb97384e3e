"""HRNet, OCRNet, UNet and PointRend behaviour the generic registry / oracle / conformance tests
do not see: mmcv's point_sample and PyTorch's ConvTranspose2d against torch, PointRend's training
loss on mmseg's own points and its point selection rules, OCR's class contexts against mmseg's
formula, and the errors of bad configurations."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ORACLE, require
from segjax.models import build_segmentor
from segjax.models.backbones.hrnet import HRNet
from segjax.models.backbones.unet import ConvTranspose, UNet
from segjax.models.heads.ocr_head import OCRHead, spatial_gather
from segjax.models.heads.point_head import PointHead, given_points, most_uncertain, point_sample

torch = pytest.importorskip("torch")
F = torch.nn.functional


def nhwc(a):
  return np.asarray(a).transpose(0, 2, 3, 1)


def nchw(a):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2)))


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_point_sample_is_torch_grid_sample(mode, align_corners):
  # mmcv's point_sample is F.grid_sample(x, 2 * points - 1) with zero padding; points reach
  # outside [0, 1] so the zero-padded corners are exercised.
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
  points = rng.uniform(-0.2, 1.2, size=(2, 50, 2)).astype(np.float32)
  ref = F.grid_sample(nchw(x), torch.from_numpy(points[:, :, None] * 2 - 1), mode=mode,
                      padding_mode="zeros", align_corners=align_corners)[..., 0]
  got = point_sample(jnp.asarray(x), jnp.asarray(points), align_corners, mode)
  np.testing.assert_allclose(got, ref.numpy().transpose(0, 2, 1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kernel_size, stride", [(4, 2), (2, 2), (3, 1), (6, 2)])
def test_conv_transpose_is_torch_conv_transpose2d(kernel_size, stride):
  x = np.random.default_rng(1).normal(size=(2, 5, 7, 6)).astype(np.float32)
  padding = (kernel_size - stride) // 2
  deconv = torch.nn.ConvTranspose2d(6, 3, kernel_size, stride, padding)
  # The converter's layout of a (in, out, kh, kw) weight: (kh, kw, out, in).
  params = {"kernel": deconv.weight.detach().numpy().transpose(2, 3, 1, 0),
            "bias": deconv.bias.detach().numpy()}
  got = ConvTranspose(3, kernel_size, stride, padding).apply({"params": params}, x)
  ref = deconv(nchw(x)).detach().numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)


def test_spatial_gather_is_mmseg_formula():
  # mmseg: softmax(scale * probs) over positions, then probs @ feats, per class.
  rng = np.random.default_rng(2)
  feats, probs = rng.normal(size=(2, 4, 5, 6)), rng.normal(size=(2, 4, 5, 3))
  p = torch.softmax(3 * nchw(probs).reshape(2, 3, -1), dim=2)
  ref = torch.matmul(p, nchw(feats).reshape(2, 6, -1).permute(0, 2, 1))  # (N, K, C)
  got = spatial_gather(jnp.asarray(feats), jnp.asarray(probs), 3)
  assert got.shape == (2, 3, 1, 6)
  np.testing.assert_allclose(np.asarray(got)[:, :, 0], ref.numpy(), rtol=1e-6, atol=1e-6)


def oracle_case(name):
  d = require(os.path.join(ORACLE, name))
  from segjax.convert import convert_checkpoint
  model = build_segmentor(json.load(open(os.path.join(d, "mmseg_model.json"))))
  x = nhwc(np.load(os.path.join(d, "input.npy")))
  return d, model, convert_checkpoint(os.path.join(d, "model.pth"), model, x.shape), x


def test_pointrend_training_loss_on_mmseg_points():
  # mmseg drew its training points with torch's RNG; given the same points (train_input.npz's
  # point_coords) every loss term is mmseg's: the FPN stage's and the point head's.
  d, model, variables, _ = oracle_case("pointrend_r50")
  expected = json.load(open(os.path.join(d, "train_loss.json")))
  data = np.load(os.path.join(d, "train_input.npz"))
  img = nhwc(data["img"].astype(np.float32))
  labels = data["gt_semantic_seg"][:, 0].astype(np.int32)
  variables = {**variables, **given_points(data["point_coords"])}
  got, _ = model.apply(variables, img, labels, train=True, mode="loss", mutable=["batch_stats"])
  assert sorted(got) == sorted(expected["losses"])
  for key, value in expected["losses"].items():
    assert float(got[key]) == pytest.approx(value, rel=2e-5), key


def test_pointrend_samples_uncertain_points_from_its_rng():
  d, model, variables, _ = oracle_case("pointrend_r50")
  data = np.load(os.path.join(d, "train_input.npz"))
  img = nhwc(data["img"].astype(np.float32))
  labels = data["gt_semantic_seg"][:, 0].astype(np.int32)
  run = lambda key: model.apply(variables, img, labels, train=True, mode="loss",
                                mutable=["batch_stats"], rngs={"sampling": key})[0]
  a, b, a_again = run(jax.random.PRNGKey(0)), run(jax.random.PRNGKey(1)), run(jax.random.PRNGKey(0))
  assert float(a["decode_1.pointloss_ce"]) == float(a_again["decode_1.pointloss_ce"])
  assert float(a["decode_1.pointloss_ce"]) != float(b["decode_1.pointloss_ce"])
  head = PointHead(in_channels=(4,), in_index=(0,), channels=4, num_classes=3)
  logits = np.random.default_rng(5).normal(size=(2, 8, 8, 3)).astype(np.float32)
  cfg = dict(num_points=40, oversample_ratio=3, importance_sample_ratio=0.75)
  points = np.asarray(head.apply({}, jnp.asarray(logits), cfg, method="get_points_train",
                                 rngs={"sampling": jax.random.PRNGKey(3)}))
  assert points.shape == (2, 40, 2) and ((points >= 0) & (points < 1)).all()
  # mmseg's rule for the importance share: the most uncertain of the oversampled candidates, the
  # uncertainty of the logits grid-sampled there (computed here with torch).
  candidates = np.random.default_rng(6).uniform(size=(2, 120, 2)).astype(np.float32)
  chosen = np.asarray(most_uncertain(jnp.asarray(logits), jnp.asarray(candidates), 30))
  sampled = F.grid_sample(nchw(logits), torch.from_numpy(candidates[:, :, None] * 2 - 1), align_corners=False)
  top2 = torch.topk(sampled[..., 0], 2, dim=1)[0]
  uncertainty = (top2[:, 1] - top2[:, 0]).numpy()
  for i in range(2):
    expected = candidates[i][np.argsort(-uncertainty[i], kind="stable")[:30]]
    np.testing.assert_array_equal(np.sort(chosen[i], 0), np.sort(expected, 0))


def test_pointrend_subdivision_points_are_mmseg_pixel_centres():
  head = PointHead(in_channels=(4,), in_index=(0,), channels=4, num_classes=3)
  logits = jnp.asarray(np.random.default_rng(4).normal(size=(2, 6, 10, 3)), jnp.float32)
  indices, points = head.apply({}, logits, dict(subdivision_num_points=17), method="get_points_test")
  top2 = np.sort(np.asarray(logits), -1)[..., -2:]
  uncertainty = (top2[..., 0] - top2[..., 1]).reshape(2, -1)
  expected = np.argsort(-uncertainty, axis=1, kind="stable")[:, :17]
  np.testing.assert_array_equal(np.sort(indices, 1), np.sort(expected, 1))
  np.testing.assert_allclose(points[..., 0], (np.asarray(indices) % 10 + 0.5) / 10, atol=1e-7)
  np.testing.assert_allclose(points[..., 1], (np.asarray(indices) // 10 + 0.5) / 6, atol=1e-7)


def test_ocrnet_stage_logits_feed_the_ocr_head():
  # The OCR head's output depends on the FCN stage's logits (its soft object regions).
  d, model, variables, x = oracle_case("ocrnet_hr18")
  out = model.apply(variables, x)
  np.testing.assert_allclose(out["stages"][0], nhwc(np.load(os.path.join(d, "head_logits_stage0.npy"))),
                             atol=2e-4)
  head = OCRHead(in_channels=(4, 8, 16, 32), in_index=(0, 1, 2, 3), input_transform="resize_concat",
                 channels=16, ocr_channels=8, num_classes=19, norm_cfg=dict(type="BN"))
  head_vars = {c: variables[c]["decode_head"]["1"] for c in ("params", "batch_stats")}
  same = head.apply(head_vars, out["backbone"], out["stages"][0])
  other = head.apply(head_vars, out["backbone"], -out["stages"][0])
  np.testing.assert_allclose(same, out["decode"], atol=1e-5)
  assert np.abs(np.asarray(other) - np.asarray(same)).max() > 1e-2


def test_hrnet_multiscale_output_false_keeps_the_first_branch():
  cfg = dict(HRNet.TINY)
  x = jnp.zeros((1, 64, 64, 3))
  full = HRNet(**cfg)
  feats = full.apply(full.init(jax.random.PRNGKey(0), x), x)
  assert [f.shape for f in feats] == [(1, 16, 16, 4), (1, 8, 8, 8), (1, 4, 4, 16), (1, 2, 2, 32)]
  single = HRNet(**cfg, multiscale_output=False)
  variables = single.init(jax.random.PRNGKey(0), x)
  assert [f.shape for f in single.apply(variables, x)] == [(1, 16, 16, 4)]
  # mmseg's last HRModule then has only fuse_layers.0.
  assert sorted(variables["params"]["stage4"]["1"]["fuse_layers"]) == ["0"]


def test_bad_configs_name_the_problem():
  x = jnp.zeros((1, 64, 64, 3))
  extra = {k: dict(v) for k, v in HRNet.TINY["extra"].items()}
  del extra["stage3"]["num_channels"]
  with pytest.raises(ValueError, match="stage3 lacks \\['num_channels'\\]"):
    HRNet(extra=extra).init(jax.random.PRNGKey(0), x)
  extra = {k: dict(v) for k, v in HRNet.TINY["extra"].items()}
  extra["stage2"]["num_blocks"] = (1,)
  with pytest.raises(ValueError, match="stage2.num_blocks=\\(1,\\) has 1 entries but num_branches=2"):
    HRNet(extra=extra).init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match="divisible by the whole downsample rate 16"):
    UNet(base_channels=2).init(jax.random.PRNGKey(0), jnp.zeros((1, 40, 64, 3)))
  with pytest.raises(ValueError, match="dec_num_convs=\\(2, 2, 2\\) must have 4 entries"):
    UNet(base_channels=2, dec_num_convs=(2, 2, 2)).init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match="upsample_cfg.type='deconv'"):
    UNet(base_channels=2, upsample_cfg=dict(type="deconv")).init(jax.random.PRNGKey(0), x)
  feats = [jnp.zeros((1, 8, 8, 4))]
  ocr = OCRHead(in_channels=4, in_index=0, channels=4, ocr_channels=2, num_classes=3, scale=2)
  with pytest.raises(ValueError, match="scale=2 > 1 is not supported"):
    ocr.init(jax.random.PRNGKey(0), feats, jnp.zeros((1, 8, 8, 3)))
  ocr = OCRHead(in_channels=4, in_index=0, channels=4, ocr_channels=2, num_classes=3)
  with pytest.raises(ValueError, match="previous stage's logits \\(1, 4, 4, 3\\)"):
    ocr.init(jax.random.PRNGKey(0), feats, jnp.zeros((1, 4, 4, 3)))
