"""STDCNet and STDCContextPathNet as MMSegmentation defines them (mmseg ``backbones/stdc.py``).

Parameter names follow mmseg's state_dict: ``backbone/stages/0`` and ``/1`` (ConvModules),
``backbone/stages/<k>/<j>/layers/<i>`` (STDC modules), ``downsample``, ``skip/0``, ``skip/1``
('add' fusion), ``backbone/final_conv``, and for the context path ``arms/<i>``, ``convs/<i>``,
``conv_avg``, ``ffm/conv0``, ``ffm/attention/1``, ``ffm/attention/2``.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax import layers
from segjax.convert import CheckpointRules, nested_backbone_rules
from segjax.models.backbones.bisenetv1 import AttentionRefinementModule

BN = {"type": "BN"}


class STDCModule(nn.Module):
  """mmseg ``STDCModule``: a 1x1 conv then ``num_convs - 1`` 3x3 convs of halving width,
  concatenated ('cat': the 1x1 output replaced by its 3x3/2 average pool when downsampling) or
  concatenated and added to the input ('add': the input through ``skip`` when downsampling).

  A 'cat' module returns the parts of its concatenation, a list, which the next module's 1x1
  conv takes as they are (``layers.PointwiseConv``); its input may be such a list.

  In 'add' mode with stride 2 mmseg registers its ``downsample`` conv twice (as ``downsample``
  and as ``layers.0.1``); segjax holds it once, as ``downsample``, and its checkpoint rules
  skip the ``layers.0.1`` copy.
  """
  out_channels: int
  stride: int
  norm_cfg: dict = None
  act_cfg: dict = None
  num_convs: int = 4
  fusion_type: str = "add"

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    if self.num_convs <= 1:
      raise ValueError(f"STDCModule: num_convs={self.num_convs} must be > 1")
    if self.fusion_type not in ("add", "cat"):
      raise ValueError(f"STDCModule: fusion_type={self.fusion_type!r}; expected 'add' or 'cat'")
    if self.stride not in (1, 2):
      raise ValueError(f"STDCModule: stride={self.stride}; expected 1 or 2")
    out, half = self.out_channels, self.out_channels // 2
    with_downsample = self.stride == 2
    # mmseg's first 1x1 conv keeps ConvModule's default ReLU whatever act_cfg is.
    conv_0 = functools.partial(layers.conv_module, half, 1, norm_cfg=self.norm_cfg)
    downsample = layers.conv_module(half, 3, 2, 1, groups=half, norm_cfg=self.norm_cfg,
                                    act_cfg=None, name="downsample") if with_downsample else None
    convs = []
    for i in range(1, self.num_convs):
      factor = 2**(i + 1) if i != self.num_convs - 1 else 2**i
      convs.append(functools.partial(layers.conv_module, out // factor, 3, 1, 1,
                                     norm_cfg=self.norm_cfg, act_cfg=self.act_cfg))
    stack = layers.NamedChildren(name="layers")
    if self.fusion_type == "add":
      inputs = layers.concatenate_parts(inputs)
      if with_downsample:
        x = stack(0, functools.partial(layers.Indexed, (conv_0,)), inputs, train)  # layers.0.0
        x = downsample(x, train)
        skip = (functools.partial(layers.conv_module, inputs.shape[-1], 3, 2, 1,
                                  groups=inputs.shape[-1], norm_cfg=self.norm_cfg, act_cfg=None),
                functools.partial(layers.conv_module, out, 1, norm_cfg=self.norm_cfg, act_cfg=None))
        residual = layers.Indexed(skip, name="skip")(inputs, train)
      else:
        x = stack(0, conv_0, inputs, train)
        residual = inputs
      outs = [x]
      for i, build in enumerate(convs, start=1):
        x = stack(i, build, x, train)
        outs.append(x)
      return jnp.concatenate(outs, -1) + residual
    x0 = stack(0, conv_0, inputs, train)
    outs = [x0]
    x = downsample(x0, train) if with_downsample else x0
    for i, build in enumerate(convs, start=1):
      x = stack(i, build, x, train)
      outs.append(x)
    if with_downsample:
      outs[0] = layers.avg_pool_3x3_s2(x0)
    return outs


class FeatureFusionModule(nn.Module):
  """STDC's ``FeatureFusionModule``: ``conv0`` 1x1 of [spatial, context], plus itself scaled by
  ``attention`` (global average ``0``, 1x1 convs ``1`` (ReLU) and ``2``, sigmoid ``3``)."""
  in_channels: int
  out_channels: int
  scale_factor: int = 4
  norm_cfg: dict = None
  act_cfg: dict = None

  @nn.compact
  def __call__(self, spatial, context, train: bool = False):
    act = dict(self.act_cfg or layers.RELU)
    channels = spatial.shape[-1] + context.shape[-1]
    if channels != self.in_channels:
      raise ValueError(f"STDC FeatureFusionModule (ffm_cfg.in_channels): in_channels={self.in_channels} in "
                       f"the config but the input has {channels} channels ({spatial.shape[-1]} spatial "
                       f"+ {context.shape[-1]} context)")
    # The 1x1 conv of the concatenation, as the sum of its parts' products (layers.PointwiseConv).
    x = layers.conv_module(self.out_channels, 1, norm_cfg=dict(self.norm_cfg or BN), act_cfg=act,
                           name="conv0")([spatial, context], train)
    attn = layers.Indexed(
        (lambda name: (lambda y, train: jnp.mean(y, axis=(1, 2), keepdims=True)),
         functools.partial(layers.conv_module, self.out_channels // self.scale_factor, 1,
                           act_cfg=act, bias=False),
         functools.partial(layers.conv_module, self.out_channels, 1, act_cfg=None, bias=False)),
        name="attention")(x, train)
    return x * nn.sigmoid(attn) + x


# The stride of each STDC module, per stage (mmseg's arch_settings).
ARCH_SETTINGS = {"STDCNet1": ((2, 1), (2, 1), (2, 1)),
                 "STDCNet2": ((2, 1, 1, 1), (2, 1, 1, 1, 1), (2, 1, 1))}


class STDCModules(nn.Module):
  """One stage: an ``nn.Sequential`` of STDC modules (children ``0``, ``1``, ...)."""
  out_channels: int
  strides: Sequence[int]
  norm_cfg: dict
  act_cfg: dict
  num_convs: int
  fusion_type: str

  @nn.compact
  def __call__(self, x, train: bool = False):
    for j, stride in enumerate(self.strides):
      x = STDCModule(self.out_channels, stride, self.norm_cfg, self.act_cfg, self.num_convs,
                     self.fusion_type, name=str(j))(x, train)
    return layers.concatenate_parts(x)


# In 'add' fusion mmseg saves each downsampling module's conv twice; segjax keeps ``downsample``.
# In 'cat' fusion no key has this form (``layers.0`` is then a ConvModule: ``layers.0.conv``).
SKIP_ADD_DUPLICATES = (r"(^|\.)layers\.0\.1\.",)


def only_if_in_model(key, value, target_shape):
  """The key as it is if the model has its parameter, else nothing: a release's ``final_conv``
  (the classifier's last ConvX) for an STDCNet built without it, which mmseg's strict=False load
  ignores."""
  return {key: value} if target_shape(key) is not None else {}


def authors_imagenet_rules(stage_of_feature: Sequence[str]) -> CheckpointRules:
  """MichaelFan01/STDC-Seg's ImageNet classifiers ('cat' fusion), renamed as mmseg's
  tools/model_converters/stdc2mmseg.py does: ``features.N`` is ``stages.<stage_of_feature[N]>``,
  ``conv_list`` the module's ``layers``, ``conv_last`` ``final_conv``; the classifier (``fc``,
  ``bn``, ``linear``) and the aliases ``x2`` ... ``x32`` of ``features`` are dropped. The
  downsampling ``avd_layer`` is the module's ``downsample``, as in the files mmseg publishes
  (stdc2mmseg.py writes it as ``avg_pool``, a name mmseg's STDCModule does not have)."""
  return CheckpointRules(
      skip=(r"^(fc|bn|linear|x\d+)\.",),
      renames=(*((rf"^features\.{n}\.", f"stages.{stage}.") for n, stage in enumerate(stage_of_feature)),
               (r"\.conv_list\.", ".layers."),
               (r"\.avd_layer\.0\.", ".downsample.conv."),
               (r"\.avd_layer\.1\.", ".downsample.bn."),
               (r"^conv_last\.", "final_conv.")),
      transforms=((r"(^|\.)final_conv\.", only_if_in_model),))


# How releases of STDC weights name them (segjax.convert: CHECKPOINT_RULES[source]).
CHECKPOINT_RULES = {
    "mmseg": CheckpointRules(skip=SKIP_ADD_DUPLICATES),
    # mmseg's converted ImageNet files (stdc1_20220308-5368626c.pth, stdc2_...): STDCNet's own
    # names, with the classifier's ``final_conv``.
    "mmseg_pretrain": CheckpointRules(transforms=((r"(^|\.)final_conv\.", only_if_in_model),)),
    # The authors' STDCNet813M_73.91.tar (STDC1) and STDCNet1446_76.47.tar (STDC2).
    "stdc1_imagenet": authors_imagenet_rules(("0", "1", "2.0", "2.1", "3.0", "3.1", "4.0", "4.1")),
    "stdc2_imagenet": authors_imagenet_rules(("0", "1", "2.0", "2.1", "2.2", "2.3", "3.0", "3.1", "3.2",
                                              "3.3", "3.4", "4.0", "4.1", "4.2")),
}


class STDCNet(nn.Module):
  """mmseg ``STDCNet``: two stride-2 ConvModules (``stages.0``, ``stages.1``) then the STDC stages;
  returns the STDC stages' outputs (1/8, 1/16, 1/32), the last through ``final_conv`` if set."""
  TINY: ClassVar[dict] = dict(stdc_type="STDCNet1", in_channels=3, channels=(4, 8, 16, 32, 64),
                              bottleneck_type="cat", norm_cfg=dict(type="BN", requires_grad=True),
                              act_cfg=dict(type="ReLU"))
  CHECKPOINT_RULES: ClassVar[dict[str, CheckpointRules]] = CHECKPOINT_RULES
  stdc_type: str = None
  in_channels: int = None
  channels: Sequence[int] = None
  bottleneck_type: str = None
  norm_cfg: dict = None
  act_cfg: dict = None
  num_convs: int = 4
  with_final_conv: bool = False
  pretrained: Any = None
  init_cfg: Any = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.stdc_type not in ARCH_SETTINGS:
      raise ValueError(f"STDCNet: stdc_type={self.stdc_type!r}; expected one of {sorted(ARCH_SETTINGS)}")
    if self.bottleneck_type not in ("add", "cat"):
      raise ValueError(f"STDCNet: bottleneck_type={self.bottleneck_type!r}; expected 'add' or 'cat'")
    if self.channels is None or len(self.channels) != 5:
      raise ValueError(f"STDCNet: channels={self.channels} needs 5 entries")
    layers.check_in_channels(x, self.in_channels, "STDCNet backbone")
    stages = layers.NamedChildren(name="stages")
    for i in range(2):
      x = stages(i, functools.partial(layers.conv_module, self.channels[i], 3, 2, 1,
                                      norm_cfg=self.norm_cfg, act_cfg=self.act_cfg), x, train)
    outs = []
    for k, strides in enumerate(ARCH_SETTINGS[self.stdc_type]):
      x = stages(k + 2, functools.partial(STDCModules, self.channels[k + 2], strides, self.norm_cfg,
                                          self.act_cfg, self.num_convs, self.bottleneck_type), x, train)
      outs.append(x)
    if self.with_final_conv:
      outs[-1] = layers.conv_module(max(1024, self.channels[-1]), 1, norm_cfg=self.norm_cfg,
                                    act_cfg=self.act_cfg, name="final_conv")(outs[-1], train)
    return outs


def _resized(x, size, mode, align_corners) -> layers.Resized:
  if mode not in ("nearest", "bilinear"):
    raise ValueError(f"STDCContextPathNet: upsample_mode={mode!r}; expected 'nearest' or 'bilinear'")
  return layers.Resized(x, tuple(size), bool(align_corners), mode)


class STDCContextPathNet(nn.Module):
  """mmseg ``STDCContextPathNet``: the backbone's (STDCNet) 1/8..1/32 features refined top-down
  by attention refinement modules, fused with the 1/8 feature. Returns [backbone 1/8 (for the
  STDC detail head), refined 1/16, refined 1/8, fusion]."""
  TINY: ClassVar[dict] = dict(backbone_cfg=dict(STDCNet.TINY, type="STDCNet"), last_in_channels=(64, 32),
                              out_channels=8, ffm_cfg=dict(in_channels=24, out_channels=16, scale_factor=4))
  CHECKPOINT_RULES: ClassVar[dict[str, CheckpointRules]] = {"mmseg": CHECKPOINT_RULES["mmseg"]}
  backbone_cfg: dict = None
  last_in_channels: Sequence[int] = (1024, 512)
  out_channels: int = 128
  ffm_cfg: dict = None
  upsample_mode: str = "nearest"
  align_corners: Any = None
  norm_cfg: dict = None
  init_cfg: Any = None

  @classmethod
  def checkpoint_rules(cls, cfg) -> dict[str, CheckpointRules]:
    """mmseg's checkpoints, and the releases of the STDCNet of ``backbone_cfg`` (where mmseg's
    in1k-pre configs put its ImageNet file) loaded into ``backbone`` alone."""
    return {**cls.CHECKPOINT_RULES, **nested_backbone_rules(cfg.get("backbone_cfg"), "backbone.")}

  @nn.compact
  def __call__(self, x, train: bool = False):
    from segjax.models import build_module  # the registry imports this module
    if self.backbone_cfg is None:
      raise ValueError("STDCContextPathNet: backbone_cfg (e.g. an STDCNet dict) is required")
    norm_cfg = dict(self.norm_cfg or BN)
    ffm_cfg = dict(self.ffm_cfg or dict(in_channels=512, out_channels=256, scale_factor=4))
    outs = list(build_module(self.backbone_cfg, "backbone")(name="backbone")(x, train))
    if len(outs) != len(self.last_in_channels) + 1:
      raise ValueError(f"STDCContextPathNet: the backbone gives {len(outs)} feature maps, "
                       f"last_in_channels={tuple(self.last_in_channels)} needs {len(self.last_in_channels) + 1}")
    avg = jnp.mean(outs[-1], axis=(1, 2), keepdims=True)
    avg_feat = layers.conv_module(self.out_channels, 1, norm_cfg=norm_cfg, name="conv_avg")(avg, train)
    feature_up = _resized(avg_feat, outs[-1].shape[1:3], self.upsample_mode, self.align_corners).compute()
    arms, convs = layers.NamedChildren(name="arms"), layers.NamedChildren(name="convs")
    arms_out = []
    for i, channels in enumerate(self.last_in_channels):
      feat = outs[len(outs) - 1 - i]
      layers.check_in_channels(feat, channels, f"STDCContextPathNet last_in_channels[{i}]")
      x_arm = arms(i, functools.partial(AttentionRefinementModule, self.out_channels), feat, train) + feature_up
      # The 3x3 conv of the upsampled map is computed at x_arm's size (layers.Resized).
      feature_up = _resized(x_arm, outs[len(outs) - 2 - i].shape[1:3], self.upsample_mode, self.align_corners)
      feature_up = convs(i, functools.partial(layers.conv_module, self.out_channels, 3, 1, 1,
                                              norm_cfg=norm_cfg), [feature_up], train)
      arms_out.append(feature_up)
    feat_fuse = FeatureFusionModule(**ffm_cfg, name="ffm")(outs[0], arms_out[1], train)
    return [outs[0], *arms_out, feat_fuse]
