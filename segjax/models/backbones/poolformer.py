"""mmcls ``PoolFormer`` (``type='mmcls.PoolFormer'`` in mmseg's configs), NHWC.

``patch_embed.proj`` (a strided conv), then ``network``: stage blocks (``network.k.j``: GroupNorm
``norm1``, token mixer avg-pool(x) - x, ``layer_scale_1``; GroupNorm ``norm2``, 1x1-conv MLP
``mlp.fc1``/``fc2``, ``layer_scale_2``) alternating with downsampling patch embeddings
(``network.k.proj``) between stages of different widths; ``norm{k}`` normalises each position
``k`` of ``out_indices`` (0-6: stage 1, downsampling, stage 2, ...).
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax import layers
from segjax.convert import CheckpointRules

ARCH_SETTINGS = {
    "s12": {"layers": (2, 2, 6, 2), "embed_dims": (64, 128, 320, 512), "mlp_ratios": (4, 4, 4, 4),
            "layer_scale_init_value": 1e-5},
    "s24": {"layers": (4, 4, 12, 4), "embed_dims": (64, 128, 320, 512), "mlp_ratios": (4, 4, 4, 4),
            "layer_scale_init_value": 1e-5},
    "s36": {"layers": (6, 6, 18, 6), "embed_dims": (64, 128, 320, 512), "mlp_ratios": (4, 4, 4, 4),
            "layer_scale_init_value": 1e-6},
    "m36": {"layers": (6, 6, 18, 6), "embed_dims": (96, 192, 384, 768), "mlp_ratios": (4, 4, 4, 4),
            "layer_scale_init_value": 1e-6},
    "m48": {"layers": (8, 8, 24, 8), "embed_dims": (96, 192, 384, 768), "mlp_ratios": (4, 4, 4, 4),
            "layer_scale_init_value": 1e-6},
}
GN1 = {"type": "GN", "num_groups": 1}


def group_norm(norm_cfg: dict, name: str):
  """mmcv's GroupNorm of ``norm_cfg`` (``layers.norm_layer``: PyTorch's variance)."""
  if norm_cfg.get("type") != "GN":
    raise ValueError(f"PoolFormer: norm_cfg={norm_cfg}; expected dict(type='GN', num_groups=...)")
  return layers.norm_layer(norm_cfg, name)


def avg_pool_exclude_pad(x: jax.Array, size: int) -> jax.Array:
  """``nn.AvgPool2d(size, stride=1, padding=size // 2, count_include_pad=False)`` on NHWC."""
  pad = size // 2
  window, padding = (1, size, size, 1), ((0, 0), (pad, pad), (pad, pad), (0, 0))
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, (1, 1, 1, 1), padding)
  ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
  count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, (1, 1, 1, 1), padding)
  return total / count


class Mlp(nn.Module):
  hidden_features: int
  act_cfg: dict = None
  drop: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    out = layers.conv2d(self.hidden_features, 1, name="fc1")(x)
    out = layers.dropout(self, layers.activation(self.act_cfg or {"type": "GELU"})(out), self.drop, train)
    out = layers.conv2d(x.shape[-1], 1, name="fc2")(out)
    return layers.dropout(self, out, self.drop, train)


class PoolFormerBlock(nn.Module):
  dim: int
  pool_size: int = 3
  mlp_ratio: float = 4.0
  norm_cfg: dict = None
  act_cfg: dict = None
  drop: float = 0.0
  drop_path: float = 0.0
  layer_scale_init_value: float = 1e-5

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm_cfg = self.norm_cfg or GN1
    scale_init = nn.initializers.constant(self.layer_scale_init_value)
    scale1 = self.param("layer_scale_1", scale_init, (self.dim,), jnp.float32).astype(x.dtype)
    scale2 = self.param("layer_scale_2", scale_init, (self.dim,), jnp.float32).astype(x.dtype)
    y = group_norm(norm_cfg, "norm1")(x, train)
    x = x + layers.drop_path(self, scale1 * (avg_pool_exclude_pad(y, self.pool_size) - y), self.drop_path, train)
    y = Mlp(int(self.dim * self.mlp_ratio), self.act_cfg, self.drop, name="mlp")(
        group_norm(norm_cfg, "norm2")(x, train), train)
    return x + layers.drop_path(self, scale2 * y, self.drop_path, train)


class PatchEmbed(nn.Module):
  """mmcls PoolFormer's ``PatchEmbed``: the conv ``proj`` (no norm)."""
  embed_dim: int
  patch_size: int
  stride: int
  padding: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    return layers.conv2d(self.embed_dim, self.patch_size, self.stride, self.padding, name="proj")(x)


# How releases of PoolFormer weights name them (segjax.convert: CHECKPOINT_RULES[source]).
CHECKPOINT_RULES = {
    "mmseg": CheckpointRules(),
    # mmcls's ImageNet classifiers, as mmseg's configs load them (init_cfg=dict(type='Pretrained',
    # prefix='backbone.')): the ``backbone.`` keys without the prefix. A classifier keeps only its
    # last output norm (``norm6``); mmseg's strict=False load leaves the other ``norm{i}`` of
    # its out_indices at their initialisation.
    "mmcls": CheckpointRules(skip=(r"^(?!backbone\.)",), renames=((r"^backbone\.", ""),),
                             keep_initial=(r"^norm\d+$",)),
}


class PoolFormer(nn.Module):
  """mmcls ``PoolFormer``: ``arch`` a name of ``ARCH_SETTINGS`` or a dict with ``layers`` and
  ``embed_dims`` (``mlp_ratios``, ``layer_scale_init_value`` optional). ``frozen_stages >= 0``
  freezes the input patch embedding (mmcls's default 0 does) and the first ``frozen_stages``
  positions of ``network`` with their norms."""
  TINY: ClassVar[dict] = dict(arch={"layers": (1, 1, 2, 1), "embed_dims": (8, 16, 24, 32)},
                              out_indices=(0, 2, 4, 6), drop_path_rate=0.1, frozen_stages=-1)
  CHECKPOINT_RULES: ClassVar[dict[str, CheckpointRules]] = CHECKPOINT_RULES
  arch: Any = "s12"
  pool_size: int = 3
  norm_cfg: dict = None  # GN with one group
  act_cfg: dict = None  # GELU
  in_patch_size: int = 7
  in_stride: int = 4
  in_pad: int = 2
  down_patch_size: int = 3
  down_stride: int = 2
  down_pad: int = 1
  drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  out_indices: Any = -1
  frozen_stages: int = 0
  init_cfg: Any = None

  def settings(self) -> dict:
    arch = self.arch
    if isinstance(arch, str):
      if arch not in ARCH_SETTINGS:
        raise ValueError(f"PoolFormer: arch={arch!r}; expected one of {sorted(ARCH_SETTINGS)} or a dict")
      arch = ARCH_SETTINGS[arch]
    if not {"layers", "embed_dims"} <= set(arch):
      raise ValueError(f"PoolFormer: arch={arch} must have 'layers' and 'embed_dims'")
    return {"mlp_ratios": (4, 4, 4, 4), "layer_scale_init_value": 1e-5, **arch}

  def frozen_parameters(self) -> tuple[str, ...]:
    """What mmcls's ``_freeze_stages`` sets ``requires_grad=False`` on: ``patch_embed`` when
    ``frozen_stages >= 0``, then ``network.{i}`` and its ``norm{i}`` (if an output) for i <
    frozen_stages."""
    if self.frozen_stages < 0:
      return ()
    out_indices = [self.out_indices] if isinstance(self.out_indices, int) else list(self.out_indices)
    out_indices = [i + 7 if i < 0 else i for i in out_indices]
    names = ["patch_embed"]
    for i in range(self.frozen_stages):
      names += [f"network.{i}", *([f"norm{i}"] if i in out_indices else [])]
    return tuple(names)

  @nn.compact
  def __call__(self, x, train: bool = False):
    arch = self.settings()
    depths, dims = tuple(arch["layers"]), tuple(arch["embed_dims"])
    out_indices = [self.out_indices] if isinstance(self.out_indices, int) else list(self.out_indices)
    out_indices = [i + 7 if i < 0 else i for i in out_indices]  # mmcls adds 7 whatever the depth
    norm_cfg = self.norm_cfg or GN1
    x = PatchEmbed(dims[0], self.in_patch_size, self.in_stride, self.in_pad, name="patch_embed")(x)
    if self.frozen_stages >= 0:
      x = jax.lax.stop_gradient(x)
    # mmcls's network positions: stage blocks, then a downsampling embedding if the width changes.
    positions = []
    for i, depth in enumerate(depths):
      rates = [self.drop_path_rate * (j + sum(depths[:i])) / (sum(depths) - 1) for j in range(depth)]
      blocks = tuple(functools.partial(PoolFormerBlock, dims[i], self.pool_size, arch["mlp_ratios"][i],
                                       norm_cfg, self.act_cfg, self.drop_rate, rate,
                                       arch["layer_scale_init_value"]) for rate in rates)
      positions.append(functools.partial(layers.Indexed, blocks))
      if i < len(depths) - 1 and dims[i] != dims[i + 1]:
        positions.append(functools.partial(PatchEmbed, dims[i + 1], self.down_patch_size,
                                           self.down_stride, self.down_pad))
    network = layers.NamedChildren(name="network")
    outs = []
    for k, build in enumerate(positions):
      x = network(k, build, x, train)
      frozen = k < self.frozen_stages
      if frozen:
        x = jax.lax.stop_gradient(x)
      if k in out_indices:
        out = group_norm(norm_cfg, f"norm{k}")(x, train)
        outs.append(jax.lax.stop_gradient(out) if frozen else out)
    return outs
