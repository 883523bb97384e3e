"""LRASPPHead (Lite R-ASPP of MobileNetV3), mmseg ``lraspp_head.py``."""
from __future__ import annotations

import functools
from typing import ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax import layers
from segjax.models.heads.decode_head import BaseDecodeHead



def avg_pool_valid(x, kernel: int, stride: Sequence[int]):
  """``nn.AvgPool2d(kernel, stride)`` (no padding, floor mode) on NHWC ``x``."""
  if x.shape[1] < kernel or x.shape[2] < kernel:
    raise ValueError(f"LRASPPHead: its AvgPool2d({kernel}, stride={tuple(stride)}) needs a last "
                     f"feature map of at least {kernel}x{kernel}, got {x.shape[1]}x{x.shape[2]} "
                     f"(an input of at least {8 * kernel - 7}x{8 * kernel - 7} at output stride 8)")
  return nn.avg_pool(x, (kernel, kernel), strides=tuple(stride), padding="VALID")


class Children(nn.Module):
  """A container of named children (``nn.Sequential.add_module(name, ...)``): ``children(name,
  build, *args)`` applies ``build(name=name)`` to ``args``."""

  @nn.compact
  def __call__(self, name: str, build, *args, **kwargs):
    return build(name=name)(*args, **kwargs)


class LRASPPHead(BaseDecodeHead):
  """``aspp_conv`` times the sigmoid ``image_pool`` gate, ``conv_up_input``, then for each
  earlier level (last to first) upsample, concatenate ``convs.conv<i>`` of it, ``conv_ups.conv_up<i>``."""
  # The registry's pyramid is far smaller than the 49x49 pool: the tiny instance pools 3x3.
  TINY: ClassVar[dict] = dict(in_channels=(8, 16, 32), in_index=(0, 1, 2), channels=8,
                              branch_channels=(4, 8), input_transform="multiple_select",
                              num_classes=3, norm_cfg=dict(type="BN", requires_grad=True),
                              pool_kernel=3, pool_stride=(2, 3))
  branch_channels: Sequence[int] = (32, 64)
  # segjax extension: mmseg hard-codes its image pool as nn.AvgPool2d(49, stride=(16, 20)).
  pool_kernel: int = 49
  pool_stride: Sequence[int] = (16, 20)

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    if self.input_transform != "multiple_select":
      raise ValueError("LRASPPHead: input_transform must be 'multiple_select', got "
                       f"{self.input_transform!r}")
    if len(self.branch_channels) != len(self.in_channels) - 1:
      raise ValueError(f"LRASPPHead: branch_channels {tuple(self.branch_channels)} needs one entry "
                       f"per input but the last (in_channels {tuple(self.in_channels)})")
    inputs = self.transform_inputs(inputs)
    x = inputs[-1]
    kernel = self.pool_kernel
    if self.is_initializing():
      # segjax initialises on a 64x64 dummy image (models.init_variables); the gate's parameters
      # do not depend on how much it pools.
      kernel = min(kernel, *x.shape[1:3])
    gate = avg_pool_valid(x, kernel, self.pool_stride)
    gate = layers.Indexed((lambda name: (lambda y, train: y),
                           lambda name: layers.conv_module(self.channels, 1, act_cfg={"type": "Sigmoid"},
                                                           bias=False, name=name)),
                          name="image_pool")(gate, train)
    x = layers.conv_module(self.channels, 1, norm_cfg=self.norm_cfg, act_cfg=self.act, bias=False,
                           name="aspp_conv")(x, train)
    x = x * layers.resize(gate, x.shape[1:3], self.align_corners)
    x = layers.conv2d(self.channels, 1, name="conv_up_input")(x)
    convs, conv_ups = Children(name="convs"), Children(name="conv_ups")
    for i in range(len(self.branch_channels) - 1, -1, -1):
      x = layers.resize(x, inputs[i].shape[1:3], self.align_corners)
      branch = convs(f"conv{i}", functools.partial(layers.conv2d, self.branch_channels[i], 1,
                                                   use_bias=False), inputs[i])
      x = jnp.concatenate([x, branch], axis=-1)
      x = conv_ups(f"conv_up{i}", functools.partial(
          layers.conv_module, self.channels, 1, norm_cfg=self.norm_cfg, act_cfg=self.act,
          bias=False), x, train)
    return self.cls_seg(x, train)
