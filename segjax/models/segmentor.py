"""EncoderDecoder: backbone -> [neck] -> decode head (+ auxiliary heads), and mmseg's inference.

The module returns head-resolution logits; losses live in ``segjax.losses`` and whole-image
inference (``encode_decode``: logits bilinearly resized to the input) is ``encode_decode`` below.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax import layers


class EncoderDecoder(nn.Module):
  """Children ``backbone``, ``neck``, ``decode_head`` and ``auxiliary_head`` (a ModuleList
  ``auxiliary_head/0, /1, ...`` when the config gives a list), as in mmseg's state_dict."""
  backbone: Any
  decode_head: Any
  neck: Any = None
  auxiliary_head: Any = None
  # Module builders, passed in by ``segjax.models.build_segmentor`` (name -> class dicts).
  build: Any = None

  @nn.compact
  def __call__(self, img: jax.Array, train: bool = False) -> dict:
    feats = self.build(self.backbone, "backbone")(name="backbone")(img, train)
    if self.neck is not None:
      feats = self.build(self.neck, "neck")(name="neck")(feats, train)
    out = {"decode": self.build(self.decode_head, "decode_head")(name="decode_head")(feats, train)}
    if self.auxiliary_head is not None:
      if isinstance(self.auxiliary_head, (list, tuple)):
        heads = self.auxiliary_head
        aux = layers.ModuleList(
            len(heads), lambda i, name: self.build(heads[i], f"auxiliary_head[{i}]")(name=name),
            name="auxiliary_head")
        out["aux"] = aux([feats] * len(heads), train)  # every head sees all backbone outputs
      else:
        out["aux"] = [self.build(self.auxiliary_head, "auxiliary_head")(name="auxiliary_head")(feats, train)]
    return out


def encode_decode(model: nn.Module, variables, img: jax.Array) -> jax.Array:
  """mmseg ``encode_decode``: eval-mode decode logits resized (bilinear) to the input's H, W."""
  logits = model.apply(variables, img, train=False)["decode"]
  align = bool(model.decode_head.get("align_corners", False))
  return layers.resize(logits, img.shape[1:3], align)
