"""HRNet (mmseg ``backbones/hrnet.py``): parallel branches at strides 4, 8, 16, 32 exchanging
information in every HRModule.

Parameter names follow mmseg's state_dict: ``conv1``/``bn1``, ``conv2``/``bn2`` (the stem, fixed at
64 channels), ``layer1/0/conv1`` ..., ``transition1/0/0`` (conv) ``/1`` (norm) or
``transition1/1/0/0`` for a new branch, ``stage2/0/branches/0/0/conv1``,
``stage2/0/fuse_layers/1/0/0/0`` ...
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence

import flax.linen as nn
import jax

from segjax import layers
from segjax.convert import CheckpointRules
from segjax.models.backbones.resnet import BasicBlock, Bottleneck, ResLayer

BLOCKS = {"BASIC": BasicBlock, "BOTTLENECK": Bottleneck}
STAGE_KEYS = ("num_modules", "num_branches", "block", "num_blocks", "num_channels")


class ConvNorm(nn.Module):
  """``nn.Sequential(conv (bias-free), norm[, ReLU])``: children ``0`` and ``1``."""
  features: int
  kernel_size: int
  stride: int
  norm_cfg: dict
  relu: bool
  frozen: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = layers.conv2d(self.features, self.kernel_size, self.stride, self.kernel_size // 2,
                      use_bias=False, name="0")(x)
    x = layers.norm_layer(self.norm_cfg, name="1", frozen=self.frozen)(x, train)
    return nn.relu(x) if self.relu else x


def res_layer(block: str, in_channels: int, planes: int, num_blocks: int, norm_cfg: dict,
              frozen: bool, with_cp: bool, name: str) -> ResLayer:
  """mmseg's ``_make_layer`` / ``_make_one_branch``: blocks ``0``, ``1``, ... at stride 1, the
  first with a 1x1 conv + norm shortcut when the channels change."""
  block_cls = BLOCKS[block]
  downsample = (0, 1) if in_channels != planes * block_cls.expansion else None
  layer_cls = nn.remat(ResLayer, static_argnums=(2,)) if with_cp else ResLayer
  return layer_cls(block_cls, planes, num_blocks, 1, (1,) * num_blocks, downsample,
                   dict(norm_cfg=norm_cfg, frozen=frozen), name=name)


class FuseLayer(nn.Module):
  """``fuse_layers.i``: output branch ``i`` = ReLU(sum over j of branch j brought to branch i):
  j > i by a 1x1 conv + norm then bilinear upsampling (x 2^(j-i), then to branch i's size);
  j < i by (i - j) stride-2 3x3 conv + norm (+ ReLU but the last)."""
  index: int
  channels: Sequence[int]
  norm_cfg: dict
  frozen: bool = False

  @nn.compact
  def __call__(self, xs, train: bool = False):
    i = self.index
    y = 0
    # mmseg adds the terms in branch order, starting from 0: the same order rounds the same.
    for j, x in enumerate(xs):
      if j == i:
        y = y + x
      elif j > i:
        x = ConvNorm(self.channels[i], 1, 1, self.norm_cfg, False, self.frozen, name=str(j))(x, train)
        # mmseg's Upsample(scale_factor=2**(j-i)) sizes its output int(size * scale) ...
        scale = 2**(j - i)
        x = layers.resize(x, (x.shape[1] * scale, x.shape[2] * scale), False)
        # ... and the fusion then resizes that to branch i's size (different for odd sizes).
        y = y + layers.resize(x, xs[i].shape[1:3], False)
      else:
        steps = tuple(
            _conv_norm_builder(self.channels[i] if k == i - j - 1 else self.channels[j], 3, 2,
                               self.norm_cfg, k != i - j - 1, self.frozen)
            for k in range(i - j))
        y = y + layers.Indexed(steps, name=str(j))(x, train)
    return nn.relu(y)


def _conv_norm_builder(features, kernel_size, stride, norm_cfg, relu, frozen):
  return lambda name: ConvNorm(features, kernel_size, stride, norm_cfg, relu, frozen, name=name)


class HRModule(nn.Module):
  """mmseg ``HRModule``: ``branches.b`` (``num_blocks[b]`` blocks each) then ``fuse_layers``
  (every output branch, or only the first when ``multiscale_output`` is False)."""
  num_branches: int
  block: str
  num_blocks: Sequence[int]
  in_channels: Sequence[int]
  num_channels: Sequence[int]
  multiscale_output: bool = True
  norm_cfg: dict = None
  frozen: bool = False
  with_cp: bool = False

  @nn.compact
  def __call__(self, xs, train: bool = False):
    expansion = BLOCKS[self.block].expansion
    xs = Branches(self.block, tuple(self.num_blocks), tuple(self.in_channels),
                  tuple(self.num_channels), self.norm_cfg, self.frozen, self.with_cp,
                  name="branches")(xs, train)
    if self.num_branches == 1:
      return xs
    channels = tuple(c * expansion for c in self.num_channels)
    num_out = self.num_branches if self.multiscale_output else 1
    return FuseLayers(num_out, channels, self.norm_cfg, self.frozen, name="fuse_layers")(xs, train)


class Branches(nn.Module):
  block: str
  num_blocks: Sequence[int]
  in_channels: Sequence[int]
  num_channels: Sequence[int]
  norm_cfg: dict
  frozen: bool
  with_cp: bool

  @nn.compact
  def __call__(self, xs, train: bool = False):
    return [res_layer(self.block, self.in_channels[b], self.num_channels[b], self.num_blocks[b],
                      self.norm_cfg, self.frozen, self.with_cp, name=str(b))(x, train)
            for b, x in enumerate(xs)]


class FuseLayers(nn.Module):
  num_out: int
  channels: Sequence[int]
  norm_cfg: dict
  frozen: bool

  @nn.compact
  def __call__(self, xs, train: bool = False):
    return [FuseLayer(i, self.channels, self.norm_cfg, self.frozen, name=str(i))(xs, train)
            for i in range(self.num_out)]


class Transition(nn.Module):
  """``transitionN``: branch ``i`` kept (None in mmseg: no parameters), changed in width (3x3
  conv + norm + ReLU, ``i/0``, ``i/1``), or new (stride-2 3x3 convs from the last branch,
  ``i/k/0``, ``i/k/1``)."""
  pre_channels: Sequence[int]
  cur_channels: Sequence[int]
  norm_cfg: dict
  frozen: bool = False

  @nn.compact
  def __call__(self, xs, train: bool = False):
    outs = []
    num_pre = len(self.pre_channels)
    for i, out_ch in enumerate(self.cur_channels):
      # mmseg feeds every branch it changes the last previous branch (``transition[i](y_list[-1])``),
      # for a width change too.
      source = xs[-1]
      if i < num_pre:
        if out_ch == self.pre_channels[i]:
          outs.append(xs[i])
        else:
          outs.append(ConvNorm(out_ch, 3, 1, self.norm_cfg, True, self.frozen, name=str(i))(source, train))
        continue
      in_ch = self.pre_channels[-1]
      steps = tuple(_conv_norm_builder(out_ch if k == i - num_pre else in_ch, 3, 2, self.norm_cfg,
                                       True, self.frozen)
                    for k in range(i + 1 - num_pre))
      outs.append(layers.Indexed(steps, name=str(i))(source, train))
    return outs


class Stage(nn.Module):
  """``stageN``: ``num_modules`` HRModules ``0``, ``1``, ...; only the last may drop the
  lower-resolution outputs (``multiscale_output``)."""
  cfg: dict
  in_channels: Sequence[int]
  multiscale_output: bool
  norm_cfg: dict
  frozen: bool
  with_cp: bool

  @nn.compact
  def __call__(self, xs, train: bool = False):
    n = self.cfg["num_modules"]
    for m in range(n):
      xs = HRModule(self.cfg["num_branches"], self.cfg["block"], tuple(self.cfg["num_blocks"]),
                    tuple(self.in_channels), tuple(self.cfg["num_channels"]),
                    self.multiscale_output or m < n - 1, self.norm_cfg, self.frozen, self.with_cp,
                    name=str(m))(xs, train)
    return xs


# ImageNet HRNetV2 classifiers (``open-mmlab://msra/hrnetv2_w18``) also hold the classification
# head, which the segmentation backbone does not have.
CHECKPOINT_RULES = {
    "mmseg": CheckpointRules(),
    "imagenet": CheckpointRules(skip=(r"^(incre_modules|downsamp_modules|final_layer|classifier)\.",)),
}


def check_extra(extra) -> None:
  """mmseg asserts the four stage dicts; say which key or length is wrong."""
  if not isinstance(extra, Mapping):
    raise ValueError(f"HRNet: extra must be a dict with stage1..stage4, got {type(extra).__name__}")
  for s in range(1, 5):
    name = f"stage{s}"
    if name not in extra:
      raise ValueError(f"HRNet: extra has no {name!r}; it needs stage1..stage4, each with {list(STAGE_KEYS)}")
    cfg = extra[name]
    missing = [k for k in STAGE_KEYS if k not in cfg]
    if missing:
      raise ValueError(f"HRNet: extra.{name} lacks {missing}")
    if cfg["block"] not in BLOCKS:
      raise ValueError(f"HRNet: extra.{name}.block={cfg['block']!r}; expected one of {sorted(BLOCKS)}")
    for key in ("num_blocks", "num_channels"):
      if len(cfg[key]) != cfg["num_branches"]:
        raise ValueError(f"HRNet: extra.{name}.{key}={tuple(cfg[key])} has {len(cfg[key])} entries "
                         f"but num_branches={cfg['num_branches']}")


class HRNet(nn.Module):
  """mmseg ``HRNet``: returns the branches of stage 4 (4 maps at strides 4, 8, 16, 32; only
  the first when ``multiscale_output`` is False)."""
  TINY: ClassVar[dict] = dict(extra=dict(
      stage1=dict(num_modules=1, num_branches=1, block="BOTTLENECK", num_blocks=(1,), num_channels=(4,)),
      stage2=dict(num_modules=1, num_branches=2, block="BASIC", num_blocks=(1, 1), num_channels=(4, 8)),
      stage3=dict(num_modules=1, num_branches=3, block="BASIC", num_blocks=(1, 1, 1),
                  num_channels=(4, 8, 16)),
      stage4=dict(num_modules=2, num_branches=4, block="BASIC", num_blocks=(1, 1, 1, 1),
                  num_channels=(4, 8, 16, 32))))
  CHECKPOINT_RULES: ClassVar[dict[str, CheckpointRules]] = CHECKPOINT_RULES
  extra: Any = None
  in_channels: int = 3
  conv_cfg: Any = None
  norm_cfg: dict = None
  norm_eval: bool = False
  with_cp: bool = False
  frozen_stages: int = -1
  zero_init_residual: bool = False  # initialisation only
  multiscale_output: bool = True
  pretrained: Any = None
  init_cfg: Any = None

  def frozen_parameters(self) -> tuple[str, ...]:
    """What mmseg's ``_freeze_stages`` sets ``requires_grad=False`` on: the two stem convs and
    norms when ``frozen_stages >= 0``; stage 1 is ``layer1`` + ``transition1``, stage k
    ``stage{k}`` + ``transition{k}`` (stage 4 has no transition of its own)."""
    if self.frozen_stages < 0:
      return ()
    norm = layers.NORM_NAMES[(self.norm_cfg or {"type": "BN"})["type"]]
    names = ["conv1", f"{norm}1", "conv2", f"{norm}2"]
    for i in range(1, self.frozen_stages + 1):
      names += ["layer1", "transition1"] if i == 1 else [f"stage{i}", *([f"transition{i}"] if i < 4 else [])]
    return tuple(names)

  @nn.compact
  def __call__(self, x, train: bool = False):
    check_extra(self.extra)
    if self.conv_cfg is not None:
      raise ValueError(f"HRNet: conv_cfg={self.conv_cfg} is not supported; only None (nn.Conv2d)")
    layers.check_in_channels(x, self.in_channels, "HRNet backbone")
    norm_cfg = dict(self.norm_cfg or {"type": "BN", "requires_grad": True})
    bn_train = train and not self.norm_eval
    norm_name = layers.NORM_NAMES[norm_cfg["type"]]

    def frozen(stage):  # 0: stem; 1: layer1 + transition1; k: stagek + transitionk
      return self.frozen_stages >= stage

    def freeze(stage, value):
      return jax.lax.stop_gradient(value) if frozen(stage) else value

    for k in (1, 2):
      x = layers.conv2d(64, 3, 2, 1, use_bias=False, name=f"conv{k}")(x)
      x = layers.norm_layer(norm_cfg, name=f"{norm_name}{k}", frozen=frozen(0))(x, bn_train)
      x = nn.relu(x)
    x = freeze(0, x)

    cfg1 = self.extra["stage1"]
    block1 = BLOCKS[cfg1["block"]]
    x = res_layer(cfg1["block"], 64, cfg1["num_channels"][0], cfg1["num_blocks"][0], norm_cfg,
                  frozen(1), self.with_cp, name="layer1")(x, bn_train)
    pre_channels = [cfg1["num_channels"][0] * block1.expansion]
    xs = [x]
    for s in (2, 3, 4):
      cfg = self.extra[f"stage{s}"]
      channels = [c * BLOCKS[cfg["block"]].expansion for c in cfg["num_channels"]]
      xs = Transition(tuple(pre_channels), tuple(channels), norm_cfg, frozen(s - 1),
                      name=f"transition{s - 1}")(xs, bn_train)
      xs = [freeze(s - 1, t) for t in xs]
      xs = Stage(cfg, tuple(channels), self.multiscale_output or s < 4, norm_cfg, frozen(s),
                 self.with_cp, name=f"stage{s}")(xs, bn_train)
      xs = [freeze(s, t) for t in xs]
      pre_channels = channels
    return xs
