"""``build_segmentor(model_config)``: explicit name -> class dicts, no global registry.

A model config is MMSegmentation's ``model`` dict (``type`` keys and mmseg's argument names), so
an mmseg config's model section builds here unchanged. Unknown keys are errors that name the key.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax import xla_flags
from segjax.config import to_plain
from segjax.models.backbones import beit, convnext
from segjax.models.backbones.beit import BEiT, MAE
from segjax.models.backbones.bisenetv1 import BiSeNetV1
from segjax.models.backbones.bisenetv2 import BiSeNetV2
from segjax.models.backbones.cgnet import CGNet
from segjax.models.backbones.erfnet import ERFNet
from segjax.models.backbones.fast_scnn import FastSCNN
from segjax.models.backbones.hrnet import HRNet
from segjax.models.backbones.icnet import ICNet
from segjax.models.backbones.mit import MixVisionTransformer
from segjax.models.backbones.mobilenet_v2 import MobileNetV2
from segjax.models.backbones.mobilenet_v3 import MobileNetV3
from segjax.models.backbones.poolformer import PoolFormer
from segjax.models.backbones.resnest import ResNeSt
from segjax.models.backbones.resnet import ResNet, ResNetV1c, ResNetV1d, ResNeXt
from segjax.models.backbones.stdc import STDCContextPathNet, STDCNet
from segjax.models.backbones.swin import SwinTransformer
from segjax.models.backbones.twins import PCPVT, SVT
from segjax.models.backbones.unet import UNet
from segjax.models.backbones.vit import VisionTransformer
from segjax.models.heads.ann_head import ANNHead
from segjax.models.heads.apc_head import APCHead
from segjax.models.heads.aspp import ASPPHead, DepthwiseSeparableASPPHead
from segjax.models.heads.cc_head import CCHead
from segjax.models.heads.da_head import DAHead
from segjax.models.heads.dm_head import DMHead
from segjax.models.heads.dnl_head import DNLHead
from segjax.models.heads.dpt_head import DPTHead
from segjax.models.heads.ema_head import EMAHead
from segjax.models.heads.enc_head import EncHead
from segjax.models.heads.fcn import DepthwiseSeparableFCNHead, FCNHead
from segjax.models.heads.fpn_head import FPNHead
from segjax.models.heads.gc_head import GCHead
from segjax.models.heads.isa_head import ISAHead
from segjax.models.heads.knet_head import IterativeDecodeHead
from segjax.models.heads.lraspp_head import LRASPPHead
from segjax.models.heads.nl_head import NLHead
from segjax.models.heads.ocr_head import OCRHead
from segjax.models.heads.point_head import PointHead
from segjax.models.heads.psa_head import PSAHead
from segjax.models.heads.psp import PSPHead
from segjax.models.heads.segformer_head import SegformerHead
from segjax.models.heads.segmenter_mask_head import SegmenterMaskTransformerHead
from segjax.models.heads.setr_mla_head import SETRMLAHead
from segjax.models.heads.setr_up_head import SETRUPHead
from segjax.models.heads.stdc_head import STDCHead
from segjax.models.heads.uper import UPerHead
from segjax.models.necks.featurepyramid import Feature2Pyramid
from segjax.models.necks.fpn import FPN
from segjax.models.necks.ic_neck import ICNeck
from segjax.models.necks.jpu import JPU
from segjax.models.necks.mla_neck import MLANeck
from segjax.models.necks.multilevel_neck import MultiLevelNeck
from segjax.models.segmentors.cascade_encoder_decoder import CascadeEncoderDecoder
from segjax.models.segmentors.encoder_decoder import EncoderDecoder

BACKBONES = {
    # ResNet family
    "ResNet": ResNet,
    "ResNetV1b": ResNet,
    "ResNetV1c": ResNetV1c,
    "ResNetV1d": ResNetV1d,
    "ResNeXt": ResNeXt,
    "ResNeSt": ResNeSt,
    # multi-resolution / encoder-decoder
    "HRNet": HRNet,
    "UNet": UNet,
    # transformers and modern ConvNets
    "VisionTransformer": VisionTransformer,
    "BEiT": BEiT,
    "MAE": MAE,
    "MixVisionTransformer": MixVisionTransformer,
    "SwinTransformer": SwinTransformer,
    "PCPVT": PCPVT,
    "SVT": SVT,
    "mmcls.ConvNeXt": convnext.ConvNeXt,
    "mmcls.PoolFormer": PoolFormer,
    # real-time networks
    "MobileNetV2": MobileNetV2,
    "MobileNetV3": MobileNetV3,
    "FastSCNN": FastSCNN,
    "CGNet": CGNet,
    "ERFNet": ERFNet,
    "BiSeNetV1": BiSeNetV1,
    "BiSeNetV2": BiSeNetV2,
    "STDCNet": STDCNet,
    "STDCContextPathNet": STDCContextPathNet,
    "ICNet": ICNet,
}
# Backbone type -> {decay_type: layer id of a parameter name} for mmseg's
# LearningRateDecayOptimizerConstructor (mmseg matches 'ConvNeXt', 'BEiT', 'MAE' in the class name).
LAYER_DECAY_IDS = {
    "ConvNeXt": {"layer_wise": convnext.layer_id, "stage_wise": convnext.stage_id},
    "mmcls.ConvNeXt": {"layer_wise": convnext.layer_id, "stage_wise": convnext.stage_id},
    # mmseg tests 'layer_wise' in decay_type; its LayerDecayOptimizerConstructor sets 'layer_wise_vit'
    # and its deprecation warning asks for that value with LearningRateDecayOptimizerConstructor.
    "BEiT": {"layer_wise": beit.layer_id, "layer_wise_vit": beit.layer_id},
    "MAE": {"layer_wise": beit.layer_id, "layer_wise_vit": beit.layer_id},
}
NECKS = {
    "FPN": FPN,
    "JPU": JPU,
    "ICNeck": ICNeck,
    "MultiLevelNeck": MultiLevelNeck,
    "MLANeck": MLANeck,
    "Feature2Pyramid": Feature2Pyramid,
}
HEADS = {
    # FCN, PSPNet, DeepLabV3(+), UPerNet, Semantic FPN
    "FCNHead": FCNHead,
    "DepthwiseSeparableFCNHead": DepthwiseSeparableFCNHead,
    "PSPHead": PSPHead,
    "ASPPHead": ASPPHead,
    "DepthwiseSeparableASPPHead": DepthwiseSeparableASPPHead,
    "UPerHead": UPerHead,
    "FPNHead": FPNHead,
    # context heads
    "NLHead": NLHead,
    "GCHead": GCHead,
    "DAHead": DAHead,
    "CCHead": CCHead,
    "EMAHead": EMAHead,
    "ANNHead": ANNHead,
    "APCHead": APCHead,
    "DMHead": DMHead,
    "DNLHead": DNLHead,
    "ISAHead": ISAHead,
    "EncHead": EncHead,
    "PSAHead": PSAHead,
    # cascades and iterative heads
    "OCRHead": OCRHead,
    "PointHead": PointHead,
    "IterativeDecodeHead": IterativeDecodeHead,
    # transformer heads
    "SegformerHead": SegformerHead,
    "SETRUPHead": SETRUPHead,
    "SETRMLAHead": SETRMLAHead,
    "SegmenterMaskTransformerHead": SegmenterMaskTransformerHead,
    "DPTHead": DPTHead,
    # real-time heads
    "LRASPPHead": LRASPPHead,
    "STDCHead": STDCHead,
}
SEGMENTORS = {"EncoderDecoder": EncoderDecoder, "CascadeEncoderDecoder": CascadeEncoderDecoder}
_KINDS = {"backbone": BACKBONES, "neck": NECKS, "decode_head": HEADS, "auxiliary_head": HEADS}


def module_kwargs(cls: type, cfg: Mapping, where: str) -> dict:
  """``cfg`` minus ``type``, checked against ``cls``'s fields so a typo names itself."""
  fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
  kwargs = {k: v for k, v in cfg.items() if k != "type"}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ValueError(f"{where} (type={cfg['type']!r}): unknown key(s) {unknown}; "
                     f"{cls.__name__} accepts {sorted(fields)}")
  return kwargs


def lookup(table: Mapping[str, type], cfg: Mapping, where: str) -> type:
  """The class ``cfg['type']`` names in ``table``; errors name ``where`` and what is available."""
  if "type" not in cfg:
    raise ValueError(f"{where}: config has no 'type' key")
  if cfg["type"] not in table:
    raise ValueError(f"{where}.type={cfg['type']!r} is not available; expected one of {sorted(table)}")
  return table[cfg["type"]]


def build_module(cfg: Mapping, kind: str) -> type:
  """Return a constructor ``(name=...) -> module`` for a backbone/neck/head config."""
  table = _KINDS[kind.split("[")[0]]
  cls = lookup(table, cfg, kind)
  kwargs = module_kwargs(cls, cfg, kind)
  return lambda name: cls(name=name, **kwargs)


def build_segmentor(model_cfg) -> nn.Module:
  """Build the segmentor of an mmseg-style ``model`` config (ConfigDict or dict)."""
  cfg = to_plain(model_cfg)
  cls = lookup(SEGMENTORS, cfg, "model")
  # The trainer loads model.pretrained into the backbone (train.loop._backbone_pretrained, which
  # also reads the backbone's own pretrained / init_cfg=Pretrained and refuses a Pretrained here).
  ignored = {"pretrained", "init_cfg"}
  kwargs = module_kwargs(cls, {k: v for k, v in cfg.items() if k not in ignored}, "model")
  kwargs.pop("build", None)
  # Validate every sub-config now rather than at first trace.
  for kind in ("backbone", "neck", "decode_head", "auxiliary_head"):
    sub = kwargs.get(kind)
    for i, c in enumerate(sub if isinstance(sub, tuple) else ([sub] if sub else [])):
      build_module(c, kind if not isinstance(sub, tuple) else f"{kind}[{i}]")
  if cls is EncoderDecoder and isinstance(kwargs.get("decode_head"), tuple):
    raise ValueError("model.decode_head is a list: that is a CascadeEncoderDecoder (type="
                     "'CascadeEncoderDecoder', num_stages=...), not an EncoderDecoder")
  return cls(build=build_module, **kwargs)


# Initialisation runs once, so it is compiled for compile time: XLA's optimisations take most of
# the ~15 s an optimised compile of 300 threefry initialisers needs (op-by-op it was ~25 s and
# left ~0.4 GB of freed compile memory in the process). Values equal the op-by-op init's to
# within 2.4e-7 (rounding in the normal sampler's transform; the random bits are the same).
def init_compiler_options() -> dict:
  """``compiler_options`` of jitted initialisation (``xla_flags.unoptimised_options``)."""
  return xla_flags.unoptimised_options()


def init_variables(model: nn.Module, rng: jax.Array, num_channels: int = 3) -> dict:
  """``model.init`` on a 64x64 dummy batch, as one jitted program compiled without optimisations
  (called inside another jit or ``eval_shape``, it is traced into the caller's program)."""
  dummy = jnp.zeros((1, 64, 64, num_channels), jnp.float32)
  if isinstance(rng, jax.core.Tracer):  # inside the caller's jit, whose compiler options apply
    return model.init(rng, dummy)
  return jax.jit(model.init, compiler_options=init_compiler_options())(rng, dummy)
