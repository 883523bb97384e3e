"""mmseg ``BaseDecodeHead`` and ``BaseCascadeDecodeHead``: the head contract.

A head owns three things, as in mmseg:
- its forward (``__call__``): features -> its raw output (logits, or several maps);
- ``forward_train(inputs, labels, train_cfg, prev_output)``: its training losses, keyed by mmseg's
  loss names (``loss_ce``, ``acc_seg``, ...; the segmentor adds the ``decode.``/``aux.`` prefix);
- ``forward_test(inputs, test_cfg, prev_output, train)``: the logits inference uses.
Segmentors call heads only through these; a head with several outputs, its own losses or its own
test-time procedure overrides ``losses``/``forward_train``/``forward_test``.

Dropout (and, in later families, drop path) is active only when the head runs in training mode
*and* a ``'dropout'`` rng is given: without one, a training-mode forward is deterministic (BatchNorm
still uses batch statistics), which is what ``apis.segmentor_losses(deterministic=True)`` uses.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax import layers, losses


class BaseDecodeHead(nn.Module):
  """Every registered head class sets ``TINY``: a small instance of it (keyword arguments) for
  the registry tests, whose inputs are the feature pyramid of tests/test_registry.py (8, 16, 32,
  64 channels at strides 4, 8, 16, 32; a class taking other levels declares ``TINY_PYRAMID``,
  (channels, stride) per level, and ``TINY_CLS_TOKEN`` for ViT-style (map, cls token) pairs);
  a cascade head also gets a previous stage's logits."""
  TINY: ClassVar[dict] = {}
  in_channels: Any = None  # int, or a sequence for multi-input heads; checked against the input
  channels: int = 512
  num_classes: int = 19
  out_channels: int | None = None
  threshold: float | None = None
  dropout_ratio: float = 0.1
  conv_cfg: Any = None
  norm_cfg: dict | None = None
  act_cfg: dict = None
  in_index: Any = -1
  input_transform: str | None = None
  loss_decode: Any = None
  ignore_index: int = 255
  sampler: Any = None
  align_corners: bool = False
  init_cfg: Any = None

  @property
  def act(self):
    return dict(self.act_cfg) if self.act_cfg is not None else layers.RELU

  @property
  def num_outputs(self) -> int:
    """mmseg: ``out_channels`` defaults to ``num_classes``; a binary head may use 1 channel
    (sigmoid, thresholded at inference)."""
    if self.out_channels is None:
      return self.num_classes
    if self.out_channels not in (1, self.num_classes):
      raise ValueError(f"{type(self).__name__}: out_channels={self.out_channels} must be 1 (binary, "
                       f"with num_classes=2) or num_classes={self.num_classes}")
    return self.out_channels

  # ------------------------------------------------------------------ the contract

  def forward_train(self, inputs, labels, train_cfg=None, prev_output=None) -> dict:
    """mmseg ``forward_train``: training-mode forward, then ``losses``."""
    del train_cfg, prev_output
    return self.losses(self(inputs, train=True), labels)

  def forward_test(self, inputs, test_cfg=None, prev_output=None, train: bool = False):
    """mmseg ``forward_test``: the logits inference resizes to the image."""
    del test_cfg, prev_output
    return self(inputs, train=train)

  def losses(self, seg_logit, labels) -> dict:
    """mmseg ``BaseDecodeHead.losses``: logits resized to the labels (in float32 at least, mmseg's
    ``force_fp32``), optional sampler weights, each ``loss_decode`` term, ``acc_seg``."""
    return losses.decode_losses(losses.at_least_float32(seg_logit), labels, self.loss_decode,
                                ignore_index=self.ignore_index, sampler=self.sampler,
                                align_corners=self.align_corners)

  @classmethod
  def prediction_config(cls, config: dict) -> dict:
    """The config holding this head's prediction settings (``num_classes``, ``out_channels``,
    ``threshold``, ``align_corners``) for segmentors and inference: its own, unless the head
    delegates its prediction to another head (K-Net)."""
    return config

  # ------------------------------------------------------------------ building blocks

  def transform_inputs(self, inputs: Sequence) -> Any:
    """``_transform_inputs``: pick ``in_index``; 'resize_concat' / 'multiple_select'."""
    if self.input_transform == "resize_concat":
      feats = [inputs[i] for i in self.in_index]
      size = feats[0].shape[1:3]
      feats = [layers.resize(f, size, self.align_corners) for f in feats]
      x = jnp.concatenate(feats, axis=-1)
      layers.check_in_channels(x, sum(self.in_channels), type(self).__name__)
      return x
    if self.input_transform == "multiple_select":
      feats = [inputs[i] for i in self.in_index]
      for f, c in zip(feats, self.in_channels):
        layers.check_in_channels(f, c, type(self).__name__)
      return feats
    if self.input_transform is not None:
      raise ValueError(f"input_transform={self.input_transform!r}; expected None, "
                       "'resize_concat' or 'multiple_select'")
    x = inputs[self.in_index]
    layers.check_in_channels(x, self.in_channels, type(self).__name__)
    return x

  def conv(self, features, kernel_size=1, padding=0, dilation=1):
    """A ConvModule constructor ``(name=...) -> module`` with this head's norm and activation.

    It returns a constructor rather than a module so the module's parent is wherever it is
    called (e.g. inside a ModuleList), not this head.
    """
    return functools.partial(layers.conv_module, features, kernel_size, padding=padding,
                             dilation=dilation, norm_cfg=self.norm_cfg, act_cfg=self.act)

  def stochastic(self, train: bool) -> bool:
    """Whether dropout-like layers are active (``layers.stochastic``)."""
    return layers.stochastic(self, train)

  def classifier(self) -> layers.PointwiseConv:
    """The 1x1 ``conv_seg``; mmseg initialises it N(0, 0.01). In inference the BatchNorm and
    ReLU before it write over their input (``in_place``)."""
    return layers.PointwiseConv(self.num_outputs, (1, 1), True, nn.initializers.normal(0.01),
                                in_place=True, name="conv_seg")

  def cls_seg(self, x, train: bool):
    """Dropout2d (whole channels) then the ``classifier``."""
    if self.dropout_ratio > 0:
      x = nn.Dropout(self.dropout_ratio, broadcast_dims=(1, 2),
                     deterministic=not self.stochastic(train), name="dropout")(x)
    return self.classifier()(x)


class BaseCascadeDecodeHead(BaseDecodeHead):
  """mmseg ``BaseCascadeDecodeHead``: a later stage of a ``CascadeEncoderDecoder``, whose forward
  is ``__call__(inputs, prev_output, train)`` with the previous stage's ``forward_test`` output."""

  def forward_train(self, inputs, labels, train_cfg=None, prev_output=None) -> dict:
    del train_cfg
    return self.losses(self(inputs, prev_output, train=True), labels)

  def forward_test(self, inputs, test_cfg=None, prev_output=None, train: bool = False):
    del test_cfg
    return self(inputs, prev_output, train=train)
