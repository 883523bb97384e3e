"""DPTHead (mmseg ``dpt_head.py``): Dense Prediction Transformer's decoder over ViT levels given as
``[map, cls_token]`` (``output_cls_token=True``). ``reassemble_blocks`` folds the class token in
(``readout_type`` 'project': a Linear + GELU of [token, cls]; 'add'; 'ignore'), projects each
level (``projects/<i>``) and resamples it to strides 4, 8, 16, 32 (``resize_layers/<i>``:
ConvTranspose2d x4, x2, identity, a stride-2 conv); ``convs/<i>`` bring every level to
``channels``; ``fusion_blocks`` merge them from the coarsest up; ``project``; ``cls_seg``."""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax import layers
from segjax.models.backbones import vit
from segjax.models.heads.decode_head import BaseDecodeHead

READOUT_TYPES = ("ignore", "add", "project")


class ConvTranspose2d(nn.Module):
  """``nn.ConvTranspose2d`` with kernel = stride and no padding (each input pixel becomes one
  k x k output block). ``kernel`` (k, k, out, in): the converter's Flax layout of PyTorch's
  (in, out, k, k) transposed-conv weight."""
  features: int
  kernel_size: int

  @nn.compact
  def __call__(self, x):
    k, (n, h, w, c) = self.kernel_size, x.shape
    kernel = self.param("kernel", layers.kaiming_fan_out, (k, k, self.features, c), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    y = jnp.einsum("nijc,aboc->niajbo", x, kernel.astype(x.dtype))
    return y.reshape(n, h * k, w * k, self.features) + bias.astype(x.dtype)


class ReassembleBlocks(nn.Module):
  in_channels: int = 768
  out_channels: Sequence[int] = (96, 192, 384, 768)
  readout_type: str = "ignore"
  patch_size: int = 16

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    if self.readout_type not in READOUT_TYPES:
      raise ValueError(f"DPTHead: readout_type={self.readout_type!r}; expected one of {READOUT_TYPES}")
    c = self.in_channels
    maps, cls_tokens = [], []
    for level in inputs:
      if not isinstance(level, (list, tuple)) or len(level) != 2:
        raise ValueError("DPTHead: each input level must be [feature map, cls token] (the ViT "
                         "backbone's output_cls_token=True)")
      maps.append(level[0])
      cls_tokens.append(level[1][:, None, None, :])
    if self.readout_type == "project":  # readout_projects/<i> = Sequential(Linear, GELU)
      linear_gelu = lambda name: (lambda fc: lambda x, train: nn.gelu(fc(x), approximate=False))(vit.dense(c, name))
      joined = [jnp.concatenate([x, jnp.broadcast_to(t, x.shape)], -1) for x, t in zip(maps, cls_tokens)]
      maps = layers.ModuleList(len(maps), lambda i, name: layers.Indexed((linear_gelu,), name=name),
                               name="readout_projects")(joined, train)
    elif self.readout_type == "add":
      maps = [x + t for x, t in zip(maps, cls_tokens)]
    outs = maps
    projected = layers.ModuleList(len(outs), lambda i, name: layers.conv_module(
        self.out_channels[i], 1, act_cfg=None, name=name), name="projects")(outs, train)
    resizers = (
        lambda name: (lambda m: lambda x, train: m(x))(ConvTranspose2d(self.out_channels[0], 4, name=name)),
        lambda name: (lambda m: lambda x, train: m(x))(ConvTranspose2d(self.out_channels[1], 2, name=name)),
        lambda name: lambda x, train: x,
        lambda name: (lambda m: lambda x, train: m(x))(layers.conv2d(self.out_channels[3], 3, 2, 1, name=name)),
    )
    return layers.ModuleList(4, lambda i, name: resizers[i](name), name="resize_layers")(projected, train)


class PreActConvModule(nn.Module):
  """mmcv ``ConvModule`` with ``order=('act', 'conv', 'norm')``: activation, 3x3 ``conv`` without
  bias, ``bn``."""
  features: int
  norm_cfg: dict | None
  act_cfg: dict | None

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = layers.conv2d(self.features, 3, 1, 1, use_bias=self.norm_cfg is None, name="conv")(
        layers.activation(self.act_cfg)(x))
    if self.norm_cfg is None:
      return x
    return layers.norm_layer(self.norm_cfg, name=layers.NORM_NAMES[self.norm_cfg["type"]])(x, train)


class PreActResidualConvUnit(nn.Module):
  """``x + conv2(conv1(x))``, both pre-activation ConvModules; the identity is the input before
  the (in-place, in mmcv) activation."""
  features: int
  norm_cfg: dict | None
  act_cfg: dict | None

  @nn.compact
  def __call__(self, x, train: bool = False):
    out = PreActConvModule(self.features, self.norm_cfg, self.act_cfg, name="conv1")(x, train)
    return x + PreActConvModule(self.features, self.norm_cfg, self.act_cfg, name="conv2")(out, train)


class FeatureFusionBlock(nn.Module):
  """[x + res_conv_unit1(the finer level, resized to x)], res_conv_unit2, bilinear x2
  (``align_corners=True``), 1x1 ``project`` with bias. The first block has no res_conv_unit1."""
  features: int
  norm_cfg: dict | None
  act_cfg: dict | None
  align_corners: bool = True

  @nn.compact
  def __call__(self, x, skip=None, train: bool = False):
    if skip is not None:
      if skip.shape != x.shape:
        skip = layers.resize(skip, x.shape[1:3], False)
      x = x + PreActResidualConvUnit(self.features, self.norm_cfg, self.act_cfg, name="res_conv_unit1")(skip, train)
    x = PreActResidualConvUnit(self.features, self.norm_cfg, self.act_cfg, name="res_conv_unit2")(x, train)
    x = layers.resize_by_scale(x, 2, self.align_corners)
    return layers.conv_module(self.features, 1, act_cfg=None, bias=True, name="project")(x, train)


class DPTHead(BaseDecodeHead):
  TINY: ClassVar[dict] = dict(in_channels=(16, 16, 16, 16), in_index=(0, 1, 2, 3), channels=8,
                              embed_dims=16, post_process_channels=(4, 8, 8, 16), num_classes=3,
                              readout_type="project", norm_cfg=dict(type="BN", requires_grad=True))
  # A ViT's levels with output_cls_token: (map, cls token) pairs at one resolution.
  TINY_PYRAMID: ClassVar[tuple] = ((16, 16),) * 4
  TINY_CLS_TOKEN: ClassVar[bool] = True
  embed_dims: int = 768
  post_process_channels: Sequence[int] = (96, 192, 384, 768)
  readout_type: str = "ignore"
  patch_size: int = 16
  expand_channels: bool = False
  input_transform: str | None = "multiple_select"
  norm_cfg: dict | None = dataclasses.field(default_factory=lambda: {"type": "BN"})

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    if len(inputs) != 4 or len(self.post_process_channels) != 4:
      raise ValueError(f"DPTHead: 4 input levels and 4 post_process_channels expected (one per "
                       f"reassemble block), got {len(inputs)} and {list(self.post_process_channels)}")
    if self.input_transform != "multiple_select":
      raise ValueError(f"DPTHead: input_transform={self.input_transform!r}; it takes 'multiple_select'")
    index = self.in_index if isinstance(self.in_index, (list, tuple)) else (self.in_index,)
    levels = [inputs[i] for i in index]
    if self.expand_channels:  # mmseg's convs then expect 2^i x the reassembled channels: it fails too
      raise ValueError("DPTHead: expand_channels=True is not supported (mmseg's DPTHead cannot run with it)")
    norm_cfg = None if self.norm_cfg is None else dict(self.norm_cfg)
    feats = ReassembleBlocks(self.embed_dims, tuple(self.post_process_channels), self.readout_type,
                             self.patch_size, name="reassemble_blocks")(levels, train)
    feats = layers.ModuleList(4, lambda i, name: layers.conv_module(
        self.channels, 3, padding=1, act_cfg=None, bias=False, name=name), name="convs")(feats, train)
    fusion = layers.NamedChildren(name="fusion_blocks")
    block = lambda name: FeatureFusionBlock(self.channels, norm_cfg, self.act, name=name)
    out = fusion(0, block, feats[-1], None, train)
    for i in range(1, 4):
      out = fusion(i, block, out, feats[-(i + 1)], train)
    out = layers.conv_module(self.channels, 3, padding=1, norm_cfg=norm_cfg, act_cfg=self.act,
                             name="project")(out, train)
    return self.cls_seg(out, train)
