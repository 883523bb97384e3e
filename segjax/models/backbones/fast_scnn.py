"""Fast-SCNN as MMSegmentation defines it (mmseg ``backbones/fast_scnn.py``): learning to
downsample, global feature extractor (inverted residuals + PPM), feature fusion.

Parameter names follow mmseg's state_dict: ``learning_to_downsample/conv``, ``.../dsconv1``,
``global_feature_extractor/bottleneck1/0/conv/0``, ``.../ppm/0/1``, ``.../out``,
``feature_fusion/dwconv``, ``conv_lower_res``, ``conv_higher_res``.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import flax.linen as nn

from segjax import layers
from segjax.convert import CheckpointRules
from segjax.models.backbones.mobilenet_v2 import InvertedResidualLayer
from segjax.models.heads.psp import PPM

BN = {"type": "BN"}


class LearningToDownsample(nn.Module):
  """``conv`` (3x3, stride 2) then two stride-2 depthwise separable convs ``dsconv1/2``."""
  dw_channels: Sequence[int]
  out_channels: int
  norm_cfg: dict
  act_cfg: dict
  dw_act_cfg: Any = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = layers.conv_module(self.dw_channels[0], 3, 2, 1, norm_cfg=self.norm_cfg,
                           act_cfg=self.act_cfg, name="conv")(x, train)
    for name, features in (("dsconv1", self.dw_channels[1]), ("dsconv2", self.out_channels)):
      # mmseg leaves act_cfg at mmcv's default ReLU here, whatever the backbone's act_cfg.
      x = layers.DepthwiseSeparableConvModule(features, 3, 2, 1, norm_cfg=self.norm_cfg,
                                              act_cfg=layers.RELU, dw_act_cfg=self.dw_act_cfg,
                                              name=name)(x, train)
    return x


class GlobalFeatureExtractor(nn.Module):
  """Three stages of inverted residuals (``bottleneck1..3``), PPM (``ppm``), ``out`` 3x3 conv."""
  block_channels: Sequence[int]
  out_channels: int
  expand_ratio: int
  num_blocks: Sequence[int]
  strides: Sequence[int]
  pool_scales: Sequence[int]
  norm_cfg: dict
  act_cfg: dict
  align_corners: bool

  @nn.compact
  def __call__(self, x, train: bool = False):
    for i in range(3):
      x = InvertedResidualLayer(self.block_channels[i], self.num_blocks[i], self.strides[i], 1,
                                self.expand_ratio, self.norm_cfg, self.act_cfg,
                                name=f"bottleneck{i + 1}")(x, train)
    pooled = PPM(tuple(self.pool_scales), self.block_channels[2] // 4, self.norm_cfg, self.act_cfg,
                 self.align_corners, name="ppm")(x, train)
    return layers.conv_module(self.out_channels, 3, 1, 1, norm_cfg=self.norm_cfg,
                              act_cfg=self.act_cfg, name="out")([x, *pooled], train)  # the concatenation


class FeatureFusionModule(nn.Module):
  """Upsample the low-resolution feature, depthwise ``dwconv`` + 1x1 ``conv_lower_res``; 1x1
  ``conv_higher_res`` of the high-resolution one; ReLU of their sum."""
  out_channels: int
  norm_cfg: dict
  dwconv_act_cfg: dict
  conv_act_cfg: Any = None
  align_corners: bool = False

  @nn.compact
  def __call__(self, higher, lower, train: bool = False):
    lower = layers.resize(lower, higher.shape[1:3], self.align_corners)
    if lower.shape[-1] != self.out_channels:
      # mmseg's dwconv has groups=out_channels: a depthwise conv only when the widths agree.
      raise ValueError(f"FeatureFusionModule: lower_in_channels={lower.shape[-1]} must equal "
                       f"fusion_out_channels={self.out_channels} (its dwconv has groups=out_channels)")
    lower = layers.conv_module(self.out_channels, 3, 1, 1, groups=self.out_channels,
                               norm_cfg=self.norm_cfg, act_cfg=self.dwconv_act_cfg,
                               name="dwconv")(lower, train)
    lower = layers.conv_module(self.out_channels, 1, norm_cfg=self.norm_cfg, act_cfg=self.conv_act_cfg,
                               name="conv_lower_res")(lower, train)
    higher = layers.conv_module(self.out_channels, 1, norm_cfg=self.norm_cfg,
                                act_cfg=self.conv_act_cfg, name="conv_higher_res")(higher, train)
    return nn.relu(higher + lower)


CHECKPOINT_RULES = {"mmseg": CheckpointRules()}


class FastSCNN(nn.Module):
  """mmseg ``FastSCNN``: outputs [higher-resolution (1/8), lower-resolution (1/32), fusion (1/8)]
  picked by ``out_indices``."""
  TINY: ClassVar[dict] = dict(downsample_dw_channels=(8, 12), global_in_channels=16,
                              global_block_channels=(16, 24, 32), global_out_channels=32,
                              higher_in_channels=16, lower_in_channels=32, fusion_out_channels=32,
                              norm_cfg=dict(type="BN", requires_grad=True, momentum=0.01))
  CHECKPOINT_RULES: ClassVar[dict[str, CheckpointRules]] = CHECKPOINT_RULES
  in_channels: int = 3
  downsample_dw_channels: Sequence[int] = (32, 48)
  global_in_channels: int = 64
  global_block_channels: Sequence[int] = (64, 96, 128)
  global_block_strides: Sequence[int] = (2, 2, 1)
  global_out_channels: int = 128
  higher_in_channels: int = 64
  lower_in_channels: int = 128
  fusion_out_channels: int = 128
  out_indices: Sequence[int] = (0, 1, 2)
  conv_cfg: Any = None
  norm_cfg: dict = None
  act_cfg: dict = None
  align_corners: bool = False
  dw_act_cfg: Any = None
  init_cfg: Any = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.global_in_channels != self.higher_in_channels:
      raise ValueError(f"FastSCNN: global_in_channels={self.global_in_channels} must equal "
                       f"higher_in_channels={self.higher_in_channels}")
    if self.global_out_channels != self.lower_in_channels:
      raise ValueError(f"FastSCNN: global_out_channels={self.global_out_channels} must equal "
                       f"lower_in_channels={self.lower_in_channels}")
    if self.conv_cfg is not None:
      raise ValueError(f"FastSCNN: conv_cfg={self.conv_cfg} is not supported (only None, Conv2d)")
    layers.check_in_channels(x, self.in_channels, "FastSCNN backbone")
    norm_cfg = dict(self.norm_cfg or BN)
    act_cfg = dict(self.act_cfg or layers.RELU)
    higher = LearningToDownsample(tuple(self.downsample_dw_channels), self.global_in_channels,
                                  norm_cfg, act_cfg, self.dw_act_cfg,
                                  name="learning_to_downsample")(x, train)
    lower = GlobalFeatureExtractor(tuple(self.global_block_channels), self.global_out_channels, 6,
                                   (3, 3, 3), tuple(self.global_block_strides), (1, 2, 3, 6),
                                   norm_cfg, act_cfg, self.align_corners,
                                   name="global_feature_extractor")(higher, train)
    fusion = FeatureFusionModule(self.fusion_out_channels, norm_cfg, act_cfg,
                                 align_corners=self.align_corners,
                                 name="feature_fusion")(higher, lower, train)
    outs = [higher, lower, fusion]
    return [outs[i] for i in self.out_indices]
