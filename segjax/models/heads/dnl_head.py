"""DNLHead (mmseg ``dnl_head.py``): disentangled non-local block, a whitened pairwise term (theta
and phi centred over positions, divided by ``temperature``) plus a unary term."""
from __future__ import annotations

from typing import ClassVar

import flax.linen as nn

from segjax import layers
from segjax.models.heads.nl_head import BlockFCNHead, NonLocal2d, check_mode


class DisentangledNonLocal2d(NonLocal2d):
  """mmseg ``DisentangledNonLocal2d``: NonLocal2d whose theta/phi are centred over the positions,
  whose ``embedded_gaussian`` divides by ``temperature`` too, plus the unary term: ``conv_mask``
  (1x1 conv to one channel, softmax over positions) pooling g(x), added to every position."""
  temperature: float = 0.05

  def softmax_scale(self, channels: int) -> float:
    scale = super().softmax_scale(channels)
    return scale / self.temperature if self.mode == "embedded_gaussian" else scale

  @nn.compact
  def __call__(self, x, train: bool = False):
    check_mode(self.mode, type(self).__name__)
    layers.check_in_channels(x, self.in_channels, type(self).__name__)
    n = x.shape[0]
    g_x = self.project("g")(x, train).reshape(n, -1, self.inter_channels)
    theta_x, phi_x = self.embeddings(x, train)
    theta_x = theta_x - theta_x.mean(axis=1, keepdims=True)
    if self.mode == "gaussian":
      # mmseg subtracts the mean in place from a view of x: x itself is centred from here on
      # (the residual and conv_mask see it), and phi, a view of the same x, is then centred again.
      x = theta_x.reshape(x.shape)
      phi_x = theta_x
    phi_x = phi_x - phi_x.mean(axis=1, keepdims=True)
    y = self.context(theta_x, phi_x, g_x, train)
    unary_mask = nn.softmax(layers.conv2d(1, 1, name="conv_mask")(x).reshape(n, 1, -1), axis=-1)
    return self.out(x, y + unary_mask @ g_x, train)


class DNLHead(BlockFCNHead):
  """Disentangled Non-Local Neural Networks: ``dnl_block`` over ``channels``."""
  TINY: ClassVar[dict] = dict(in_channels=64, in_index=3, channels=8, num_classes=3,
                              norm_cfg=dict(type="BN", requires_grad=True))
  reduction: int = 2
  use_scale: bool = True
  mode: str = "embedded_gaussian"
  temperature: float = 0.05

  def block(self, x, train: bool):
    return DisentangledNonLocal2d(self.channels, self.reduction, self.use_scale, self.norm_cfg,
                                  self.mode, self.temperature, name="dnl_block")(x, train)
