"""FPN (mmseg ``necks/fpn.py``): 1x1 lateral convs, a top-down path that upsamples each level
and adds it to the one below, 3x3 output convs, and extra coarser levels on top (strided
subsampling, or stride-2 convs as in RetinaNet)."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar, Sequence

import flax.linen as nn

from segjax import layers

EXTRA_CONV_SOURCES = ("on_input", "on_lateral", "on_output")
UPSAMPLE_KEYS = ("mode", "scale_factor", "align_corners")


class IndexedModuleList(nn.Module):
  """An ``nn.ModuleList`` called one child at a time: ``modules(x, i)`` is mmseg's
  ``self.fpn_convs[i](x)``, child ``i`` named ``str(i)``.

  FPN's extra levels each take the previous level's output, so its ``fpn_convs`` cannot run as
  one ``layers.ModuleList`` pass over a list of inputs.
  """
  build: Any  # (index, name=...) -> callable(x, train)

  @nn.compact
  def __call__(self, x, index: int, train: bool = False):
    return self.build(index, name=str(index))(x, train)


class FPN(nn.Module):
  """mmseg ``FPN``: a tuple of NHWC backbone features in, a tuple of ``num_outs`` NHWC maps with
  ``out_channels`` channels out (finest first). Children ``lateral_convs/<i>`` and
  ``fpn_convs/<i>`` (the extra-level convs continue ``fpn_convs``' numbering), as mmseg's
  state_dict names them.
  """
  # A small instance for the registry tests (tests/test_registry.py's feature pyramid).
  TINY: ClassVar[dict] = dict(in_channels=(8, 16, 32, 64), out_channels=8, num_outs=5,
                              add_extra_convs="on_input", norm_cfg=dict(type="BN", requires_grad=True))
  in_channels: Sequence[int]
  out_channels: int
  num_outs: int
  start_level: int = 0
  end_level: int = -1
  add_extra_convs: bool | str = False
  extra_convs_on_inputs: bool = False
  relu_before_extra_convs: bool = False
  no_norm_on_lateral: bool = False
  conv_cfg: dict | None = None
  norm_cfg: dict | None = None
  act_cfg: dict | None = None
  upsample_cfg: dict = dataclasses.field(default_factory=lambda: {"mode": "nearest"})
  # Accepted as in mmseg's configs. Random init is segjax's ConvModule's (kaiming, fan-out);
  # mmseg's default init_cfg re-draws these convs Xavier-uniform, which only matters when the
  # neck is trained from scratch.
  init_cfg: Any = None

  @property
  def backbone_end_level(self) -> int:
    """One past the last input level that gets a lateral conv (mmseg's ``backbone_end_level``)."""
    num_ins = len(self.in_channels)
    if self.end_level == -1:
      if self.num_outs < num_ins - self.start_level:
        raise ValueError(f"FPN: num_outs={self.num_outs} is fewer than the {num_ins - self.start_level} "
                         f"input levels from start_level={self.start_level} of in_channels={list(self.in_channels)}")
      return num_ins
    # With an explicit end_level mmseg allows no extra levels.
    if self.end_level > num_ins or self.num_outs != self.end_level - self.start_level:
      raise ValueError(f"FPN: end_level={self.end_level} needs end_level <= {num_ins} (len(in_channels)) and "
                       f"num_outs == end_level - start_level = {self.end_level - self.start_level}; "
                       f"got num_outs={self.num_outs}")
    return self.end_level

  @property
  def extra_conv_source(self) -> str | None:
    """What the first extra-level conv reads; None when extra levels are subsampled outputs."""
    mode = self.add_extra_convs
    if isinstance(mode, str):
      if mode not in EXTRA_CONV_SOURCES:
        raise ValueError(f"FPN: add_extra_convs={mode!r}; expected a bool or one of {EXTRA_CONV_SOURCES}")
      return mode
    if not isinstance(mode, bool):
      raise ValueError(f"FPN: add_extra_convs={mode!r}; expected a bool or one of {EXTRA_CONV_SOURCES}")
    if mode:  # mmseg's deprecated form: True, with extra_convs_on_inputs naming the source
      return "on_input" if self.extra_convs_on_inputs else "on_output"
    return None

  def upsample(self, x, size):
    """mmseg's ``resize(x, size=size, **upsample_cfg)`` (``F.interpolate``), or with the
    config's ``scale_factor`` in place of ``size``."""
    cfg = dict(self.upsample_cfg)
    unknown = sorted(set(cfg) - set(UPSAMPLE_KEYS))
    if unknown:
      raise ValueError(f"FPN: upsample_cfg={cfg} has keys {unknown}; expected some of {UPSAMPLE_KEYS}")
    mode, align_corners = cfg.get("mode", "nearest"), cfg.get("align_corners")
    if "scale_factor" in cfg:
      # F.interpolate(scale_factor=s) samples at 1/s steps and resize(size) at in/out steps: the
      # same when in * s is exactly the size of the level below, which the sum needs anyway.
      factors = cfg["scale_factor"]
      factors = factors if isinstance(factors, (list, tuple)) else (factors, factors)
      scaled = tuple(n * f for n, f in zip(x.shape[1:3], factors))
      if scaled != tuple(size):
        raise ValueError(f"FPN: upsample_cfg scale_factor={cfg['scale_factor']} takes a level of size "
                         f"{tuple(x.shape[1:3])} to {scaled}, but the level below is {tuple(size)}")
    if mode == "nearest":
      if align_corners is not None:  # F.interpolate refuses it too
        raise ValueError(f"FPN: upsample_cfg={cfg}: align_corners is only for mode='bilinear'")
      return layers.resize_nearest(x, size)
    if mode == "bilinear":
      return layers.resize(x, size, bool(align_corners))
    raise ValueError(f"FPN: upsample_cfg mode={mode!r} is not supported; expected 'nearest' or 'bilinear'")

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    if len(inputs) != len(self.in_channels):
      raise ValueError(f"FPN: {len(inputs)} input levels, but in_channels={list(self.in_channels)} "
                       f"lists {len(self.in_channels)}")
    conv_cfg = None if self.conv_cfg is None else dict(self.conv_cfg)
    if conv_cfg not in (None, {"type": "Conv2d"}, {"type": "Conv"}):
      raise ValueError(f"FPN: conv_cfg={conv_cfg} is not supported; expected None or dict(type='Conv2d')")
    end, source = self.backbone_end_level, self.extra_conv_source
    levels = range(self.start_level, end)
    for i in levels:
      layers.check_in_channels(inputs[i], self.in_channels[i], f"FPN input level {i}")

    lateral_norm = None if self.no_norm_on_lateral else self.norm_cfg
    lateral_convs = layers.ModuleList(
        len(levels), lambda i, name: layers.conv_module(
            self.out_channels, 1, norm_cfg=lateral_norm, act_cfg=self.act_cfg, name=name),
        name="lateral_convs")
    laterals = lateral_convs([inputs[i] for i in levels], train)
    for i in range(len(laterals) - 1, 0, -1):
      laterals[i - 1] = laterals[i - 1] + self.upsample(laterals[i], laterals[i - 1].shape[1:3])

    used = len(laterals)
    conv3x3 = functools.partial(layers.conv_module, self.out_channels, 3, padding=1,
                                norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
    # Children 0..used-1 are the levels' output convs, the rest the extra levels' stride-2 convs.
    fpn_convs = IndexedModuleList(
        lambda i, name: conv3x3(stride=1 if i < used else 2, name=name), name="fpn_convs")
    outs = [fpn_convs(laterals[i], i, train) for i in range(used)]
    if source is None:
      # F.max_pool2d(x, 1, stride=2): a 1x1 window, so every other row and column.
      while len(outs) < self.num_outs:
        outs.append(outs[-1][:, ::2, ::2])
    elif len(outs) < self.num_outs:
      first = {"on_input": inputs[end - 1], "on_lateral": laterals[-1], "on_output": outs[-1]}[source]
      outs.append(fpn_convs(first, used, train))
      for i in range(used + 1, self.num_outs):
        x = nn.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
        outs.append(fpn_convs(x, i, train))
    return tuple(outs)
