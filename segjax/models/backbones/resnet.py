"""ResNet (V1b), ResNetV1c, ResNetV1d and ResNeXt as MMSegmentation defines them.

Parameter names follow mmseg's state_dict: ``stem/0`` (V1c/V1d deep stem) or ``conv1``/``bn1``,
``layer1/0/conv1``, ``layer1/0/bn1``, ``layer1/0/downsample/0`` ...
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax

from segjax import layers
from segjax.convert import CheckpointRules

BN = {"type": "BN", "requires_grad": True}


class BasicBlock(nn.Module):
  planes: int
  stride: int = 1
  dilation: int = 1
  downsample: Any = None  # (avg_pool_kernel or 0, conv_stride) when the block has a downsample
  norm_cfg: dict = None
  frozen: bool = False
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = lambda name: layers.norm_layer(self.norm_cfg, name=name, frozen=self.frozen)
    out = layers.conv2d(self.planes, 3, self.stride, self.dilation, self.dilation,
                        use_bias=False, name="conv1")(x)
    out = nn.relu(norm("bn1")(out, train))
    # mmseg's BasicBlock: the second conv is never dilated.
    out = layers.conv2d(self.planes, 3, 1, 1, use_bias=False, name="conv2")(out)
    out = norm("bn2")(out, train)
    identity = _downsample(self, x, self.planes, train)
    return nn.relu(out + identity)


class Bottleneck(nn.Module):
  planes: int
  stride: int = 1
  dilation: int = 1
  downsample: Any = None
  norm_cfg: dict = None
  frozen: bool = False
  style: str = "pytorch"
  groups: int = 1
  width: int = 0  # ResNeXt width of conv1/conv2; 0 means planes
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = lambda name: layers.norm_layer(self.norm_cfg, name=name, frozen=self.frozen)
    s1, s2 = (1, self.stride) if self.style == "pytorch" else (self.stride, 1)
    width = self.width or self.planes
    out = layers.conv2d(width, 1, s1, use_bias=False, name="conv1")(x)
    out = nn.relu(norm("bn1")(out, train))
    out = layers.conv2d(width, 3, s2, self.dilation, self.dilation, self.groups, use_bias=False,
                        name="conv2")(out)
    out = nn.relu(norm("bn2")(out, train))
    out = layers.conv2d(self.planes * 4, 1, use_bias=False, name="conv3")(out)
    out = norm("bn3")(out, train)
    identity = _downsample(self, x, self.planes * 4, train)
    return nn.relu(out + identity)


def _downsample(block, x, features, train):
  if block.downsample is None:
    return x
  return Downsample(features, *block.downsample, norm_cfg=block.norm_cfg, frozen=block.frozen,
                    name="downsample")(x, train)


class Downsample(nn.Module):
  """mmseg ResLayer's shortcut: [``0`` AvgPool2d(stride, ceil_mode) if avg_down,] conv1x1, norm."""
  features: int
  avg_kernel: int  # 0 unless avg_down
  conv_stride: int
  norm_cfg: dict
  frozen: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    offset = 0
    if self.avg_kernel:
      x = layers.avg_pool_ceil(x, self.avg_kernel)
      offset = 1
    x = layers.conv2d(self.features, 1, self.conv_stride, use_bias=False, name=str(offset))(x)
    return layers.norm_layer(self.norm_cfg, name=str(offset + 1), frozen=self.frozen)(x, train)


class DeepStem(nn.Module):
  """V1c/V1d stem: three 3x3 conv-BN-ReLU (``stem.0/1``, ``stem.3/4``, ``stem.6/7``)."""
  stem_channels: int
  norm_cfg: dict
  frozen: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    c = self.stem_channels
    for i, (ch, stride) in enumerate(((c // 2, 2), (c // 2, 1), (c, 1))):
      x = layers.conv2d(ch, 3, stride, 1, use_bias=False, name=str(3 * i))(x)
      x = layers.norm_layer(self.norm_cfg, name=str(3 * i + 1), frozen=self.frozen)(x, train)
      x = nn.relu(x)
    return x


class ResLayer(nn.Module):
  """One stage: blocks named ``0``, ``1``, ... with mmseg's dilation / multi_grid rule."""
  block_cls: Any
  planes: int
  num_blocks: int
  stride: int
  dilations: Sequence[int]  # per block
  downsample: Any
  block_kwargs: dict

  @nn.compact
  def __call__(self, x, train: bool = False):
    for j in range(self.num_blocks):
      x = self.block_cls(self.planes, self.stride if j == 0 else 1, self.dilations[j],
                         self.downsample if j == 0 else None, name=str(j),
                         **self.block_kwargs)(x, train)
    return x


ARCH_SETTINGS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


# How each release names a ResNet's weights (segjax.convert.convert_backbone_checkpoint(source=...)).
CHECKPOINT_RULES = {
    # mmseg's segmentor checkpoints (backbone keys after the segmentor's ``backbone.``).
    "mmseg": CheckpointRules(),
    # ImageNet classifiers (``torchvision://resnet50``, ``open-mmlab://resnet50_v1c``): the
    # backbone's keys at top level plus the ``fc`` classifier.
    "imagenet": CheckpointRules(skip=(r"^fc\.",)),
    # mmcls ImageClassifier checkpoints (the rsb configs' ``init_cfg``): ``backbone.`` and ``head.``.
    "mmcls": CheckpointRules(skip=(r"^(?!backbone\.)",), renames=((r"^backbone\.", ""),)),
}


class ResNet(nn.Module):
  """mmseg ``ResNet`` (V1b by default). Returns the list of stage outputs in ``out_indices``."""
  # A small instance for the registry tests (tests/test_registry.py).
  TINY: ClassVar[dict] = dict(depth=18, stem_channels=8, base_channels=8,
                              norm_cfg=dict(type="BN", requires_grad=True))
  CHECKPOINT_RULES: ClassVar[dict[str, CheckpointRules]] = CHECKPOINT_RULES
  depth: int = 50
  in_channels: int = 3
  stem_channels: int = 64
  base_channels: int = 64
  num_stages: int = 4
  strides: Sequence[int] = (1, 2, 2, 2)
  dilations: Sequence[int] = (1, 1, 1, 1)
  out_indices: Sequence[int] = (0, 1, 2, 3)
  style: str = "pytorch"
  deep_stem: bool = False
  avg_down: bool = False
  frozen_stages: int = -1
  norm_cfg: dict = None
  norm_eval: bool = False
  # mmcv's gradient checkpointing: True (every stage) or one bool per stage (segjax); the
  # stage is recomputed in the backward pass, keeping what ``cp_policy`` (a name in
  # ``jax.checkpoint_policies``, e.g. 'dots_saveable') allows.
  with_cp: bool | Sequence[bool] = False
  cp_policy: str | None = None
  multi_grid: Sequence[int] | None = None
  contract_dilation: bool = False
  groups: int = 1
  base_width: int = 4
  pretrained: Any = None
  init_cfg: Any = None

  def arch(self) -> tuple[type, Sequence[int]]:
    """(block class, blocks per stage) of ``depth``; a variant family overrides it."""
    if self.depth not in ARCH_SETTINGS:
      raise ValueError(f"ResNet depth={self.depth} is not one of {sorted(ARCH_SETTINGS)}")
    return ARCH_SETTINGS[self.depth]

  def block_kwargs(self, block_cls: type, planes: int) -> dict:
    """A stage's block arguments beyond ``norm_cfg`` and ``frozen``; a variant family adds its own."""
    if block_cls is not Bottleneck:
      return {}
    kwargs = dict(style=self.style)
    if self.groups != 1:
      kwargs.update(groups=self.groups,
                    width=(planes * self.base_width // self.base_channels) * self.groups)
    return kwargs

  def frozen_parameters(self) -> tuple[str, ...]:
    """What mmseg's ``_freeze_stages`` sets ``requires_grad=False`` on (the optimizer leaves it
    as it is): the stem (``stem``, or ``conv1``/``bn1``) when ``frozen_stages >= 0``, and
    ``layer1`` .. ``layer{frozen_stages}``."""
    if self.frozen_stages < 0:
      return ()
    stem = ("stem",) if self.deep_stem else ("conv1", "bn1")
    return (*stem, *(f"layer{i}" for i in range(1, self.frozen_stages + 1)))

  @nn.compact
  def __call__(self, x, train: bool = False):
    block_cls, stage_blocks = self.arch()
    layers.check_in_channels(x, self.in_channels, f"{type(self).__name__} backbone")
    norm_cfg = dict(self.norm_cfg or BN)
    stage_blocks = stage_blocks[:self.num_stages]
    # norm_eval keeps every BN in eval mode; frozen stages also stop gradients.
    bn_train = train and not self.norm_eval

    def frozen(stage):  # stage 0 is the stem
      return self.frozen_stages >= stage

    if self.deep_stem:
      x = DeepStem(self.stem_channels, norm_cfg, frozen(0), name="stem")(x, bn_train)
    else:
      x = layers.conv2d(self.stem_channels, 7, 2, 3, use_bias=False, name="conv1")(x)
      x = nn.relu(layers.norm_layer(norm_cfg, name="bn1", frozen=frozen(0))(x, bn_train))
    x = layers.max_pool_3x3_s2(x)
    if frozen(0):
      x = jax.lax.stop_gradient(x)

    outs = []
    inplanes = self.stem_channels
    for i, num_blocks in enumerate(stage_blocks):
      stride, dilation = self.strides[i], self.dilations[i]
      planes = self.base_channels * 2**i
      grid = self.multi_grid if i == len(stage_blocks) - 1 else None
      first_dilation = dilation // 2 if dilation > 1 and self.contract_dilation else dilation
      block_kwargs = dict(norm_cfg=norm_cfg, frozen=frozen(i + 1), **self.block_kwargs(block_cls, planes))
      if grid is None:
        block_dilations = [first_dilation] + [dilation] * (num_blocks - 1)
      else:
        block_dilations = list(grid[:num_blocks])
      downsample = None
      if stride != 1 or inplanes != planes * block_cls.expansion:
        downsample = (stride, 1) if self.avg_down else (0, stride)
      layer_cls = ResLayer
      if self.with_cp if isinstance(self.with_cp, bool) else self.with_cp[i]:
        policy = getattr(jax.checkpoint_policies, self.cp_policy) if self.cp_policy else None
        layer_cls = nn.remat(ResLayer, static_argnums=(2,), policy=policy)
      x = layer_cls(block_cls, planes, num_blocks, stride, tuple(block_dilations), downsample,
                    block_kwargs, name=f"layer{i + 1}")(x, bn_train)
      inplanes = planes * block_cls.expansion
      if frozen(i + 1):
        x = jax.lax.stop_gradient(x)
      if i in self.out_indices:
        outs.append(x)
    return outs


class ResNetV1c(ResNet):
  """ResNet with the 3-conv deep stem (mmseg ``ResNetV1c``)."""
  deep_stem: bool = True


class ResNetV1d(ResNet):
  """Deep stem plus average-pool downsampling (mmseg ``ResNetV1d``)."""
  deep_stem: bool = True
  avg_down: bool = True


class ResNeXt(ResNet):
  """mmseg ``ResNeXt``: grouped 3x3 convs of width ``planes * base_width / 64 * groups``."""
  TINY: ClassVar[dict] = dict(depth=50, groups=2, base_width=4, stem_channels=8, base_channels=8,
                              norm_cfg=dict(type="BN", requires_grad=True))
  groups: int = 32
  base_width: int = 4
