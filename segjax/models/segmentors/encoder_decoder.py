"""mmseg ``EncoderDecoder``: backbone -> [neck] -> decode head (+ auxiliary heads).

One Flax module, three modes of ``__call__`` (as mmseg 1.x's ``forward(mode=...)``):
- ``mode='loss'``: mmseg's ``forward_train`` loss dict (``decode.loss_ce``, ``decode.acc_seg``,
  ``aux.loss_ce`` or ``aux_0.``, ``aux_1.`` for a list of auxiliary heads);
- ``mode='encode_decode'``: mmseg's ``encode_decode``, the decode head's test logits resized
  (bilinear) to the input's size;
- ``mode='tensor'``: every output a comparison needs: ``backbone`` (and ``neck``) features, the
  decode head's test logits ``decode`` at head resolution, ``aux`` (each auxiliary head's forward).
Heads are reached only through their contract (``segjax.models.heads.decode_head``).
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax

from segjax import layers, losses


class EncoderDecoder(nn.Module):
  """Children ``backbone``, ``neck``, ``decode_head`` and ``auxiliary_head`` (a ModuleList
  ``auxiliary_head/0, /1, ...`` when the config gives a list), as in mmseg's state_dict."""
  backbone: Any
  decode_head: Any
  neck: Any = None
  auxiliary_head: Any = None
  train_cfg: Any = None
  test_cfg: Any = None
  # Module builders, passed in by ``segjax.models.build_segmentor`` (name -> class dicts).
  build: Any = None

  def extract_feat(self, img, train: bool):
    feats = self.build(self.backbone, "backbone")(name="backbone")(img, train)
    if self.neck is None:
      return feats, None
    return self.build(self.neck, "neck")(name="neck")(feats, train), feats

  def auxiliary_heads(self) -> tuple[list, list[str]]:
    """The auxiliary heads and their mmseg loss prefixes (``aux``, or ``aux_i`` for a list)."""
    if self.auxiliary_head is None:
      return [], []
    if not isinstance(self.auxiliary_head, (list, tuple)):
      return [self.build(self.auxiliary_head, "auxiliary_head")(name="auxiliary_head")], ["aux"]
    heads = HeadList(tuple(self.auxiliary_head), "auxiliary_head", self.build, name="auxiliary_head")
    n = len(self.auxiliary_head)
    return [heads.member(i) for i in range(n)], [f"aux_{i}" for i in range(n)]

  def decode_heads(self) -> list:
    return [self.build(self.decode_head, "decode_head")(name="decode_head")]

  def decode_train(self, heads, x, labels) -> dict:
    """mmseg ``_decode_head_forward_train``."""
    return losses.add_prefix(heads[0].forward_train(x, labels, self.train_cfg), "decode")

  def decode_test(self, heads, x, train: bool = False):
    """mmseg ``_decode_head_forward_test``: the last stage's test logits (and every stage's)."""
    out = heads[0].forward_test(x, self.test_cfg, train=train)
    return out, [out]

  @nn.compact
  def __call__(self, img: jax.Array, labels: jax.Array | None = None, train: bool = False,
               mode: str = "tensor"):
    x, backbone_feats = self.extract_feat(img, train)
    heads = self.decode_heads()
    aux_heads, aux_prefixes = self.auxiliary_heads()
    if mode == "loss":
      if labels is None:
        raise ValueError("mode='loss' needs labels (N, H, W)")
      out = self.decode_train(heads, x, labels)
      for head, prefix in zip(aux_heads, aux_prefixes):
        out.update(losses.add_prefix(head.forward_train(x, labels, self.train_cfg), prefix))
      return out
    logits, stages = self.decode_test(heads, x, train)
    if mode == "encode_decode":
      return layers.resize(logits, img.shape[1:3], align_corners(self))
    if mode != "tensor":
      raise ValueError(f"mode={mode!r}; expected 'tensor', 'loss' or 'encode_decode'")
    out = {"decode": logits, "aux": [h(x, train=train) for h in aux_heads]}
    if len(stages) > 1:
      out["stages"] = stages
    if backbone_feats is None:
      out["backbone"] = x
    else:
      out["backbone"], out["neck"] = backbone_feats, x
    return out


class HeadList(nn.Module):
  """An ``nn.ModuleList`` of heads (children ``0``, ``1``, ... as mmseg's state_dict names them):
  ``heads(i, method, *args)`` runs one contract method of head ``i``; ``member(i)`` is head ``i``
  with its methods, for code written against a single head."""
  cfgs: tuple
  kind: str
  build: Any

  @nn.compact
  def __call__(self, index: int, method: str, *args, **kwargs):
    head = self.build(self.cfgs[index], f"{self.kind}[{index}]")(name=str(index))
    return getattr(head, method)(*args, **kwargs)

  def member(self, index: int) -> "_HeadListMember":
    return _HeadListMember(self, index)


class _HeadListMember:
  def __init__(self, heads: HeadList, index: int):
    self._heads, self._index = heads, index
    self.config = heads.cfgs[index]

  def __call__(self, *args, **kwargs):
    return self._heads(self._index, "__call__", *args, **kwargs)

  def __getattr__(self, method: str):
    return functools.partial(self._heads, self._index, method)


def training_rngs(rng: jax.Array, deterministic: bool) -> dict:
  """The rng streams of a training-mode forward: ``'sampling'`` for random training choices
  (PointRend's points) and, unless ``deterministic``, ``'dropout'`` for dropout and drop path."""
  rngs = {"sampling": jax.random.fold_in(rng, 1)}
  if not deterministic:
    rngs["dropout"] = rng
  return rngs


def final_decode_head(model_cfg) -> dict:
  """The settings of the prediction (``num_classes``, ``out_channels``, ``threshold``,
  ``align_corners``): the decode head's config, or a cascade's last stage's, as that head's class
  reports them (``prediction_config``: K-Net's are its kernel generate head's)."""
  from segjax.models import HEADS  # the registry imports this module
  head = model_cfg["decode_head"]
  head = dict(head[-1] if isinstance(head, (list, tuple)) else head)
  cls = HEADS.get(head.get("type"))
  return dict(cls.prediction_config(head)) if cls is not None else head


def align_corners(model) -> bool:
  """mmseg's ``EncoderDecoder.align_corners``: the (last) decode head's."""
  return bool(final_decode_head({"decode_head": model.decode_head}).get("align_corners", False))
