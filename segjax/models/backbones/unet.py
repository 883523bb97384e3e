"""UNet (mmseg ``backbones/unet.py``, ``utils/up_conv_block.py``): an encoder of BasicConvBlocks
with max-pool or strided downsampling and a decoder of UpConvBlocks; returns the bottom feature
and every decoder output, lowest resolution first.

Parameter names follow mmseg's state_dict: ``encoder/1/1/convs/0/conv`` (``encoder/1/0`` is the
MaxPool), ``decoder/0/conv_block/convs/0/bn``, ``decoder/0/upsample/interp_upsample/1/conv``
(InterpConv) or ``decoder/0/upsample/deconv_upsamping/0`` (DeconvModule, mmseg's spelling).
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax import layers

# mmseg's UNet defaults to norm_cfg=dict(type='BN'); an explicit None means no norm layers.
DEFAULT = "default"


class BasicConvBlock(nn.Module):
  """``convs``: ``num_convs`` 3x3 ConvModules; the first may stride and is never dilated."""
  features: int
  num_convs: int = 2
  stride: int = 1
  dilation: int = 1
  norm_cfg: dict | None = None
  act_cfg: dict | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    def conv(i):
      stride, dilation = (self.stride, 1) if i == 0 else (1, self.dilation)
      return lambda name: layers.conv_module(self.features, 3, stride, dilation, dilation,
                                             norm_cfg=self.norm_cfg, act_cfg=self.act_cfg, name=name)
    return layers.Indexed(tuple(conv(i) for i in range(self.num_convs)), name="convs")(x, train)


def upsample(x, scale_factor=None, size=None, mode="nearest", align_corners=None):
  """mmseg's ``Upsample``: to ``size``, or to int(size * scale_factor), bilinear or nearest."""
  if size is None:
    if scale_factor is None:
      raise ValueError("Upsample needs size or scale_factor")
    size = (int(x.shape[1] * scale_factor), int(x.shape[2] * scale_factor))
  if mode == "bilinear":
    return layers.resize(x, size, bool(align_corners))
  if mode == "nearest":
    return layers.resize_nearest(x, size)
  raise ValueError(f"Upsample mode={mode!r}; expected 'bilinear' or 'nearest'")


class InterpConv(nn.Module):
  """mmseg ``InterpConv``: ``interp_upsample`` = [Upsample, ConvModule] (``conv_first``: the
  other way round); the ConvModule is child ``1`` (or ``0``)."""
  features: int
  norm_cfg: dict | None
  act_cfg: dict | None
  conv_first: bool = False
  kernel_size: int = 1
  stride: int = 1
  padding: int = 0
  upsample_cfg: Mapping = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    up_cfg = dict(self.upsample_cfg or dict(scale_factor=2, mode="bilinear", align_corners=False))
    up = lambda name: (lambda y, train: upsample(y, **up_cfg))
    conv = lambda name: layers.conv_module(self.features, self.kernel_size, self.stride, self.padding,
                                           norm_cfg=self.norm_cfg, act_cfg=self.act_cfg, name=name)
    steps = (conv, up) if self.conv_first else (up, conv)
    return layers.Indexed(steps, name="interp_upsample")(x, train)


class ConvTranspose(nn.Module):
  """``nn.ConvTranspose2d`` (no output padding, no groups; ``layers.conv_transpose``). ``kernel``
  holds PyTorch's (in, out, kh, kw) weight as the converter lays out every kernel: (kh, kw, out, in)."""
  features: int
  kernel_size: int
  stride: int
  padding: int

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    # PyTorch's default init draws from the weight's dim 1 (out channels) as fan-in.
    kernel = self.param("kernel", nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform",
                                                                   in_axis=2, out_axis=3),
                        (k, k, self.features, x.shape[-1]), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return layers.conv_transpose(x, kernel, self.stride, self.padding) + bias.astype(x.dtype)


class DeconvModule(nn.Module):
  """mmseg ``DeconvModule``: ``deconv_upsamping`` = [ConvTranspose2d(kernel_size,
  stride=scale_factor, padding=(kernel_size - scale_factor) / 2), norm, activation]."""
  features: int
  norm_cfg: dict | None
  act_cfg: dict | None
  kernel_size: int = 4
  scale_factor: int = 2

  @nn.compact
  def __call__(self, x, train: bool = False):
    k, s = self.kernel_size, self.scale_factor
    if k < s or (k - s) % 2:
      raise ValueError(f"DeconvModule: kernel_size={k} must be >= scale_factor={s} and differ from it "
                       "by an even number")
    deconv = lambda name: (lambda y, train: ConvTranspose(self.features, k, s, (k - s) // 2, name=name)(y))
    norm = lambda name: layers.norm_layer(self.norm_cfg, name=name)
    act = lambda name: (lambda y, train: layers.activation(self.act_cfg)(y))
    return layers.Indexed((deconv, norm, act), name="deconv_upsamping")(x, train)


UPSAMPLE_LAYERS = {"InterpConv": InterpConv, "DeconvModule": DeconvModule}


class UpConvBlock(nn.Module):
  """mmseg ``UpConvBlock``: ``upsample`` the deeper feature to ``skip``'s width (an upsample
  layer, or a 1x1 ConvModule when the sizes already agree), concatenate [skip, x], ``conv_block``."""
  skip_channels: int
  features: int
  num_convs: int
  dilation: int
  norm_cfg: dict | None
  act_cfg: dict | None
  upsample_cfg: Mapping | None
  with_cp: bool = False

  @nn.compact
  def __call__(self, skip, x, train: bool = False):
    if self.upsample_cfg is None:
      x = layers.conv_module(self.skip_channels, 1, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg,
                             name="upsample")(x, train)
    else:
      cfg = dict(self.upsample_cfg)
      x = UPSAMPLE_LAYERS[cfg.pop("type")](self.skip_channels, self.norm_cfg, self.act_cfg, **cfg,
                                           name="upsample")(x, train)
    block_cls = nn.remat(BasicConvBlock, static_argnums=(2,)) if self.with_cp else BasicConvBlock
    return block_cls(self.features, self.num_convs, 1, self.dilation, self.norm_cfg, self.act_cfg,
                     name="conv_block")(jnp.concatenate([skip, x], -1), train)


class EncoderStage(nn.Module):
  """``encoder.i`` = nn.Sequential([MaxPool2d(2),] BasicConvBlock)."""
  features: int
  max_pool: bool
  num_convs: int
  stride: int
  dilation: int
  norm_cfg: dict | None
  act_cfg: dict | None
  with_cp: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.max_pool:
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    block_cls = nn.remat(BasicConvBlock, static_argnums=(2,)) if self.with_cp else BasicConvBlock
    return block_cls(self.features, self.num_convs, self.stride, self.dilation, self.norm_cfg,
                     self.act_cfg, name=str(int(self.max_pool)))(x, train)


class UNet(nn.Module):
  """mmseg ``UNet``: returns ``num_stages`` maps, the encoder's bottom first, then each decoder
  stage's output up to the input resolution (``base_channels`` channels)."""
  TINY: ClassVar[dict] = dict(base_channels=4, num_stages=4, strides=(1, 1, 2, 1),
                              enc_num_convs=(1, 2, 1, 1), dec_num_convs=(1, 2, 1),
                              downsamples=(True, False, True), enc_dilations=(1, 1, 2, 1),
                              dec_dilations=(1, 2, 1), upsample_cfg=dict(type="DeconvModule"),
                              norm_cfg=dict(type="BN", requires_grad=True))
  in_channels: int = 3
  base_channels: int = 64
  num_stages: int = 5
  strides: Sequence[int] = (1, 1, 1, 1, 1)
  enc_num_convs: Sequence[int] = (2, 2, 2, 2, 2)
  dec_num_convs: Sequence[int] = (2, 2, 2, 2)
  downsamples: Sequence[bool] = (True, True, True, True)
  enc_dilations: Sequence[int] = (1, 1, 1, 1, 1)
  dec_dilations: Sequence[int] = (1, 1, 1, 1)
  with_cp: bool = False
  conv_cfg: Any = None
  norm_cfg: dict | None | str = DEFAULT
  act_cfg: dict | None = None
  upsample_cfg: Mapping | None = None
  norm_eval: bool = False
  dcn: Any = None
  plugins: Any = None
  pretrained: Any = None
  init_cfg: Any = None

  def check_config(self, x) -> None:
    n = self.num_stages
    for name, expected in (("strides", n), ("enc_num_convs", n), ("enc_dilations", n),
                           ("dec_num_convs", n - 1), ("downsamples", n - 1), ("dec_dilations", n - 1)):
      if len(getattr(self, name)) != expected:
        raise ValueError(f"UNet: {name}={tuple(getattr(self, name))} must have {expected} entries "
                         f"(num_stages={n})")
    for name in ("conv_cfg", "dcn", "plugins"):
      if getattr(self, name) is not None:
        raise ValueError(f"UNet: {name}={getattr(self, name)} is not supported (mmseg: not implemented)")
    kind = dict(self.upsample_cfg or {"type": "InterpConv"}).get("type")
    if kind not in UPSAMPLE_LAYERS:
      raise ValueError(f"UNet: upsample_cfg.type={kind!r}; expected one of {sorted(UPSAMPLE_LAYERS)}")
    rate = 1
    for i in range(1, n):
      if self.strides[i] == 2 or self.downsamples[i - 1]:
        rate *= 2
    h, w = x.shape[1:3]
    if h % rate or w % rate:
      raise ValueError(f"UNet: the input size {(h, w)} must be divisible by the whole downsample rate "
                       f"{rate} (num_stages={n}, strides={tuple(self.strides)}, "
                       f"downsamples={tuple(self.downsamples)})")

  @nn.compact
  def __call__(self, x, train: bool = False):
    self.check_config(x)
    layers.check_in_channels(x, self.in_channels, "UNet backbone")
    norm_cfg = ({"type": "BN"} if self.norm_cfg == DEFAULT else
                dict(self.norm_cfg) if self.norm_cfg is not None else None)
    act_cfg = dict(self.act_cfg or layers.RELU)
    upsample_cfg = dict(self.upsample_cfg or {"type": "InterpConv"})
    bn_train = train and not self.norm_eval
    c = self.base_channels

    encoder_cfgs = tuple(
        dict(features=c * 2**i, max_pool=i > 0 and self.strides[i] == 1 and self.downsamples[i - 1],
             num_convs=self.enc_num_convs[i], stride=self.strides[i], dilation=self.enc_dilations[i])
        for i in range(self.num_stages))
    enc_outs = Encoder(encoder_cfgs, norm_cfg, act_cfg, self.with_cp, name="encoder")(x, bn_train)
    # decoder.i joins encoder stage i and the stage below; it upsamples only when stage i + 1
    # downsampled (a strided conv or a max-pool).
    decoder_cfgs = tuple(
        dict(skip_channels=c * 2**i, features=c * 2**i, num_convs=self.dec_num_convs[i],
             dilation=self.dec_dilations[i],
             upsample_cfg=upsample_cfg if self.strides[i + 1] != 1 or self.downsamples[i] else None)
        for i in range(self.num_stages - 1))
    return Decoder(decoder_cfgs, norm_cfg, act_cfg, self.with_cp, name="decoder")(enc_outs, bn_train)


class Encoder(nn.Module):
  """``encoder``: the stages ``0``, ``1``, ... in turn; every stage's output."""
  stage_cfgs: tuple
  norm_cfg: dict | None
  act_cfg: dict | None
  with_cp: bool

  @nn.compact
  def __call__(self, x, train: bool = False):
    outs = []
    for i, cfg in enumerate(self.stage_cfgs):
      x = EncoderStage(**cfg, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg, with_cp=self.with_cp,
                       name=str(i))(x, train)
      outs.append(x)
    return outs


class Decoder(nn.Module):
  """``decoder``: from the bottom up, ``decoder.i`` joins encoder stage i's output and the
  feature below; returns [bottom, decoder.(n-2), ..., decoder.0] as mmseg's ``dec_outs``."""
  block_cfgs: tuple
  norm_cfg: dict | None
  act_cfg: dict | None
  with_cp: bool

  @nn.compact
  def __call__(self, enc_outs, train: bool = False):
    x = enc_outs[-1]
    outs = [x]
    for i in reversed(range(len(self.block_cfgs))):
      x = UpConvBlock(**self.block_cfgs[i], norm_cfg=self.norm_cfg, act_cfg=self.act_cfg,
                      with_cp=self.with_cp, name=str(i))(enc_outs[i], x, train)
      outs.append(x)
    return outs
