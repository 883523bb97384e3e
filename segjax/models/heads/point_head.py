"""PointHead (mmseg ``point_head.py``): PointRend's point head, the second stage of a
CascadeEncoderDecoder after an FPNHead. It classifies points from fine-grained features and the
previous stage's (coarse) logits sampled there; it trains on points chosen by uncertainty and
refines the coarse logits at test time by subdivision.

Random points in training come from the ``'sampling'`` rng stream when given, else the
``'dropout'`` stream (the one segjax's training loop passes), else a fixed key (a deterministic
training-mode forward draws the same points every time). To train on given points, as the oracle
test does with mmseg's, put them in the ``'point_coords'`` collection (``given_points``).
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax import layers, losses
from segjax.models.heads.decode_head import BaseCascadeDecodeHead

# The collection and variable name of points given to ``forward_train`` instead of sampled ones.
GIVEN_POINTS = "point_coords"
# mmseg's pointrend configs' values, used where train_cfg / test_cfg leave a key out.
TRAIN_DEFAULTS = dict(num_points=2048, oversample_ratio=3, importance_sample_ratio=0.75)
TEST_DEFAULTS = dict(subdivision_steps=2, subdivision_num_points=8196, scale_factor=2)


def point_sample(x, points, align_corners: bool = False, mode: str = "bilinear"):
  """mmcv ``point_sample``: ``F.grid_sample(x, 2 * points - 1, mode, padding_mode='zeros',
  align_corners)`` of NHWC ``x`` (N, H, W, C) at ``points`` (N, P, 2), (x, y) in [0, 1];
  returns (N, P, C). Written as PyTorch's CPU kernel computes it (unnormalise, floor, the four
  weights as products of distances, out-of-range corners read as 0), so it rounds the same."""
  n, h, w, c = x.shape
  grid = points.astype(x.dtype) * 2 - 1

  def unnormalize(g, size):
    if align_corners:
      return (g + 1) * ((size - 1) / 2)
    return (g + 1) * (size / 2) - 0.5

  ix, iy = unnormalize(grid[..., 0], w), unnormalize(grid[..., 1], h)
  flat = x.reshape(n, h * w, c)

  def gather(yi, xi):
    inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
    index = jnp.clip(yi, 0, h - 1).astype(jnp.int32) * w + jnp.clip(xi, 0, w - 1).astype(jnp.int32)
    values = jnp.take_along_axis(flat, index[..., None], axis=1)
    return jnp.where(inside[..., None], values, 0)

  if mode == "nearest":
    return gather(jnp.round(iy), jnp.round(ix))
  if mode != "bilinear":
    raise ValueError(f"point_sample mode={mode!r}; expected 'bilinear' or 'nearest'")
  x_w, y_n = jnp.floor(ix), jnp.floor(iy)
  dw, dn = ix - x_w, iy - y_n
  de, ds = 1 - dw, 1 - dn
  weights = [(ds * de), (ds * dw), (dn * de), (dn * dw)]
  corners = [gather(y_n, x_w), gather(y_n, x_w + 1), gather(y_n + 1, x_w), gather(y_n + 1, x_w + 1)]
  out = corners[0] * weights[0][..., None]
  for value, weight in zip(corners[1:], weights[1:]):
    out = out + value * weight[..., None]
  return out


def calculate_uncertainty(seg_logits):
  """mmseg: second-best minus best logit (the most uncertain point has the highest score)."""
  top2 = jax.lax.top_k(seg_logits, 2)[0]
  return top2[..., 1] - top2[..., 0]


def most_uncertain(seg_logits, candidates, k: int):
  """The ``k`` of ``candidates`` (N, M, 2) where the logits, sampled there (bilinear,
  align_corners=False as mmseg), are most uncertain: (N, k, 2)."""
  uncertainty = calculate_uncertainty(point_sample(seg_logits, candidates))
  idx = jax.lax.top_k(uncertainty, k)[1]
  return jnp.take_along_axis(candidates, idx[..., None], axis=1)


def given_points(coords, path=("decode_head", "1")) -> dict:
  """The variables entry that makes the PointHead at ``path`` (its module path in the segmentor)
  train on ``coords`` (N, num_points, 2), (x, y) in [0, 1], instead of sampling: merge it into
  the variables given to ``apply``."""
  entry = {"train": jnp.asarray(coords)}
  for name in reversed(path):
    entry = {name: entry}
  return {GIVEN_POINTS: entry}


class Conv1d(nn.Module):
  """``nn.Conv1d(kernel_size=1)`` over points (N, P, C): ``kernel`` (1, in, out), as the
  converter lays out PyTorch's (out, in, 1) weight."""
  features: int
  use_bias: bool = True
  kernel_init: Any = layers.kaiming_fan_out

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init, (1, x.shape[-1], self.features), jnp.float32)
    out = x @ kernel[0].astype(x.dtype)
    if self.use_bias:
      out = out + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(x.dtype)
    return out


class PointFC(nn.Module):
  """One of ``fcs``: a Conv1d ConvModule (``conv``, norm when configured, activation)."""
  features: int
  norm_cfg: dict | None
  act_cfg: dict | None

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = Conv1d(self.features, use_bias=self.norm_cfg is None, name="conv")(x)
    if self.norm_cfg is not None:
      x = layers.norm_layer(self.norm_cfg, name=layers.NORM_NAMES[self.norm_cfg["type"]])(x, train)
    return layers.activation(self.act_cfg)(x)


class PointFCs(nn.Module):
  """``fcs``: ``num_fcs`` PointFCs ``0``, ``1``, ...; with ``coarse_pred_each_layer`` the coarse
  logits are concatenated again after each."""
  num_fcs: int
  channels: int
  coarse_pred_each_layer: bool
  norm_cfg: dict | None
  act_cfg: dict | None

  @nn.compact
  def __call__(self, x, coarse_point_feats, train: bool = False):
    for k in range(self.num_fcs):
      x = PointFC(self.channels, self.norm_cfg, self.act_cfg, name=str(k))(x, train)
      if self.coarse_pred_each_layer:
        x = jnp.concatenate([x, coarse_point_feats], -1)
    return x


class PointHead(BaseCascadeDecodeHead):
  """``fcs`` (``num_fcs`` Conv1d ConvModules of ``channels``; each followed by the coarse logits
  again when ``coarse_pred_each_layer``) and ``fc_seg`` over [fine-grained features, coarse logits]
  sampled at points. ``__call__`` is mmseg's ``forward(fine_grained_point_feats,
  coarse_point_feats)``; ``forward_train`` / ``forward_test`` sample the points."""
  TINY: ClassVar[dict] = dict(in_channels=(8,), in_index=(0,), channels=8, num_fcs=2, num_classes=3)
  num_fcs: int = 3
  coarse_pred_each_layer: bool = True
  input_transform: str | None = "multiple_select"

  def check_config(self):
    if self.input_transform != "multiple_select":
      raise ValueError(f"PointHead: input_transform={self.input_transform!r}; mmseg fixes it to "
                       "'multiple_select'")
    # mmseg's default conv_cfg is dict(type='Conv1d'): the fcs are Conv1d either way.
    if self.conv_cfg is not None and dict(self.conv_cfg).get("type") != "Conv1d":
      raise ValueError(f"PointHead: conv_cfg={dict(self.conv_cfg)}; only dict(type='Conv1d') is supported")

  @nn.compact
  def __call__(self, fine_grained_point_feats, coarse_point_feats, train: bool = False):
    self.check_config()
    x = jnp.concatenate([fine_grained_point_feats, coarse_point_feats], -1)
    x = PointFCs(self.num_fcs, self.channels, self.coarse_pred_each_layer, self.norm_cfg, self.act,
                 name="fcs")(x, coarse_point_feats, train)
    if self.dropout_ratio > 0:  # mmseg's nn.Dropout here, element-wise
      x = nn.Dropout(self.dropout_ratio, deterministic=not self.stochastic(train), name="dropout")(x)
    return Conv1d(self.num_classes, kernel_init=nn.initializers.normal(0.01), name="fc_seg")(x)

  # ------------------------------------------------------------------ points

  def fine_grained_point_feats(self, inputs, points):
    feats = self.transform_inputs(inputs)
    return jnp.concatenate([point_sample(f, points, self.align_corners) for f in feats], -1)

  def sampling_key(self):
    for stream in ("sampling", "dropout"):
      if self.has_rng(stream):
        return self.make_rng(stream)
    return jax.random.PRNGKey(0)

  def get_points_train(self, seg_logits, cfg: Mapping):
    """mmseg ``get_points_train``: ``num_points * oversample_ratio`` uniform points, the
    ``importance_sample_ratio`` share of ``num_points`` most uncertain of them (uncertainty of
    the logits sampled there, align_corners=False as mmseg), the rest uniform."""
    num_points, oversample, importance = (cfg["num_points"], cfg["oversample_ratio"],
                                          cfg["importance_sample_ratio"])
    if oversample < 1 or not 0 <= importance <= 1:
      raise ValueError(f"PointHead train_cfg: oversample_ratio={oversample} must be >= 1 and "
                       f"importance_sample_ratio={importance} in [0, 1]")
    n = seg_logits.shape[0]
    num_sampled = int(num_points * oversample)
    num_uncertain = int(importance * num_points)
    key_over, key_random = jax.random.split(self.sampling_key())
    coords = most_uncertain(seg_logits, jax.random.uniform(key_over, (n, num_sampled, 2), jnp.float32),
                            num_uncertain)
    if num_points > num_uncertain:
      coords = jnp.concatenate(
          [coords, jax.random.uniform(key_random, (n, num_points - num_uncertain, 2), jnp.float32)], 1)
    return jax.lax.stop_gradient(coords)

  def get_points_test(self, seg_logits, cfg: Mapping):
    """mmseg ``get_points_test``: the ``subdivision_num_points`` most uncertain pixels (flat
    indices) and their centres in [0, 1], computed in float32 as mmseg does."""
    n, h, w, _ = seg_logits.shape
    uncertainty = calculate_uncertainty(seg_logits).reshape(n, h * w)
    num_points = min(h * w, int(cfg["subdivision_num_points"]))
    indices = jax.lax.top_k(uncertainty, num_points)[1]
    f32 = jnp.float32
    x = f32(1.0 / w / 2.0) + (indices % w).astype(f32) * f32(1.0 / w)
    y = f32(1.0 / h / 2.0) + (indices // w).astype(f32) * f32(1.0 / h)
    return indices, jnp.stack([x, y], -1)

  # ------------------------------------------------------------------ the contract

  def forward_train(self, inputs, labels, train_cfg=None, prev_output=None) -> dict:
    cfg = {**TRAIN_DEFAULTS, **dict(train_cfg or {})}
    if self.has_variable(GIVEN_POINTS, "train"):
      points = jax.lax.stop_gradient(self.get_variable(GIVEN_POINTS, "train"))
    else:
      points = self.get_points_train(prev_output, cfg)
    fine = self.fine_grained_point_feats(inputs, points)
    coarse = point_sample(prev_output, points, self.align_corners)
    point_logits = self(fine, coarse, train=True)
    point_labels = point_sample(labels[..., None].astype(jnp.float32), points, self.align_corners,
                                mode="nearest")[..., 0].astype(jnp.int32)
    return self.losses(point_logits, point_labels)

  def losses(self, point_logits, point_labels) -> dict:
    """mmseg ``PointHead.losses``: each ``loss_decode`` term as ``'point' + loss_name`` and
    ``acc_point``, over the points (N, P)."""
    out = losses.decode_losses(losses.at_least_float32(point_logits[:, :, None]), point_labels[:, :, None],
                               self.loss_decode, ignore_index=self.ignore_index,
                               align_corners=self.align_corners)
    acc = out.pop("acc_seg")
    return {**{"point" + k: v for k, v in out.items()}, "acc_point": acc}

  def forward_test(self, inputs, test_cfg=None, prev_output=None, train: bool = False):
    """mmseg ``forward_test``: ``subdivision_steps`` times, upsample the logits by
    ``scale_factor`` (bilinear) and replace the most uncertain ones with the point head's."""
    cfg = {**TEST_DEFAULTS, **{k: v for k, v in dict(test_cfg or {}).items() if k in TEST_DEFAULTS}}
    refined = prev_output
    for _ in range(int(cfg["subdivision_steps"])):
      n, h, w, c = refined.shape
      scale = cfg["scale_factor"]
      refined = layers.resize(refined, (int(h * scale), int(w * scale)), self.align_corners)
      n, h, w, c = refined.shape
      indices, points = self.get_points_test(refined, cfg)
      points = points.astype(refined.dtype)  # mmseg's float64 evaluation casts them likewise
      fine = self.fine_grained_point_feats(inputs, points)
      coarse = point_sample(prev_output, points, self.align_corners)
      point_logits = self(fine, coarse, train=train)
      flat = refined.reshape(n, h * w, c)
      flat = flat.at[jnp.arange(n)[:, None], indices].set(point_logits.astype(flat.dtype))
      refined = flat.reshape(n, h, w, c)
    return refined
