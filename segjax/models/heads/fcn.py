"""FCNHead and DepthwiseSeparableFCNHead (mmseg ``fcn_head.py``, ``sep_fcn_head.py``)."""
from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from segjax import layers
from segjax.models.heads.decode_head import BaseDecodeHead


class FCNHead(BaseDecodeHead):
  """``num_convs`` convs (``convs.0`` ...), optional ``conv_cat`` over [input, convs(input)]."""
  TINY: ClassVar[dict] = dict(in_channels=64, in_index=3, channels=8, num_convs=2, concat_input=True,
                              dilation=2, num_classes=3, norm_cfg=dict(type="BN", requires_grad=True))
  num_convs: int = 2
  kernel_size: int = 3
  concat_input: bool = True
  dilation: int = 1

  def conv_builder(self, dilation):
    """Constructor of one of ``convs`` (dilated) or of ``conv_cat`` (dilation 1)."""
    return self.conv(self.channels, self.kernel_size, (self.kernel_size // 2) * dilation, dilation)

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    x = self.transform_inputs(inputs)
    out = x
    if self.num_convs == 0:
      if x.shape[-1] != self.channels:
        raise ValueError(f"FCNHead with num_convs=0 needs in_channels == channels, got "
                         f"{x.shape[-1]} and {self.channels}")
    else:
      convs = (self.conv_builder(self.dilation),) * self.num_convs
      out = layers.Indexed(convs, name="convs")(x, train)
    if self.concat_input:
      out = self.conv_builder(1)(name="conv_cat")(
          jnp.concatenate([x, out], axis=-1), train)
    return self.cls_seg(out, train)


class DepthwiseSeparableFCNHead(FCNHead):
  """FCNHead with DepthwiseSeparableConvModules; mmseg's default ``dw_act_cfg=None`` leaves the
  depthwise conv without activation."""
  TINY: ClassVar[dict] = dict(FCNHead.TINY, dilation=1)
  dw_act_cfg: Any = None

  def conv_builder(self, dilation):
    del dilation  # mmseg's separable FCN convs are not dilated
    return functools.partial(layers.DepthwiseSeparableConvModule, self.channels, self.kernel_size,
                             padding=self.kernel_size // 2, norm_cfg=self.norm_cfg,
                             act_cfg=layers.RELU, dw_act_cfg=self.dw_act_cfg)
