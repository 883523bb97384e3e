"""mmcls ``ConvNeXt`` (``type='mmcls.ConvNeXt'`` in mmseg's configs), NHWC, and its layer ids
for mmseg's ``LearningRateDecayOptimizerConstructor``.

``downsample_layers.0`` is the stem (``0`` a patchify conv, ``1`` LayerNorm), ``downsample_layers.i``
(i >= 1) a LayerNorm (eps 1e-5, mmcls's LayerNorm2d default) then a 2x2 stride-2 conv;
``stages.i.j`` the blocks: 7x7 depthwise conv, LayerNorm, ``pointwise_conv1`` (Linear, or a 1x1
conv without ``linear_pw_conv``), GELU, ``pointwise_conv2``, layer scale ``gamma``, drop path;
``norm{i}`` each output stage's LayerNorm.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax import layers
from segjax.convert import CheckpointRules

ARCH_SETTINGS = {
    "tiny": {"depths": (3, 3, 9, 3), "channels": (96, 192, 384, 768)},
    "small": {"depths": (3, 3, 27, 3), "channels": (96, 192, 384, 768)},
    "base": {"depths": (3, 3, 27, 3), "channels": (128, 256, 512, 1024)},
    "large": {"depths": (3, 3, 27, 3), "channels": (192, 384, 768, 1536)},
    "xlarge": {"depths": (3, 3, 27, 3), "channels": (256, 512, 1024, 2048)},
}
LN2D = {"type": "LN2d", "eps": 1e-6}


def _norm_eps(norm_cfg: dict) -> float:
  """eps of mmcls's ``norm_cfg``: 'LN2d' (LayerNorm over channels) or 'LN', as both normalise
  the channels of an NHWC map."""
  if norm_cfg.get("type") not in ("LN2d", "LN") or set(norm_cfg) - {"type", "eps", "requires_grad"}:
    raise ValueError(f"ConvNeXt: norm_cfg={norm_cfg}; expected dict(type='LN2d', eps=...)")
  if not norm_cfg.get("requires_grad", True):  # its LayerNorms are built from eps alone, unmarked
    raise ValueError(f"ConvNeXt: norm_cfg={norm_cfg}: requires_grad=False is not supported")
  return norm_cfg.get("eps", 1e-5)


class ConvNeXtBlock(nn.Module):
  in_channels: int
  norm_eps: float = 1e-6
  act_cfg: dict = None
  mlp_ratio: float = 4.0
  linear_pw_conv: bool = True
  drop_path_rate: float = 0.0
  layer_scale_init_value: float = 1e-6

  @nn.compact
  def __call__(self, x, train: bool = False):
    c = self.in_channels
    out = layers.conv2d(c, 7, 1, 3, groups=c, name="depthwise_conv")(x)
    out = layers.LayerNorm(self.norm_eps, name="norm")(out)
    mid = int(self.mlp_ratio * c)
    if self.linear_pw_conv:
      pw = functools.partial(nn.Dense, kernel_init=layers.linear_init)
    else:
      pw = functools.partial(layers.conv2d, kernel_size=1)
    out = pw(mid, name="pointwise_conv1")(out)
    out = layers.activation(self.act_cfg or {"type": "GELU"})(out)
    out = pw(c, name="pointwise_conv2")(out)
    if self.layer_scale_init_value > 0:
      gamma = self.param("gamma", nn.initializers.constant(self.layer_scale_init_value), (c,), jnp.float32)
      out = out * gamma.astype(out.dtype)
    return x + layers.drop_path(self, out, self.drop_path_rate, train)


# How releases of ConvNeXt weights name them (segjax.convert: CHECKPOINT_RULES[source]).
CHECKPOINT_RULES = {
    "mmseg": CheckpointRules(),
    # mmcls's ImageNet classifiers, as mmseg's configs load them (init_cfg=dict(type='Pretrained',
    # prefix='backbone.')): the ``backbone.`` keys without the prefix. A classifier keeps only its
    # last output norm (``norm3``); mmseg's strict=False load leaves the other ``norm{i}`` of
    # its out_indices at their initialisation.
    "mmcls": CheckpointRules(skip=(r"^(?!backbone\.)",), renames=((r"^backbone\.", ""),),
                             keep_initial=(r"^norm\d+$",)),
}


class ConvNeXt(nn.Module):
  """mmcls ``ConvNeXt``: ``arch`` a name of ``ARCH_SETTINGS`` or ``dict(depths, channels)``.
  Returns each ``out_indices`` stage normalised by ``norm{i}``: an NHWC map, or with
  ``gap_before_final_norm`` (mmcls's default, for classification) the (N, C) normalised global
  average. ``frozen_stages`` stops the gradient of the first stages and their downsampling."""
  TINY: ClassVar[dict] = dict(arch={"depths": (1, 1, 2, 1), "channels": (8, 16, 24, 32)},
                              out_indices=(0, 1, 2, 3), drop_path_rate=0.1, layer_scale_init_value=1.0,
                              gap_before_final_norm=False)
  CHECKPOINT_RULES: ClassVar[dict[str, CheckpointRules]] = CHECKPOINT_RULES
  arch: Any = "tiny"
  in_channels: int = 3
  stem_patch_size: int = 4
  norm_cfg: dict = None  # LN2d, eps 1e-6
  act_cfg: dict = None  # GELU
  linear_pw_conv: bool = True
  drop_path_rate: float = 0.0
  layer_scale_init_value: float = 1e-6
  out_indices: Any = -1
  frozen_stages: int = 0
  gap_before_final_norm: bool = True
  with_cp: bool = False
  init_cfg: Any = None

  def settings(self) -> tuple[Sequence[int], Sequence[int]]:
    arch = self.arch
    if isinstance(arch, str):
      if arch not in ARCH_SETTINGS:
        raise ValueError(f"ConvNeXt: arch={arch!r}; expected one of {sorted(ARCH_SETTINGS)} or a dict")
      arch = ARCH_SETTINGS[arch]
    if not {"depths", "channels"} <= set(arch) or len(arch["depths"]) != len(arch["channels"]):
      raise ValueError(f"ConvNeXt: arch={arch} must have 'depths' and 'channels' of the same length")
    return tuple(arch["depths"]), tuple(arch["channels"])

  def frozen_parameters(self) -> tuple[str, ...]:
    """What mmcls's ``_freeze_stages`` sets ``requires_grad=False`` on: ``downsample_layers.{i}``
    and ``stages.{i}`` for i < frozen_stages (the output norms stay trained)."""
    return tuple(name for i in range(self.frozen_stages) for name in (f"downsample_layers.{i}", f"stages.{i}"))

  @nn.compact
  def __call__(self, x, train: bool = False):
    depths, channels = self.settings()
    out_indices = [self.out_indices] if isinstance(self.out_indices, int) else list(self.out_indices)
    out_indices = [i + 4 if i < 0 else i for i in out_indices]  # mmcls adds 4 whatever the depth
    layers.check_in_channels(x, self.in_channels, "ConvNeXt backbone")
    norm_eps = _norm_eps(self.norm_cfg or LN2D)
    rates = layers.drop_path_rates(self.drop_path_rate, sum(depths))
    downsample_layers = layers.NamedChildren(name="downsample_layers")
    stages = layers.NamedChildren(name="stages")
    block_cls = nn.remat(ConvNeXtBlock, static_argnums=(2,)) if self.with_cp else ConvNeXtBlock
    outs, first = [], 0
    for i, depth in enumerate(depths):
      if i == 0:
        stem = (functools.partial(layers.conv2d, channels[0], self.stem_patch_size, self.stem_patch_size),
                functools.partial(layers.LayerNorm, norm_eps))
      else:
        stem = (functools.partial(layers.LayerNorm, 1e-5), functools.partial(layers.conv2d, channels[i], 2, 2))
      down = downsample_layers(i, layers.NamedChildren, 0, stem[0], x)
      x = downsample_layers(i, layers.NamedChildren, 1, stem[1], down)
      for j in range(depth):
        block = functools.partial(block_cls, channels[i], norm_eps, self.act_cfg, 4.0, self.linear_pw_conv,
                                  rates[first + j], self.layer_scale_init_value)
        x = stages(i, layers.NamedChildren, j, block, x, train)
      first += depth
      if i < self.frozen_stages:
        x = jax.lax.stop_gradient(x)
      if i in out_indices:
        norm = layers.LayerNorm(norm_eps, name=f"norm{i}")
        if self.gap_before_final_norm:
          outs.append(norm(x.mean(axis=(1, 2))))
        else:
          outs.append(norm(x))
    return outs


def layer_id(name: str, num_layers: int) -> int:
  """mmseg's ``get_layer_id_for_convnext(name, num_layers)`` ('layer_wise' decay) of the
  parameter ``name`` (mmseg's dotted form); ``num_layers`` is ``paramwise_cfg.num_layers``."""
  if name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed"):
    return 0
  if name.startswith("backbone.downsample_layers"):
    return {0: 0, 1: 2, 2: 3}.get(int(name.split(".")[2]), num_layers)
  if name.startswith("backbone.stages"):
    stage, block = int(name.split(".")[2]), int(name.split(".")[3])
    return {0: 1, 1: 2, 2: 3 + block // 3}.get(stage, num_layers)
  return num_layers + 1


def stage_id(name: str, num_layers: int) -> int:
  """mmseg's ``get_stage_id_for_convnext(name, num_layers + 2)`` ('stage_wise' decay)."""
  if name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed"):
    return 0
  if name.startswith("backbone.downsample_layers"):
    return 0
  if name.startswith("backbone.stages"):
    return int(name.split(".")[2]) + 1
  return num_layers + 1
