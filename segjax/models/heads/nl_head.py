"""NLHead (mmseg ``nl_head.py``) and mmcv's ``NonLocal2d``; ``BlockFCNHead``, the FCNHead with a
context block between its two convs that NLHead, GCHead, CCHead and DNLHead share."""
from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from segjax import layers
from segjax.models.heads.fcn import FCNHead

NONLOCAL_MODES = ("gaussian", "embedded_gaussian", "dot_product", "concatenation")


def check_mode(mode: str, where: str) -> None:
  if mode not in NONLOCAL_MODES:
    raise ValueError(f"{where}: mode={mode!r}; expected one of {NONLOCAL_MODES}")


class NonLocal2d(nn.Module):
  """mmcv ``NonLocal2d`` (``sub_sample=False``, as mmseg builds it), NHWC.

  ``g``, ``theta``, ``phi``: 1x1 ConvModules without norm or activation (``gaussian`` has no
  ``theta``/``phi`` and compares the input itself); ``concat_project`` (``concatenation``): a 1x1
  conv without bias on [theta_i, phi_j] and a ReLU; ``conv_out``: 1x1 ConvModule with the norm;
  the output is x + conv_out(softmax-or-scaled pairwise weights @ g(x)).
  """
  in_channels: int
  reduction: int = 2
  use_scale: bool = True
  norm_cfg: dict | None = None
  mode: str = "embedded_gaussian"

  @property
  def inter_channels(self) -> int:
    return max(self.in_channels // self.reduction, 1)

  def project(self, name: str):
    return layers.conv_module(self.inter_channels, 1, act_cfg=None, name=name)

  def softmax_scale(self, channels: int) -> float:
    """The factor of theta . phi inside the softmax of the ``gaussian`` / ``embedded_gaussian``
    modes."""
    return channels ** -0.5 if self.mode == "embedded_gaussian" and self.use_scale else 1.0

  def context(self, theta_x, phi_x, g_x, train: bool):
    """The pairwise weights of each mode (mmcv's ``gaussian``, ...) applied to g(x), all (N, L, C)."""
    if self.mode in ("gaussian", "embedded_gaussian"):
      return layers.softmax_attention(theta_x, phi_x, g_x, self.softmax_scale(theta_x.shape[-1]))
    return self.pairwise(theta_x, phi_x, train) @ g_x

  def pairwise(self, theta_x, phi_x, train: bool):
    """(N, L, C) x (N, L, C) -> (N, L, L) weights of the ``dot_product`` and ``concatenation``
    modes (no softmax: each weight divided by L)."""
    if self.mode == "concatenation":
      # concat_project's 1x1 conv over [theta_i, phi_j] is w_theta . theta_i + w_phi . phi_j: the
      # conv applied to [theta, 0] and to [0, phi] gives the two terms without the (L, L, 2C) tensor.
      project = layers.conv_module(1, 1, act_cfg=None, bias=False, name="concat_project")
      zeros = jnp.zeros_like(theta_x)
      theta_term = project(jnp.concatenate([theta_x, zeros], -1)[:, :, None], train)[:, :, 0, 0]
      phi_term = project(jnp.concatenate([zeros, phi_x], -1)[:, :, None], train)[:, :, 0, 0]
      pairwise = nn.relu(theta_term[:, :, None] + phi_term[:, None, :])
      return pairwise / pairwise.shape[-1]
    pairwise = jnp.einsum("nic,njc->nij", theta_x, phi_x)
    return pairwise / pairwise.shape[-1]

  def embeddings(self, x, train: bool):
    """theta(x), phi(x) as (N, HW, C); the input itself in ``gaussian`` mode."""
    n = x.shape[0]
    if self.mode == "gaussian":
      flat = x.reshape(n, -1, x.shape[-1])
      return flat, flat
    return (self.project("theta")(x, train).reshape(n, -1, self.inter_channels),
            self.project("phi")(x, train).reshape(n, -1, self.inter_channels))

  def out(self, x, y, train: bool):
    """x + conv_out(y) for y (N, HW, inter_channels)."""
    y = y.reshape(*x.shape[:3], self.inter_channels)
    return x + layers.conv_module(self.in_channels, 1, norm_cfg=self.norm_cfg, act_cfg=None,
                                  name="conv_out")(y, train)

  @nn.compact
  def __call__(self, x, train: bool = False):
    check_mode(self.mode, type(self).__name__)
    layers.check_in_channels(x, self.in_channels, type(self).__name__)
    g_x = self.project("g")(x, train).reshape(x.shape[0], -1, self.inter_channels)
    theta_x, phi_x = self.embeddings(x, train)
    return self.out(x, self.context(theta_x, phi_x, g_x, train), train)


class BlockFCNHead(FCNHead):
  """mmseg's FCNHead(num_convs=2) with a context block between ``convs.0`` and ``convs.1``, then
  ``conv_cat`` over [input, output] when ``concat_input``, then ``cls_seg``. Subclasses give
  ``block(x, train)``; mmseg fixes ``num_convs=2`` for them."""
  num_convs: int = 2

  def block(self, x, train: bool):
    raise NotImplementedError

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    if self.num_convs != 2:
      raise ValueError(f"{type(self).__name__}: num_convs={self.num_convs}; mmseg fixes it to 2 "
                       "(a conv on each side of the context block)")
    x = self.transform_inputs(inputs)
    convs = layers.NamedChildren(name="convs")
    out = convs(0, self.conv_builder(self.dilation), x, train)
    out = self.block(out, train)
    out = convs(1, self.conv_builder(self.dilation), out, train)
    if self.concat_input:
      out = self.conv_builder(1)(name="conv_cat")(jnp.concatenate([x, out], axis=-1), train)
    return self.cls_seg(out, train)


class NLHead(BlockFCNHead):
  """Non-local Neural Networks: ``nl_block`` (NonLocal2d over ``channels``)."""
  TINY: ClassVar[dict] = dict(in_channels=64, in_index=3, channels=8, num_classes=3,
                              norm_cfg=dict(type="BN", requires_grad=True))
  reduction: int = 2
  use_scale: bool = True
  mode: str = "embedded_gaussian"

  def block(self, x, train: bool):
    return NonLocal2d(self.channels, self.reduction, self.use_scale, self.norm_cfg, self.mode,
                      name="nl_block")(x, train)
