"""K-Net (mmseg ``knet_head.py``): ``IterativeDecodeHead`` runs a kernel generate head (any
registered head: UPerHead, PSPHead, ASPPHead, FCNHead in mmseg's configs), then refines its
``conv_seg`` kernels and logits with ``num_stages`` ``KernelUpdateHead`` s (each: group feature
assembling under the previous masks, ``KernelUpdator``, mmcv MultiheadAttention over the class
kernels, FFN, mask FCs, and a dynamic convolution of the features with the new kernels).

Training returns every stage's logits and a loss per stage (``loss_ce.s0`` ... ``acc_seg.s3``,
each with the kernel generate head's ``losses``); inference uses the last stage's logits.
"""
from __future__ import annotations

import functools
from typing import ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax import layers
from segjax.models.backbones.vit import MultiheadAttention
from segjax.models.heads.decode_head import BaseDecodeHead

# mmseg's KernelUpdateHead.init_weights: xavier_uniform for every weight of two or more dims.
xavier = nn.initializers.xavier_uniform()


def linear(features: int, name: str, use_bias: bool = True) -> nn.Dense:
  return nn.Dense(features, use_bias=use_bias, kernel_init=xavier, name=name)


def config_type(cfg: dict, available: dict, where: str) -> tuple[type, dict]:
  """The class ``cfg['type']`` names among ``available`` (``models.lookup``) and the rest of ``cfg``."""
  from segjax.models import lookup  # the registry imports this module
  return lookup(available, cfg, where), {k: v for k, v in cfg.items() if k != "type"}


class KernelUpdator(nn.Module):
  """Dynamic kernel updator: gates (``input_gate``, ``update_gate``) mixing the assembled group
  features (``update_feature``) with the previous kernels (``input_feature``), as K-Net's Eq. (4)
  and (5). Works on (proposals, K*K, feat_channels) after reshaping both inputs by
  ``in_channels`` / ``feat_channels``, as mmseg does (so ``in_channels`` may be a divisor of the
  head's channels: 256 in mmseg's configs under a 512-channel head)."""
  in_channels: int = 256
  feat_channels: int = 64
  out_channels: int | None = None
  gate_sigmoid: bool = True
  gate_norm_act: bool = False
  activate_out: bool = False
  norm_cfg: dict = None  # LN
  act_cfg: dict = None  # ReLU

  @nn.compact
  def __call__(self, update_feature, input_feature):
    feat = self.feat_channels
    out_channels = self.out_channels or self.in_channels
    act = layers.activation(self.act_cfg or layers.RELU)
    norm = functools.partial(layers.layer_norm, self.norm_cfg)
    if update_feature.size % self.in_channels:
      raise ValueError(f"KernelUpdator: in_channels={self.in_channels} must divide the assembled "
                       f"features' channels, got shape {update_feature.shape}")
    update_feature = update_feature.reshape(-1, self.in_channels)
    num_proposals = update_feature.shape[0]
    parameters = linear(2 * feat, "dynamic_layer")(update_feature)
    param_in, param_out = parameters[:, :feat], parameters[:, -feat:]
    input_feats = linear(2 * feat, "input_layer")(input_feature.reshape(num_proposals, -1, feat))
    input_in, input_out = input_feats[..., :feat], input_feats[..., -feat:]

    gate_feats = input_in * param_in[:, None, :]
    if self.gate_norm_act:
      gate_feats = act(norm("gate_norm")(gate_feats))
    input_gate = norm("input_norm_in")(linear(feat, "input_gate")(gate_feats))
    update_gate = norm("norm_in")(linear(feat, "update_gate")(gate_feats))
    if self.gate_sigmoid:
      input_gate, update_gate = nn.sigmoid(input_gate), nn.sigmoid(update_gate)
    param_out = norm("norm_out")(param_out)
    input_out = norm("input_norm_out")(input_out)
    if self.activate_out:
      param_out, input_out = act(param_out), act(input_out)

    features = update_gate * param_out[:, None, :] + input_gate * input_out
    return act(norm("fc_norm")(linear(out_channels, "fc_layer")(features)))


KERNEL_UPDATORS = {"KernelUpdator": KernelUpdator}


def dynamic_conv(x, kernels, padding: int):
  """Per image ``F.conv2d(x[i], kernels[i], padding)``: x (B, H, W, C), kernels (B, N, C, K, K)
  (PyTorch's OIHW per image) -> (B, H', W', N)."""
  def one(image, kernel):
    return jax.lax.conv_general_dilated(image[None], kernel.transpose(2, 3, 1, 0), (1, 1),
                                        [(padding, padding)] * 2,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]
  return jax.vmap(one)(x, kernels)


class KernelUpdateHead(nn.Module):
  """One K-Net stage: ``(x, proposal_feat, mask_preds) -> (new mask_preds, new kernels)``.

  Layouts (NHWC): x (B, H, W, C); ``proposal_feat`` (B, N, K*K, C), mmseg's (B, N, C, K, K)
  kernels after its reshape and permute; ``mask_preds`` (B, h, w, N)."""
  num_classes: int = 150
  num_ffn_fcs: int = 2
  num_heads: int = 8
  num_mask_fcs: int = 3
  feedforward_channels: int = 2048
  in_channels: int = 256
  out_channels: int = 256
  dropout: float = 0.0
  act_cfg: dict = None  # ReLU
  ffn_act_cfg: dict = None  # ReLU
  conv_kernel_size: int = 1
  feat_transform_cfg: dict | None = None
  kernel_init: bool = False
  with_ffn: bool = True
  feat_gather_stride: int = 1
  mask_transform_stride: int = 1
  kernel_updator_cfg: dict | None = None  # mmseg's default is mmcv's DynamicConv (type='DynamicConv')

  def feat_transform(self, x):
    cfg = dict(self.feat_transform_cfg)
    kernel_size = cfg.pop("kernel_size", 1)
    conv_cfg = cfg.pop("conv_cfg", None)
    if conv_cfg is not None and dict(conv_cfg).get("type") != "Conv2d":
      raise ValueError(f"feat_transform_cfg.conv_cfg={conv_cfg}: only type='Conv2d' is available")
    unknown = sorted(set(cfg) - {"norm_cfg", "act_cfg"})
    if unknown:
      raise ValueError(f"feat_transform_cfg has key(s) {unknown}; ConvModule here takes kernel_size, "
                       "conv_cfg, norm_cfg, act_cfg")
    stride = self.feat_gather_stride
    return layers.conv_module(self.in_channels, kernel_size, stride, stride // 2,
                              norm_cfg=cfg.get("norm_cfg"), act_cfg=cfg.get("act_cfg", layers.RELU),
                              name="feat_transform")(x, False)

  @nn.compact
  def __call__(self, x, proposal_feat, mask_preds, mask_shape=None, train: bool = False):
    k = self.conv_kernel_size
    n, num_proposals = proposal_feat.shape[:2]
    if x.shape[-1] != self.in_channels or proposal_feat.shape[-1] != self.in_channels:
      raise ValueError(f"KernelUpdateHead: in_channels={self.in_channels}, but the features have "
                       f"{x.shape[-1]} channels and the kernels {proposal_feat.shape[-1]}")
    if self.out_channels != self.in_channels:
      raise ValueError(f"KernelUpdateHead: out_channels={self.out_channels} must equal "
                       f"in_channels={self.in_channels} (the new kernels convolve the features)")
    if self.feat_transform_cfg is not None:
      x = self.feat_transform(x)
    h, w, c = x.shape[1:]
    if mask_preds.shape[1:3] != (h, w):
      mask_preds = layers.resize(mask_preds, (h, w), False)
    soft_masks = nn.softmax(mask_preds, axis=-1)

    # Group feature assembling, Eq. (3).
    x_feat = jnp.einsum("bhwn,bhwc->bnc", soft_masks, x)
    updator_cls, updator_cfg = config_type(self.kernel_updator_cfg or {"type": "DynamicConv"}, KERNEL_UPDATORS, "kernel_updator_cfg")
    obj_feat = updator_cls(**updator_cfg, name="kernel_update_conv")(x_feat, proposal_feat)

    # mmcv's attention runs over the N kernels of each image (mmseg permutes to (N, B, C) for its
    # sequence-first layout; segjax's is batch first).
    obj_feat = obj_feat.reshape(n, num_proposals, -1)
    attention = MultiheadAttention(self.in_channels * k**2, self.num_heads, self.dropout, name="attention")
    obj_feat = layers.layer_norm(None, "attention_norm")(attention(obj_feat, obj_feat, train))
    obj_feat = obj_feat.reshape(n, num_proposals, -1, self.in_channels)
    if self.with_ffn:
      ffn = layers.FFN(self.in_channels, self.feedforward_channels, self.num_ffn_fcs,
                       self.ffn_act_cfg or layers.RELU, self.dropout, name="ffn")
      obj_feat = layers.layer_norm(None, "ffn_norm")(ffn(obj_feat, train=train))

    mask_feat = obj_feat
    mask_fcs = layers.NamedChildren(name="mask_fcs")
    act = layers.activation(self.act_cfg or layers.RELU)
    for i in range(self.num_mask_fcs):
      mask_feat = mask_fcs(3 * i, functools.partial(linear, self.in_channels, use_bias=False), mask_feat)
      mask_feat = mask_fcs(3 * i + 1, functools.partial(layers.layer_norm, None), mask_feat)
      mask_feat = act(mask_feat)  # 3 * i + 2: the activation, no parameters
    fc_mask_init = nn.initializers.normal(0.01) if self.kernel_init else xavier
    mask_feat = nn.Dense(self.out_channels, kernel_init=fc_mask_init, name="fc_mask")(mask_feat)

    if self.mask_transform_stride == 2 and self.feat_gather_stride == 1:
      mask_x = layers.resize_by_scale(x, 0.5)
      h, w = mask_x.shape[1:3]
    else:
      mask_x = x
    # (B, N, K*K, C) -> mmseg's (B, N, C, K*K) -> conv weights (B, N, C, K, K)
    kernels = mask_feat.transpose(0, 1, 3, 2).reshape(n, num_proposals, c, k, k)
    new_mask_preds = dynamic_conv(mask_x, kernels, k // 2)
    if self.mask_transform_stride == 2:
      new_mask_preds = layers.resize_by_scale(new_mask_preds, 2)
    if mask_shape is not None and mask_shape[0] != h:
      new_mask_preds = layers.resize(new_mask_preds, mask_shape, False)
    return new_mask_preds, obj_feat


UPDATE_HEADS = {"KernelUpdateHead": KernelUpdateHead}


@functools.cache
def kernel_generator(cls: type) -> type:
  """``cls`` whose ``cls_seg`` also returns its input features and ``conv_seg``'s kernel: mmseg's
  ``_forward_feature`` / ``cls_seg`` / ``conv_seg.weight`` of the kernel generate head, taken
  from the head's own forward (every segjax head ends with ``cls_seg``)."""

  class KernelGenerator(cls):

    def cls_seg(self, x, train: bool):
      logits = super().cls_seg(x, train)
      return x, logits, self.variables["params"]["conv_seg"]["kernel"]

  KernelGenerator.__name__ = KernelGenerator.__qualname__ = cls.__name__
  return KernelGenerator


class IterativeDecodeHead(BaseDecodeHead):
  """``kernel_generate_head`` (a head config) then ``kernel_update_head.0 ..`` (``num_stages``
  KernelUpdateHead configs). ``num_classes``, ``align_corners``, ``ignore_index`` and the losses
  are the kernel generate head's, as in mmseg (which takes no other BaseDecodeHead argument)."""
  TINY: ClassVar[dict] = dict(
      num_stages=2, num_classes=3,
      kernel_generate_head=dict(type="UPerHead", in_channels=(8, 16, 32, 64), in_index=(0, 1, 2, 3),
                                channels=8, num_classes=3, norm_cfg=dict(type="BN", requires_grad=True)),
      # The updator works on halves of the head's channels, as mmseg's configs (256 of 512).
      kernel_update_head=tuple(
          dict(type="KernelUpdateHead", num_classes=3, num_heads=2, num_mask_fcs=1,
               feedforward_channels=16, in_channels=8, out_channels=8,
               feat_transform_cfg=dict(conv_cfg=dict(type="Conv2d"), act_cfg=None),
               kernel_updator_cfg=dict(type="KernelUpdator", in_channels=4, feat_channels=4,
                                       out_channels=4, norm_cfg=dict(type="LN")))
          for _ in range(2)))
  num_stages: int = 3
  kernel_generate_head: dict = None
  kernel_update_head: Sequence[dict] = ()
  num_classes: int | None = None  # the kernel generate head's; given only to be checked

  def generator(self, **kwargs) -> BaseDecodeHead:
    """The kernel generate head (``kwargs``: ``name`` inside a forward, ``parent=None`` for its
    losses)."""
    from segjax.models import HEADS, module_kwargs  # the registry imports this module
    if not self.kernel_generate_head:
      raise ValueError("IterativeDecodeHead: kernel_generate_head (a head config) is required")
    cls, _ = config_type(self.kernel_generate_head, HEADS, "kernel_generate_head")
    head_kwargs = module_kwargs(cls, self.kernel_generate_head, "kernel_generate_head")
    if self.num_classes is not None and self.num_classes != head_kwargs.get("num_classes"):
      raise ValueError(f"IterativeDecodeHead: num_classes={self.num_classes} differs from "
                       f"kernel_generate_head.num_classes={head_kwargs.get('num_classes')}")
    return kernel_generator(cls)(**head_kwargs, **kwargs)

  @property
  def num_outputs(self) -> int:
    return self.generator(parent=None).num_outputs

  @classmethod
  def prediction_config(cls, config: dict) -> dict:
    return dict(config["kernel_generate_head"])

  @nn.compact
  def __call__(self, inputs, train: bool = False, all_stages: bool | None = None):
    """mmseg's forward: every stage's logits (the kernel generate head's, then each kernel
    update head's) in training, the last stage's otherwise; ``all_stages`` overrides that."""
    if len(self.kernel_update_head) != self.num_stages:
      raise ValueError(f"IterativeDecodeHead: num_stages={self.num_stages} but "
                       f"{len(self.kernel_update_head)} kernel_update_head configs")
    out = self.generator(name="kernel_generate_head")(inputs, train)
    if not (isinstance(out, tuple) and len(out) == 3):
      raise ValueError(f"kernel_generate_head.type={self.kernel_generate_head['type']!r} does not "
                       "end its forward with cls_seg; it cannot generate K-Net's kernels")
    feats, sem_seg, kernel = out
    # conv_seg's (1, 1, C, classes) kernel -> one (1 x 1) kernel per class and image: (B, N, 1, C)
    seg_kernels = jnp.broadcast_to(kernel[0, 0].T.astype(feats.dtype)[None, :, None, :],
                                   (feats.shape[0], kernel.shape[-1], 1, kernel.shape[2]))
    stage_segs = [sem_seg]
    update_heads = layers.NamedChildren(name="kernel_update_head")
    for i, cfg in enumerate(self.kernel_update_head):
      cls, kwargs = config_type(cfg, UPDATE_HEADS, f"kernel_update_head[{i}]")
      sem_seg, seg_kernels = update_heads(i, functools.partial(cls, **kwargs), feats, seg_kernels,
                                          sem_seg, train=train)
      stage_segs.append(sem_seg)
    return stage_segs if (train if all_stages is None else all_stages) else stage_segs[-1]

  def forward_test(self, inputs, test_cfg=None, prev_output=None, train: bool = False):
    del test_cfg, prev_output
    return self(inputs, train, all_stages=False)

  def losses(self, seg_logit, labels) -> dict:
    """mmseg: the kernel generate head's losses of each stage ``i``, keys suffixed ``.s<i>``."""
    generator = self.generator(parent=None)
    out = {}
    for i, logit in enumerate(seg_logit):
      out.update({f"{k}.s{i}": v for k, v in generator.losses(logit, labels).items()})
    return out
