"""Feature2Pyramid (mmseg ``necks/featurepyramid.py``): turns a plain ViT's same-resolution maps
(BEiT, MAE) into a pyramid by position, not by the value at that position of ``rescales``: with a
4 among the rescales the inputs get x4 (``upsample_4x``: ConvTranspose2d 2x2/2, norm, GELU,
ConvTranspose2d), x2 (``upsample_2x``: one ConvTranspose2d), identity, 2x2 max pool; otherwise
x2, identity, 2x2 max pool, 4x4 max pool. The children keep ``nn.Sequential``'s indices
(``upsample_4x/0``, ``/1`` the norm, ``/3``)."""
from __future__ import annotations

from typing import ClassVar, Sequence

import flax.linen as nn

from segjax import layers
from segjax.models.heads.dpt_head import ConvTranspose2d

RESCALES = (4, 2, 1, 0.5, 0.25)


def max_pool(x, k: int):
  """``nn.MaxPool2d(k, stride=k)``: floor mode, trailing rows/columns dropped."""
  return nn.max_pool(x, (k, k), strides=(k, k), padding="VALID")


class Feature2Pyramid(nn.Module):
  TINY: ClassVar[dict] = dict(embed_dim=8, rescales=(4, 2, 1, 0.5), norm_cfg=dict(type="BN", requires_grad=True))
  # A ViT's four levels: embed_dim channels each, one resolution.
  TINY_PYRAMID: ClassVar[tuple] = ((8, 16),) * 4
  embed_dim: int
  rescales: Sequence[float] = (4, 2, 1, 0.5)
  norm_cfg: dict | None = None  # mmseg's default: SyncBN

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    invalid = [k for k in self.rescales if k not in RESCALES]
    if invalid:
      raise ValueError(f"Feature2Pyramid: rescales {list(self.rescales)} hold {invalid}; each must be one of {RESCALES}")
    if len(inputs) != len(self.rescales):
      raise ValueError(f"Feature2Pyramid: {len(inputs)} inputs for rescales={list(self.rescales)}; expected one per rescale")
    # mmseg picks the operations by position: the list below, whatever order rescales has.
    order = (4, 2, 1, 0.5) if 4 in self.rescales else (2, 1, 0.5, 0.25)
    needed = order[:len(inputs)]
    missing = [k for k in needed if k not in self.rescales]
    if len(inputs) > len(order) or missing:
      raise ValueError(f"Feature2Pyramid: rescales={list(self.rescales)} makes mmseg apply {list(order)} by "
                       f"position, which needs {list(needed)} among the rescales (missing {missing})")
    for i, x in enumerate(inputs):
      layers.check_in_channels(x, self.embed_dim, f"Feature2Pyramid input {i} (embed_dim)")
    norm_cfg = self.norm_cfg or {"type": "SyncBN", "requires_grad": True}
    c = self.embed_dim
    transposed = lambda name: (lambda m: lambda x, train: m(x))(ConvTranspose2d(c, 2, name=name))
    ops = {
        4: lambda: layers.Indexed((transposed,
                                   lambda name: layers.norm_layer(norm_cfg, name=name),
                                   lambda name: lambda x, train: layers.activation({"type": "GELU"})(x),
                                   transposed), name="upsample_4x"),
        2: lambda: layers.Indexed((transposed,), name="upsample_2x"),
        1: lambda: lambda x, train: x,
        0.5: lambda: lambda x, train: max_pool(x, 2),
        0.25: lambda: lambda x, train: max_pool(x, 4),
    }
    return tuple(ops[k]()(x, train) for k, x in zip(order, inputs))
