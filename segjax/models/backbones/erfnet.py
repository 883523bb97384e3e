"""ERFNet as MMSegmentation defines it (mmseg ``backbones/erfnet.py``): downsampler blocks and
factorised (3x1, 1x3) non-bottleneck-1d blocks in the encoder, transposed-conv upsamplers in the
decoder.

Parameter names follow mmseg's state_dict: ``encoder/<i>/conv``, ``encoder/<i>/bn``,
``encoder/<i>/convs_layers/<j>`` (j = 0, 2, 5, 7 convs; 3, 8 BatchNorms), ``decoder/<i>/conv``
(ConvTranspose2d). mmseg builds the blocks without passing ERFNet's ``norm_cfg``/``act_cfg``, so
every block uses its own default, BatchNorm with eps 1e-3 and ReLU; so does segjax.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax import layers
from segjax.convert import CheckpointRules

# The blocks' own defaults (mmseg never passes ERFNet's norm_cfg / act_cfg to them).
BLOCK_NORM = {"type": "BN", "eps": 1e-3}


class DownsamplerBlock(nn.Module):
  """[3x3 stride-2 ``conv`` (out - in channels), 2x2 max pool resized to it] -> ``bn`` -> ReLU."""
  out_channels: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    in_channels = x.shape[-1]
    if self.out_channels <= in_channels:
      raise ValueError(f"DownsamplerBlock: out_channels={self.out_channels} must exceed its input's "
                       f"{in_channels} channels (the conv adds out - in channels to the pooled input)")
    conv = layers.conv2d(self.out_channels - in_channels, 3, 2, 1, name="conv")(x)
    pool = nn.max_pool(x, (2, 2), strides=(2, 2))
    pool = layers.resize(pool, conv.shape[1:3], False)
    out = jnp.concatenate([conv, pool], axis=-1)
    return nn.relu(layers.norm_layer(BLOCK_NORM, name="bn")(out, train))


class NonBottleneck1d(nn.Module):
  """Two factorised pairs (3x1 conv, ReLU, 1x3 conv, BN), the second pair dilated; ReLU after the
  first pair, Dropout(drop_rate) after the second; ReLU of the sum with the input."""
  drop_rate: float = 0.0
  dilation: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    channels = x.shape[-1]
    out = x
    index = 0
    for pair in range(2):
      d = 1 if pair == 0 else self.dilation
      out = layers.conv2d(channels, (3, 1), 1, (d, 0), (d, 1), name=str(index))(out)
      out = nn.relu(out)
      out = layers.conv2d(channels, (1, 3), 1, (0, d), (1, d), name=str(index + 2))(out)
      out = layers.norm_layer(BLOCK_NORM, name=str(index + 3))(out, train)
      if pair == 0:
        out = nn.relu(out)
      elif self.drop_rate > 0:
        out = nn.Dropout(self.drop_rate, deterministic=not layers.stochastic(self, train))(out)
      index += 5
    return nn.relu(out + x)


class NonBottleneck1dBlock(nn.Module):
  """Wraps NonBottleneck1d so its layers sit under ``convs_layers`` as in mmseg's state_dict."""
  drop_rate: float = 0.0
  dilation: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    return NonBottleneck1d(self.drop_rate, self.dilation, name="convs_layers")(x, train)


class ConvTranspose2d(nn.Module):
  """``nn.ConvTranspose2d(kernel_size, stride, padding, output_padding)`` with bias.

  The kernel is stored as the converter lays out PyTorch's (in, out, kh, kw) weight:
  (kh, kw, out, in) (``layers.conv_transpose``).
  """
  features: int
  kernel_size: int = 3
  stride: int = 2
  padding: int = 1
  output_padding: int = 1

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param("kernel", layers.kaiming_fan_out, (k, k, self.features, x.shape[-1]), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    out = layers.conv_transpose(x, kernel, self.stride, self.padding, self.output_padding)
    return out + bias.astype(x.dtype)


class UpsamplerBlock(nn.Module):
  """``conv`` (ConvTranspose2d 3x3, stride 2, padding 1, output_padding 1: twice the size) ->
  ``bn`` -> ReLU."""
  out_channels: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    out = ConvTranspose2d(self.out_channels, name="conv")(x)
    return nn.relu(layers.norm_layer(BLOCK_NORM, name="bn")(out, train))


CHECKPOINT_RULES = {"mmseg": CheckpointRules()}


class ERFNet(nn.Module):
  """mmseg ``ERFNet``: returns ``[decoder output]`` at the input's resolution / 2."""
  TINY: ClassVar[dict] = dict(enc_downsample_channels=(4, 8, 16), enc_stage_non_bottlenecks=(1, 2),
                              enc_non_bottleneck_dilations=(2, 4), enc_non_bottleneck_channels=(8, 16),
                              dec_upsample_channels=(8, 4), dec_stages_non_bottleneck=(1, 1),
                              dec_non_bottleneck_channels=(8, 4))
  CHECKPOINT_RULES: ClassVar[dict[str, CheckpointRules]] = CHECKPOINT_RULES
  in_channels: int = 3
  enc_downsample_channels: Sequence[int] = (16, 64, 128)
  enc_stage_non_bottlenecks: Sequence[int] = (5, 8)
  enc_non_bottleneck_dilations: Sequence[int] = (2, 4, 8, 16)
  enc_non_bottleneck_channels: Sequence[int] = (64, 128)
  dec_upsample_channels: Sequence[int] = (64, 16)
  dec_stages_non_bottleneck: Sequence[int] = (2, 2)
  dec_non_bottleneck_channels: Sequence[int] = (64, 16)
  dropout_ratio: float = 0.1
  conv_cfg: Any = None
  norm_cfg: dict = None  # unused by mmseg's blocks (see the module docstring)
  act_cfg: dict = None  # unused likewise
  init_cfg: Any = None

  def check_config(self):
    n = len(self.enc_downsample_channels)
    checks = (
        (len(self.dec_upsample_channels) == n - 1, "dec_upsample_channels", n - 1),
        (len(self.enc_stage_non_bottlenecks) == n - 1, "enc_stage_non_bottlenecks", n - 1),
        (len(self.enc_non_bottleneck_channels) == n - 1, "enc_non_bottleneck_channels", n - 1),
        (len(self.dec_stages_non_bottleneck) == len(self.dec_upsample_channels),
         "dec_stages_non_bottleneck", len(self.dec_upsample_channels)),
        (len(self.dec_non_bottleneck_channels) == len(self.dec_upsample_channels),
         "dec_non_bottleneck_channels", len(self.dec_upsample_channels)))
    for ok, arg, expected in checks:
      if not ok:
        raise ValueError(f"ERFNet: {arg}={tuple(getattr(self, arg))} needs {expected} entries "
                         f"(enc_downsample_channels={tuple(self.enc_downsample_channels)})")
    if self.enc_stage_non_bottlenecks[-1] % len(self.enc_non_bottleneck_dilations):
      raise ValueError(f"ERFNet: enc_stage_non_bottlenecks[-1]={self.enc_stage_non_bottlenecks[-1]} "
                       f"must be a multiple of len(enc_non_bottleneck_dilations)="
                       f"{len(self.enc_non_bottleneck_dilations)}")
    if self.conv_cfg is not None:
      raise ValueError(f"ERFNet: conv_cfg={self.conv_cfg} is not supported (only None, Conv2d)")

  @nn.compact
  def __call__(self, x, train: bool = False):
    self.check_config()
    layers.check_in_channels(x, self.in_channels, "ERFNet backbone")
    down = tuple(self.enc_downsample_channels)
    encoder = [functools.partial(DownsamplerBlock, down[0])]
    for i in range(len(down) - 1):
      encoder.append(functools.partial(DownsamplerBlock, down[i + 1]))
      if i == len(down) - 2:
        dilations = tuple(self.enc_non_bottleneck_dilations)
        repeats = self.enc_stage_non_bottlenecks[-1] // len(dilations)
        encoder += [functools.partial(NonBottleneck1dBlock, self.dropout_ratio, d)
                    for _ in range(repeats) for d in dilations]
      else:
        encoder += [functools.partial(NonBottleneck1dBlock, self.dropout_ratio)] * self.enc_stage_non_bottlenecks[i]
    decoder = []
    for i, channels in enumerate(self.dec_non_bottleneck_channels):
      decoder.append(functools.partial(UpsamplerBlock, channels))
      decoder += [NonBottleneck1dBlock] * self.dec_stages_non_bottleneck[i]
    x = layers.Indexed(tuple(encoder), name="encoder")(x, train)
    return [layers.Indexed(tuple(decoder), name="decoder")(x, train)]
