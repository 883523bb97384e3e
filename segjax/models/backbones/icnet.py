"""ICNet's backbone as MMSegmentation defines it (mmseg ``backbones/icnet.py``): a light 3-conv
branch on the full image (1/8), a ResNet's first two stages on the half-size image (1/16) and its
last two stages plus a PPM on a further halved feature (1/32).

mmseg runs the ResNet of ``backbone_cfg`` stage by stage, replacing its max pool by one with
``ceil_mode=True``; segjax's ``SplitResNet`` is that ResNet (same children ``stem``/``conv1``,
``layer1``..``layer4``, so the same state_dict names under ``backbone.backbone``) with its
forward split at layer2.
"""
from __future__ import annotations

import dataclasses
import functools
import types
from typing import Any, ClassVar, Sequence

import flax.linen as nn

from segjax import layers
from segjax.convert import CheckpointRules, nested_backbone_rules
from segjax.models.backbones import resnet
from segjax.models.heads.psp import PPM


def max_pool_3x3_s2_ceil(x):
  """``nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)``: ceil((n - 1) / 2) + 1 outputs,
  less one when the last window would start in the right padding (PyTorch's rule)."""
  pads = []
  for n in x.shape[1:3]:
    out = -(-(n + 2 - 3) // 2) + 1
    if (out - 1) * 2 >= n + 1:
      out -= 1
    pads.append((1, (out - 1) * 2 + 3 - n - 1))
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=tuple(pads))


class SplitResNet(nn.Module):
  """The ResNet of ``cfg`` (ResNet / ResNetV1c / ResNetV1d fields) run as ICNet runs it:
  ``__call__(x, train, between)`` gives layer2's output and layer4's output of
  ``between(layer2's output)``."""
  cfg: dict  # every field of the ResNet class, defaults resolved

  @nn.compact
  def __call__(self, x, train, between):
    r = types.SimpleNamespace(**self.cfg)
    unsupported = {"frozen_stages": -1, "with_cp": False, "multi_grid": None, "groups": 1,
                   "num_stages": 4}
    for field, default in unsupported.items():
      if getattr(r, field) != default:
        raise ValueError(f"ICNet backbone_cfg: {field}={getattr(r, field)!r} is not supported "
                         f"(only {default!r})")
    if r.depth not in resnet.ARCH_SETTINGS:
      raise ValueError(f"ICNet backbone_cfg: depth={r.depth} is not one of {sorted(resnet.ARCH_SETTINGS)}")
    norm_cfg = dict(r.norm_cfg or resnet.BN)
    train = train and not r.norm_eval
    block_cls, stage_blocks = resnet.ARCH_SETTINGS[r.depth]
    if r.deep_stem:
      x = resnet.DeepStem(r.stem_channels, norm_cfg, name="stem")(x, train)
    else:
      x = layers.conv2d(r.stem_channels, 7, 2, 3, use_bias=False, name="conv1")(x)
      x = nn.relu(layers.norm_layer(norm_cfg, name="bn1")(x, train))
    x = max_pool_3x3_s2_ceil(x)
    inplanes = r.stem_channels
    out_2 = None
    for i, num_blocks in enumerate(stage_blocks):
      stride, dilation = r.strides[i], r.dilations[i]
      planes = r.base_channels * 2**i
      first = dilation // 2 if dilation > 1 and r.contract_dilation else dilation
      block_kwargs = dict(norm_cfg=norm_cfg)
      if block_cls is resnet.Bottleneck:
        block_kwargs["style"] = r.style
      downsample = None
      if stride != 1 or inplanes != planes * block_cls.expansion:
        downsample = (stride, 1) if r.avg_down else (0, stride)
      x = resnet.ResLayer(block_cls, planes, num_blocks, stride, (first,) + (dilation,) * (num_blocks - 1),
                          downsample, block_kwargs, name=f"layer{i + 1}")(x, train)
      inplanes = planes * block_cls.expansion
      if i == 1:
        out_2 = x
        x = between(x)
    return out_2, x


CHECKPOINT_RULES = {"mmseg": CheckpointRules()}


class ICNet(nn.Module):
  """mmseg ``ICNet`` backbone: returns [sub1 (1/8, light branch), sub2 (1/16), sub4 (1/32)]."""
  TINY: ClassVar[dict] = dict(
      backbone_cfg=dict(type="ResNetV1c", depth=18, stem_channels=8, base_channels=8,
                        dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), contract_dilation=True,
                        norm_cfg=dict(type="BN", requires_grad=True)),
      layer_channels=(16, 64), light_branch_middle_channels=8, psp_out_channels=16,
      out_channels=(8, 16, 16))
  CHECKPOINT_RULES: ClassVar[dict[str, CheckpointRules]] = CHECKPOINT_RULES
  backbone_cfg: dict = None
  in_channels: int = 3
  layer_channels: Sequence[int] = (512, 2048)
  light_branch_middle_channels: int = 32
  psp_out_channels: int = 512
  out_channels: Sequence[int] = (64, 256, 256)
  pool_scales: Sequence[int] = (1, 2, 3, 6)
  conv_cfg: Any = None
  norm_cfg: dict = None
  act_cfg: dict = None
  align_corners: bool = False
  init_cfg: Any = None

  @classmethod
  def checkpoint_rules(cls, cfg) -> dict[str, CheckpointRules]:
    """mmseg's ICNet checkpoints, and the releases of the ResNet family of ``backbone_cfg`` (where
    mmseg's in1k-pre configs put its ImageNet file) loaded into ``backbone`` alone."""
    return {**CHECKPOINT_RULES, **nested_backbone_rules(cfg.get("backbone_cfg"), "backbone.")}

  @nn.compact
  def __call__(self, x, train: bool = False):
    from segjax.models import BACKBONES, module_kwargs  # the registry imports this module
    if self.backbone_cfg is None:
      raise ValueError("ICNet: backbone_cfg (a ResNet dict) must be passed from the config")
    cls = BACKBONES.get(self.backbone_cfg.get("type"))
    if cls is None or not issubclass(cls, resnet.ResNet):
      raise ValueError(f"ICNet: backbone_cfg.type={self.backbone_cfg.get('type')!r}; ICNet runs a "
                       "ResNet stage by stage, so it must be ResNet, ResNetV1b/c/d or ResNeXt")
    resnet_module = cls(**module_kwargs(cls, self.backbone_cfg, "backbone.backbone_cfg"), parent=None)
    resolved = {f.name: getattr(resnet_module, f.name) for f in dataclasses.fields(cls)
                if f.name not in ("parent", "name")}
    layers.check_in_channels(x, self.in_channels, "ICNet backbone")
    norm_cfg = dict(self.norm_cfg or {"type": "BN", "requires_grad": True})
    act_cfg = dict(self.act_cfg or layers.RELU)
    conv = functools.partial(layers.conv_module, norm_cfg=norm_cfg)
    mid = self.light_branch_middle_channels
    sub1 = layers.Indexed((functools.partial(conv, mid, 3, 2, 1), functools.partial(conv, mid, 3, 2, 1),
                           functools.partial(conv, self.out_channels[0], 3, 2, 1)),
                          name="conv_sub1")(x, train)
    half = lambda y: layers.resize_by_scale(y, 0.5, self.align_corners)
    x_2, x = SplitResNet(resolved, name="backbone")(half(x), train, half)
    layers.check_in_channels(x_2, self.layer_channels[0], "ICNet layer_channels[0]")
    layers.check_in_channels(x, self.layer_channels[1], "ICNet layer_channels[1]")
    sub2 = conv(self.out_channels[1], 1, name="conv_sub2")(x_2, train)
    psp = PPM(tuple(self.pool_scales), self.psp_out_channels, norm_cfg, act_cfg, self.align_corners,
              name="psp_modules")(x, train)
    x = layers.conv_module(self.psp_out_channels, 3, 1, 1, norm_cfg=norm_cfg, act_cfg=act_cfg,
                           name="psp_bottleneck")(psp + [x], train)  # the concatenation
    sub4 = conv(self.out_channels[2], 1, name="conv_sub4")(x, train)
    return [sub1, sub2, sub4]
