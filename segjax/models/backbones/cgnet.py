"""CGNet as MMSegmentation defines it (mmseg ``backbones/cgnet.py``): a 3-conv stem, input
injection (the image average-pooled to 1/2 and 1/4), two levels of context guided blocks.

Parameter names follow mmseg's state_dict: ``stem/0/conv``, ``stem/0/bn``, ``stem/0/activate``
(PReLU ``weight``), ``norm_prelu_0/0`` (BN), ``norm_prelu_0/1`` (PReLU), ``level1/0/conv1x1``,
``f_loc``, ``f_sur``, ``bn``, ``activate``, ``bottleneck``, ``f_glo/fc/0`` and ``f_glo/fc/2`` (Linear).
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax import layers
from segjax.convert import CheckpointRules

BN = {"type": "BN", "requires_grad": True}
PRELU = {"type": "PReLU"}


class PReLU(nn.Module):
  """``nn.PReLU(num_parameters)``: x where x >= 0, else weight * x (one weight per channel, or
  one shared). The weight is stored as ``scale`` (a checkpoint's ``weight``); PyTorch starts it
  at 0.25."""
  num_parameters: int = 1

  @nn.compact
  def __call__(self, x):
    if self.num_parameters not in (1, x.shape[-1]):
      raise ValueError(f"PReLU: num_parameters={self.num_parameters} but the input has {x.shape[-1]} channels")
    weight = self.param("scale", nn.initializers.constant(0.25), (self.num_parameters,), jnp.float32)
    return jnp.where(x >= 0, x, weight.astype(x.dtype) * x)


def act_layer(act_cfg: dict | None, channels: int, name: str):
  """mmcv's activation of ``act_cfg``; a PReLU gets ``channels`` parameters as CGNet sets
  ``num_parameters`` (a parameter module named ``activate``, as ConvModule names it)."""
  if act_cfg is not None and act_cfg["type"] == "PReLU":
    return PReLU(channels, name=name)
  return layers.activation(act_cfg)


class ConvModule(nn.Module):
  """mmcv ``ConvModule`` (``conv``, ``bn``, ``activate``) that also takes mmcv's PReLU."""
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  norm_cfg: dict | None = None
  act_cfg: dict | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = layers.conv2d(self.features, self.kernel_size, self.stride, self.padding,
                      use_bias=self.norm_cfg is None, name="conv")(x)
    if self.norm_cfg is not None:
      x = layers.norm_layer(self.norm_cfg, name=layers.NORM_NAMES[self.norm_cfg["type"]])(x, train)
    return act_layer(self.act_cfg, self.features, "activate")(x)


class NormPReLU(nn.Module):
  """``nn.Sequential(norm, nn.PReLU(C))``: children ``0`` and ``1``."""
  norm_cfg: dict

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = layers.norm_layer(self.norm_cfg, name="0")(x, train)
    return PReLU(x.shape[-1], name="1")(x)


class GlobalContextExtractor(nn.Module):
  """Squeeze-and-excitation with Linear layers: ``fc.0`` (C -> C / reduction), ReLU, ``fc.2``,
  sigmoid; the input scaled per channel."""
  channels: int
  reduction: int

  @nn.compact
  def __call__(self, x):
    if not (self.reduction >= 1 and self.channels >= self.reduction):
      raise ValueError(f"GlobalContextExtractor: reduction={self.reduction} must be in [1, "
                       f"channels={self.channels}]")
    y = jnp.mean(x, axis=(1, 2))
    fc = layers.Indexed((lambda name: (lambda v, train: nn.Dense(self.channels // self.reduction, name=name)(v)),
                         lambda name: (lambda v, train: nn.relu(v)),
                         lambda name: (lambda v, train: nn.Dense(self.channels, name=name)(v))),
                        name="fc")
    y = nn.sigmoid(fc(y))
    return x * y[:, None, None, :]


class ContextGuidedBlock(nn.Module):
  """mmseg ``ContextGuidedBlock``: ``conv1x1`` (3x3 stride 2 when downsampling), local ``f_loc``
  and dilated surrounding ``f_sur`` depthwise convs, ``bn`` + PReLU ``activate`` of both,
  [``bottleneck`` 1x1], global context ``f_glo``, [identity]."""
  out_channels: int
  dilation: int = 2
  reduction: int = 16
  skip_connect: bool = True
  downsample: bool = False
  norm_cfg: dict = None
  act_cfg: dict = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    channels = self.out_channels if self.downsample else self.out_channels // 2
    kernel_size, stride = (3, 2) if self.downsample else (1, 1)
    out = ConvModule(channels, kernel_size, stride, (kernel_size - 1) // 2, self.norm_cfg,
                     self.act_cfg, name="conv1x1")(x, train)
    loc = layers.conv2d(channels, 3, 1, 1, groups=channels, use_bias=False, name="f_loc")(out)
    sur = layers.conv2d(channels, 3, 1, self.dilation, self.dilation, groups=channels,
                        use_bias=False, name="f_sur")(out)
    joint = jnp.concatenate([loc, sur], axis=-1)
    joint = layers.norm_layer(self.norm_cfg, name="bn")(joint, train)
    joint = PReLU(2 * channels, name="activate")(joint)
    if self.downsample:
      joint = layers.conv2d(self.out_channels, 1, use_bias=False, name="bottleneck")(joint)
    out = GlobalContextExtractor(self.out_channels, self.reduction, name="f_glo")(joint)
    if self.skip_connect and not self.downsample:
      return x + out
    return out


def input_injection(x, num_downsampling: int):
  """mmseg ``InputInjection``: ``nn.AvgPool2d(3, stride=2, padding=1)`` (padding counted) repeated."""
  for _ in range(num_downsampling):
    x = layers.avg_pool_3x3_s2(x)
  return x


CHECKPOINT_RULES = {"mmseg": CheckpointRules()}


class CGNet(nn.Module):
  """mmseg ``CGNet``: outputs of stage 0 (1/2), level 1 (1/4) and level 2 (1/8)."""
  TINY: ClassVar[dict] = dict(num_channels=(8, 16, 32), num_blocks=(2, 3), reductions=(4, 8))
  CHECKPOINT_RULES: ClassVar[dict[str, CheckpointRules]] = CHECKPOINT_RULES
  in_channels: int = 3
  num_channels: Sequence[int] = (32, 64, 128)
  num_blocks: Sequence[int] = (3, 21)
  dilations: Sequence[int] = (2, 4)
  reductions: Sequence[int] = (8, 16)
  conv_cfg: Any = None
  norm_cfg: dict = None
  act_cfg: dict = None
  norm_eval: bool = False
  with_cp: bool = False
  pretrained: Any = None
  init_cfg: Any = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    for arg, n in (("num_channels", 3), ("num_blocks", 2), ("dilations", 2), ("reductions", 2)):
      if len(getattr(self, arg)) != n:
        raise ValueError(f"CGNet: {arg}={tuple(getattr(self, arg))} needs {n} entries")
    if self.conv_cfg is not None:
      raise ValueError(f"CGNet: conv_cfg={self.conv_cfg} is not supported (only None, Conv2d)")
    layers.check_in_channels(x, self.in_channels, "CGNet backbone")
    norm_cfg = dict(self.norm_cfg or BN)
    act_cfg = dict(self.act_cfg or PRELU)
    train = train and not self.norm_eval
    block_cls = nn.remat(ContextGuidedBlock, static_argnums=(2,)) if self.with_cp else ContextGuidedBlock
    outs = []
    inp_2x, inp_4x = input_injection(x, 1), input_injection(x, 2)
    stem = layers.NamedChildren(name="stem")
    for i in range(3):
      x = stem(i, functools.partial(ConvModule, self.num_channels[0], 3, 2 if i == 0 else 1, 1,
                                    norm_cfg, act_cfg), x, train)
    x = NormPReLU(norm_cfg, name="norm_prelu_0")(jnp.concatenate([x, inp_2x], -1), train)
    outs.append(x)

    def level(x, index):
      blocks = []
      children = layers.NamedChildren(name=f"level{index + 1}")
      for i in range(self.num_blocks[index]):
        x = children(i, functools.partial(block_cls, self.num_channels[index + 1], self.dilations[index],
                                          self.reductions[index], downsample=i == 0,
                                          norm_cfg=norm_cfg, act_cfg=act_cfg), x, train)
        blocks.append(x)
      return blocks[0], x

    down1, x = level(x, 0)
    x = NormPReLU(norm_cfg, name="norm_prelu_1")(jnp.concatenate([x, down1, inp_4x], -1), train)
    outs.append(x)
    down2, x = level(x, 1)
    x = NormPReLU(norm_cfg, name="norm_prelu_2")(jnp.concatenate([down2, x], -1), train)
    outs.append(x)
    return outs
