"""STDCHead (mmseg ``stdc_head.py``): an FCNHead trained on boundaries (detail aggregation loss).

Its targets are the labels' Laplacian boundaries at strides 1, 2 and 4 (nearest-upsampled back),
thresholded, fused with mmseg's constant weights (0.6, 0.3, 0.1) and thresholded again; the head's
``loss_decode`` (mmseg's configs: sigmoid cross entropy + Dice) is computed on these 0/1 targets.
"""
from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from segjax import layers
from segjax.convert import CheckpointRules
from segjax.models.heads.fcn import FCNHead

LAPLACIAN = np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], np.float32)
FUSION_WEIGHTS = (6. / 10, 3. / 10, 1. / 10)


def laplacian(labels: jax.Array, stride: int) -> jax.Array:
  """``F.conv2d(labels, laplacian_kernel, stride=stride, padding=1)`` of (N, H, W) float labels,
  clamped at 0 (ignored pixels take part with their value, 255, as in mmseg)."""
  kernel = jnp.asarray(LAPLACIAN)[:, :, None, None]
  out = jax.lax.conv_general_dilated(labels[..., None], kernel, (stride, stride), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=jax.lax.Precision.HIGHEST)
  return jnp.maximum(out[..., 0], 0)


def boundary_targets(labels: jax.Array, threshold: float = 0.1) -> jax.Array:
  """mmseg ``STDCHead.losses``'s target: (N, H, W) int labels -> (N, H, W) int32 in {0, 1}."""
  labels = labels.astype(jnp.float32)
  size = labels.shape[1:3]
  pyramid = []
  for stride in (1, 2, 4):
    edges = laplacian(labels, stride)
    if stride > 1:
      edges = layers.resize_nearest(edges[..., None], size)[..., 0]
    pyramid.append(jnp.where(edges > threshold, 1.0, 0.0).astype(jnp.float32))
  fused = sum(jnp.float32(w) * p for w, p in zip(FUSION_WEIGHTS, pyramid))
  return (fused > jnp.float32(threshold)).astype(jnp.int32)


class STDCHead(FCNHead):
  """mmseg ``STDCHead``: FCNHead whose ``losses`` take boundary targets of the labels."""
  TINY: ClassVar[dict] = dict(in_channels=8, in_index=0, channels=4, num_convs=1, concat_input=False,
                              num_classes=2, norm_cfg=dict(type="BN", requires_grad=True),
                              loss_decode=({"type": "CrossEntropyLoss", "loss_name": "loss_ce",
                                            "use_sigmoid": True, "loss_weight": 1.0},
                                           {"type": "DiceLoss", "loss_name": "loss_dice",
                                            "loss_weight": 1.0}))
  # mmseg saves its constant Laplacian and fusion kernels (a buffer and a Parameter with
  # requires_grad=False, which mmseg's parameter count includes); segjax holds both as constants.
  CHECKPOINT_RULES: ClassVar[dict] = {"mmseg": CheckpointRules(skip=(r"^laplacian_kernel$",
                                                                      r"^fusion_kernel$"))}
  FROZEN_PARAMETERS: ClassVar[int] = len(FUSION_WEIGHTS)
  boundary_threshold: float = 0.1

  def losses(self, seg_logit, labels) -> dict:
    return super().losses(seg_logit, boundary_targets(labels, self.boundary_threshold))
