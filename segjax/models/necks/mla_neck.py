"""MLANeck (mmseg ``necks/mla_neck.py``): SETR's multi-level feature aggregation. Each ViT level
gets a LayerNorm (``norm/<i>``) and a 1x1 ``mla/channel_proj/<i>``; from the deepest level down
each projection is added to the running sum, and each sum gets a 3x3 ``mla/feat_extract/<i>``.
As mmseg's code returns them, the outputs run deepest sum first."""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Sequence

import flax.linen as nn

from segjax import layers

SETR_LN = {"type": "LN", "eps": 1e-6, "requires_grad": True}


class MLAModule(nn.Module):
  in_channels: Sequence[int]
  out_channels: int
  norm_cfg: dict | None = None
  act_cfg: dict | None = None

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    conv = lambda kernel, padding: lambda i, name: layers.conv_module(
        self.out_channels, kernel, padding=padding, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg, name=name)
    projected = layers.ModuleList(len(inputs), conv(1, 0), name="channel_proj")(list(inputs), train)
    sums = []
    for feat in projected[::-1]:
      sums.append(feat if not sums else sums[-1] + feat)
    return layers.ModuleList(len(sums), conv(3, 1), name="feat_extract")(sums, train)


class MLANeck(nn.Module):
  TINY: ClassVar[dict] = dict(in_channels=(8, 16, 32, 64), out_channels=8,
                              norm_cfg=dict(type="BN", requires_grad=True), act_cfg=dict(type="ReLU"))
  # It sums its levels: a ViT's, all at one resolution.
  TINY_PYRAMID: ClassVar[tuple] = ((8, 16), (16, 16), (32, 16), (64, 16))
  in_channels: Sequence[int]
  out_channels: int
  norm_layer: dict = dataclasses.field(default_factory=lambda: dict(SETR_LN))
  norm_cfg: dict | None = None
  act_cfg: dict | None = None

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    if len(inputs) != len(self.in_channels):
      raise ValueError(f"MLANeck: {len(inputs)} inputs, but in_channels={list(self.in_channels)} "
                       f"lists {len(self.in_channels)}")
    for i, (x, c) in enumerate(zip(inputs, self.in_channels)):
      layers.check_in_channels(x, c, f"MLANeck input {i}")
    if len({tuple(x.shape[1:3]) for x in inputs}) > 1:
      raise ValueError("MLANeck: its levels are summed, so they must share one resolution (a plain "
                       f"ViT's); got {[tuple(x.shape[1:3]) for x in inputs]}")
    eps = layers.layer_norm_epsilon(self.norm_layer)
    norms = layers.ModuleList(len(inputs), lambda i, name: (
        lambda ln: lambda x, train: ln(x))(layers.LayerNorm(eps, name=name)), name="norm")
    normed = norms(list(inputs), train)
    return tuple(MLAModule(tuple(self.in_channels), self.out_channels, self.norm_cfg, self.act_cfg,
                           name="mla")(normed, train))
