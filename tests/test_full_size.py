"""Full-size models built with jax.eval_shape match the released checkpoints' keys and shapes
(../shared/oracle/full_keys/<config>.tsv)."""
import glob
import os

import jax
import numpy as np
import pytest

from conftest import ORACLE
from segjax.convert import convert_state_dict
from segjax.models import build_segmentor
from configs import common

BN = common.BN


def resnet(depth, dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), type="ResNetV1c"):
  return dict(type=type, depth=depth, num_stages=4, out_indices=(0, 1, 2, 3), dilations=dilations,
              strides=strides, norm_cfg=BN, norm_eval=False, style="pytorch", contract_dilation=True)


def aux(in_ch=1024, ch=256):
  return dict(type="FCNHead", in_channels=in_ch, in_index=2, channels=ch, num_convs=1,
              concat_input=False, dropout_ratio=0.1, num_classes=19, norm_cfg=BN, align_corners=False)


def head(type, **kw):
  return dict(type=type, dropout_ratio=0.1, num_classes=19, norm_cfg=BN, align_corners=False, **kw)


MODELS = {
    "fcn_r50-d8_512x1024_40k_cityscapes": (resnet(50), head("FCNHead", in_channels=2048, in_index=3,
                                           channels=512, num_convs=2, concat_input=True), aux()),
    "pspnet_r50-d8_512x1024_40k_cityscapes": (resnet(50), head("PSPHead", in_channels=2048, in_index=3,
                                              channels=512, pool_scales=(1, 2, 3, 6)), aux()),
    "pspnet_r101-d8_512x1024_40k_cityscapes": (resnet(101), head("PSPHead", in_channels=2048, in_index=3,
                                               channels=512, pool_scales=(1, 2, 3, 6)), aux()),
    "pspnet_r18-d8_512x1024_80k_cityscapes": (dict(resnet(18)), head("PSPHead", in_channels=512, in_index=3,
                                              channels=128, pool_scales=(1, 2, 3, 6)), aux(256, 64)),
    "deeplabv3_r50-d8_512x1024_40k_cityscapes": (resnet(50), head("ASPPHead", in_channels=2048, in_index=3,
                                                 channels=512, dilations=(1, 12, 24, 36)), aux()),
    "deeplabv3plus_r50-d8_512x1024_40k_cityscapes": (
        resnet(50), head("DepthwiseSeparableASPPHead", in_channels=2048, in_index=3, channels=512,
                         dilations=(1, 12, 24, 36), c1_in_channels=256, c1_channels=48), aux()),
    "upernet_r50_512x512_80k_ade20k": (
        resnet(50, (1, 1, 1, 1), (1, 2, 2, 2)),
        dict(head("UPerHead", in_channels=(256, 512, 1024, 2048), in_index=(0, 1, 2, 3), channels=512,
                  pool_scales=(1, 2, 3, 6)), num_classes=150), dict(aux(), num_classes=150)),
}


def read_tsv(path):
  out = {}
  for line in open(path):
    key, shape = line.rstrip("\n").split("\t")
    out[key] = tuple(int(s) for s in shape.strip("()[] ").replace(",", " ").split())
  return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_full_size_model_matches_release_keys(name):
  path = os.path.join(ORACLE, "full_keys", f"{name}.tsv")
  if not os.path.exists(path):
    pytest.skip(f"{path} not available")
  backbone, decode_head, aux_head = MODELS[name]
  model = build_segmentor(dict(type="EncoderDecoder", backbone=backbone, decode_head=decode_head,
                               auxiliary_head=aux_head))
  target = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 64, 64, 3), np.float32)))
  keys = read_tsv(path)
  # Fake weights of the released shapes: conversion succeeds only if every key lands on a
  # parameter of that shape and no parameter is left over.
  state = {k: np.zeros(s, np.float32) for k, s in keys.items()}
  convert_state_dict(state, target)
  n_params = sum(int(np.prod(s)) for k, s in keys.items()
                 if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
  flat = jax.tree.leaves(target["params"])
  assert sum(int(np.prod(a.shape)) for a in flat) == n_params


def test_every_cnn_tsv_is_covered():
  names = {os.path.basename(p)[:-4] for p in glob.glob(os.path.join(ORACLE, "full_keys", "*.tsv"))}
  cnn = {n for n in names if not any(t in n for t in ("segformer", "swin", "vit", "mit"))}
  assert cnn <= set(MODELS), f"full-size CNN configs without a test: {sorted(cnn - set(MODELS))}"
