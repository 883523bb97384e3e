"""BiSeNetV1 as MMSegmentation defines it (mmseg ``backbones/bisenetv1.py``): a context path on a
configurable backbone (ResNet in mmseg's configs) with attention refinement modules, a spatial
path, and the feature fusion module.

Parameter names follow mmseg's state_dict: ``context_path/backbone/...``, ``context_path/arm16``,
``arm32`` (``conv_layer``, ``atten_conv_layer/1``), ``conv_head16``, ``conv_head32``,
``gap_conv/1``, ``spatial_path/layer1..4``, ``ffm/conv1``, ``ffm/conv_atten/0``. mmseg builds
these sub-modules without passing BiSeNetV1's ``norm_cfg``/``act_cfg`` (each uses its default:
BatchNorm, ReLU); so does segjax.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax import layers
from segjax.convert import CheckpointRules, nested_backbone_rules, nested_rules
from segjax.models.backbones import resnet

# The sub-modules' own defaults (mmseg does not pass BiSeNetV1's norm_cfg / act_cfg to them).
BN = {"type": "BN"}


def conv_bn_relu(features, kernel_size, stride=1, padding=0, name=None, act_cfg=layers.RELU, bias="auto"):
  return layers.conv_module(features, kernel_size, stride, padding, norm_cfg=BN, act_cfg=act_cfg,
                            bias=bias, name=name)


def global_average(x):
  """``nn.AdaptiveAvgPool2d((1, 1))``."""
  return jnp.mean(x, axis=(1, 2), keepdims=True)


class SpatialPath(nn.Module):
  """``layer1`` 7x7 stride 2, ``layer2``/``layer3`` 3x3 stride 2, ``layer4`` 1x1: output stride 8."""
  num_channels: Sequence[int]

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = conv_bn_relu(self.num_channels[0], 7, 2, 3, name="layer1")(x, train)
    x = conv_bn_relu(self.num_channels[1], 3, 2, 1, name="layer2")(x, train)
    x = conv_bn_relu(self.num_channels[2], 3, 2, 1, name="layer3")(x, train)
    return conv_bn_relu(self.num_channels[3], 1, name="layer4")(x, train)


class AttentionRefinementModule(nn.Module):
  """``conv_layer`` 3x3, scaled by the sigmoid of ``atten_conv_layer`` (pool ``0``, 1x1 conv +
  BN ``1``, sigmoid ``2``)."""
  out_channels: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = conv_bn_relu(self.out_channels, 3, 1, 1, name="conv_layer")(x, train)
    atten = layers.Indexed((lambda name: (lambda y, train: global_average(y)),
                            lambda name: conv_bn_relu(self.out_channels, 1, name=name, act_cfg=None,
                                                      bias=False)),
                           name="atten_conv_layer")(x, train)
    return x * nn.sigmoid(atten)


class ContextPath(nn.Module):
  """The backbone's 1/8, 1/16, 1/32 features refined top-down (nearest upsampling):
  returns (x_16_up at 1/8, x_32_up at 1/16)."""
  backbone_cfg: dict
  context_channels: Sequence[int]

  @nn.compact
  def __call__(self, x, train: bool = False):
    from segjax.models import build_module  # the registry imports this module
    feats = build_module(self.backbone_cfg, "backbone")(name="backbone")(x, train)
    if len(feats) != 4:
      raise ValueError(f"BiSeNetV1: backbone_cfg must give 4 feature maps (1/4 .. 1/32), got {len(feats)}")
    _, x_8, x_16, x_32 = feats
    c = self.context_channels[0]
    x_gap = layers.Indexed((lambda name: (lambda y, train: global_average(y)),
                            lambda name: conv_bn_relu(c, 1, name=name)), name="gap_conv")(x_32, train)
    x_32_sum = AttentionRefinementModule(c, name="arm32")(x_32, train) + x_gap
    # Each 3x3 conv of a nearest upsampling is computed at the input's size (layers.Resized).
    x_32_up = layers.Resized(x_32_sum, x_16.shape[1:3], mode="nearest")
    x_32_up = conv_bn_relu(c, 3, 1, 1, name="conv_head32")([x_32_up], train)
    x_16_sum = AttentionRefinementModule(c, name="arm16")(x_16, train) + x_32_up
    x_16_up = layers.Resized(x_16_sum, x_8.shape[1:3], mode="nearest")
    x_16_up = conv_bn_relu(c, 3, 1, 1, name="conv_head16")([x_16_up], train)
    return x_16_up, x_32_up


class FeatureFusionModule(nn.Module):
  """``conv1`` of [spatial, context], plus itself scaled by ``conv_atten`` of its global average."""
  out_channels: int

  @nn.compact
  def __call__(self, x_sp, x_cp, train: bool = False):
    fuse = conv_bn_relu(self.out_channels, 1, name="conv1")(jnp.concatenate([x_sp, x_cp], -1), train)
    atten = layers.Indexed((lambda name: conv_bn_relu(self.out_channels, 1, name=name, bias=False),),
                           name="conv_atten")(global_average(fuse), train)
    return fuse * nn.sigmoid(atten) + fuse


CHECKPOINT_RULES = {"mmseg": CheckpointRules()}
# mmseg's bisenetv1_r*_in1k-pre configs load open-mmlab://resnet18_v1c / resnet50_v1c (a deep
# stem) into a ResNet of type 'ResNet' (conv1/bn1 stem): mmcv's strict=False load skips the file's
# stem.* and leaves conv1/bn1 at their initialisation, loading the stages.
DEEP_STEM_INTO_RESNET = CheckpointRules(skip=(r"^fc\.", r"^stem\."), keep_initial=(r"^(conv1|bn1)$",))
CONTEXT_BACKBONE = "context_path.backbone."


class BiSeNetV1(nn.Module):
  """mmseg ``BiSeNetV1``: outputs [fusion (1/8), context 1/8, context 1/16] by ``out_indices``."""
  TINY: ClassVar[dict] = dict(context_channels=(8, 16, 32), spatial_channels=(4, 4, 4, 8),
                              out_channels=16,
                              backbone_cfg=dict(type="ResNet", depth=18, stem_channels=4,
                                                base_channels=4, contract_dilation=True,
                                                norm_cfg=dict(type="BN", requires_grad=True)))
  CHECKPOINT_RULES: ClassVar[dict[str, CheckpointRules]] = CHECKPOINT_RULES
  backbone_cfg: dict = None
  in_channels: int = 3
  spatial_channels: Sequence[int] = (64, 64, 64, 128)
  context_channels: Sequence[int] = (128, 256, 512)
  out_indices: Sequence[int] = (0, 1, 2)
  align_corners: bool = False
  out_channels: int = 256
  conv_cfg: Any = None
  norm_cfg: dict = None  # unused by mmseg's sub-modules (see the module docstring)
  act_cfg: dict = None
  init_cfg: Any = None

  @classmethod
  def checkpoint_rules(cls, cfg) -> dict[str, CheckpointRules]:
    """mmseg's BiSeNetV1 checkpoints, and the releases of the context path's backbone family
    (``backbone_cfg``, where mmseg's in1k-pre configs put a ResNet ImageNet file) loaded into
    ``context_path.backbone`` alone; for a ResNet, also a deep-stem file as those configs load it
    (``DEEP_STEM_INTO_RESNET``)."""
    from segjax.models import BACKBONES  # the registry imports this module
    backbone_cfg = cfg.get("backbone_cfg") or {}
    rules = {**CHECKPOINT_RULES, **nested_backbone_rules(backbone_cfg, CONTEXT_BACKBONE)}
    backbone_cls = BACKBONES.get(backbone_cfg.get("type"))
    if backbone_cls is not None and issubclass(backbone_cls, resnet.ResNet):
      rules["imagenet_deep_stem"] = nested_rules(DEEP_STEM_INTO_RESNET, CONTEXT_BACKBONE)
    return rules

  def frozen_parameters(self) -> tuple[str, ...]:
    """The context path's backbone's frozen stages (``backbone_cfg``'s ``frozen_stages``)."""
    from segjax.models import BACKBONES, module_kwargs  # the registry imports this module
    cls = BACKBONES.get((self.backbone_cfg or {}).get("type"))
    if cls is None or not hasattr(cls, "frozen_parameters"):
      return ()
    backbone = cls(**module_kwargs(cls, self.backbone_cfg, "backbone.backbone_cfg"), parent=None)
    return tuple(CONTEXT_BACKBONE + name for name in backbone.frozen_parameters())

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.backbone_cfg is None:
      raise ValueError("BiSeNetV1: backbone_cfg (the context path's backbone, e.g. a ResNet dict) is required")
    if len(self.spatial_channels) != 4:
      raise ValueError(f"BiSeNetV1: spatial_channels={tuple(self.spatial_channels)} needs 4 entries")
    if len(self.context_channels) != 3:
      raise ValueError(f"BiSeNetV1: context_channels={tuple(self.context_channels)} needs 3 entries")
    layers.check_in_channels(x, self.in_channels, "BiSeNetV1 backbone")
    x_context8, x_context16 = ContextPath(dict(self.backbone_cfg), tuple(self.context_channels),
                                          name="context_path")(x, train)
    x_spatial = SpatialPath(tuple(self.spatial_channels), name="spatial_path")(x, train)
    x_fuse = FeatureFusionModule(self.out_channels, name="ffm")(x_spatial, x_context8, train)
    outs = [x_fuse, x_context8, x_context16]
    return [outs[i] for i in self.out_indices]
