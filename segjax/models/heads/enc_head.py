"""EncHead (mmseg ``enc_head.py``): Context Encoding (mmseg ``ops/encoding.py``'s Encoding layer)
with channel-wise gating, and the Semantic Encoding loss on which classes an image contains."""
from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax import layers, losses
from segjax.models.heads.decode_head import BaseDecodeHead

HIGHEST = jax.lax.Precision.HIGHEST


class Encoding(nn.Module):
  """mmseg ``Encoding``: soft-assign each pixel to ``num_codes`` learned ``codewords`` with weights
  softmax_k(scale_k * |x - c_k|^2) and sum the residuals x - c_k per code: (N, H, W, C) ->
  (N, num_codes, C). The distances are expanded (|x|^2 - 2 x.c_k + |c_k|^2) so no
  (pixels x codes x channels) array is formed (mmseg forms it: 0.5 GB per image at full size)."""
  channels: int
  num_codes: int

  @nn.compact
  def __call__(self, x):
    layers.check_in_channels(x, self.channels, "Encoding")
    std = 1.0 / (self.num_codes * self.channels)**0.5
    uniform = lambda low, high: (lambda key, shape: jax.random.uniform(key, shape, jnp.float32, low, high))
    codewords = self.param("codewords", uniform(-std, std), (self.num_codes, self.channels)).astype(x.dtype)
    scale = self.param("scale", uniform(-1.0, 0.0), (self.num_codes,)).astype(x.dtype)
    x = x.reshape(x.shape[0], -1, self.channels)
    distance = ((x * x).sum(-1, keepdims=True) - 2 * jnp.einsum("nic,kc->nik", x, codewords, precision=HIGHEST)
                + (codewords * codewords).sum(-1))
    assignment = nn.softmax(scale * distance, axis=-1)  # (N, pixels, codes)
    return (jnp.einsum("nik,nic->nkc", assignment, x, precision=HIGHEST)
            - assignment.sum(1)[..., None] * codewords)


class EncModule(nn.Module):
  """``encoding_project`` ConvModule, ``encoding`` = Sequential(Encoding, BatchNorm1d over the
  codes, ReLU), mean over the codes; ``fc`` = Sequential(Linear, Sigmoid) gates the channels:
  relu(x + x * gamma). Returns (encoding feature (N, C), gated x)."""
  num_codes: int
  norm_cfg: dict | None
  act_cfg: dict

  @nn.compact
  def __call__(self, x, train: bool = False):
    channels = x.shape[-1]
    projection = layers.conv_module(channels, 1, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg,
                                    name="encoding_project")(x, train)
    # mmseg builds the norm_cfg's 1d version (BN -> BN1d) over the codes; BN1d(num_codes) on
    # (N, codes, C) normalises each code over N and C, i.e. over every axis but the codes.
    norm_cfg = dict(self.norm_cfg) if self.norm_cfg is not None else {"type": "BN"}
    codes_last = lambda build: (lambda name: (lambda f, train: build(name)(f.swapaxes(1, 2), train).swapaxes(1, 2)))
    encoding = layers.Indexed((
        lambda name: (lambda f, train: Encoding(channels, self.num_codes, name=name)(f)),
        codes_last(lambda name: layers.norm_layer(norm_cfg, name=name)),
        lambda name: (lambda f, train: nn.relu(f)),
    ), name="encoding")
    encoding_feat = encoding(projection, train).mean(axis=1)
    gamma = layers.Indexed((lambda name: (lambda f, train: nn.Dense(channels, name=name)(f)),
                            lambda name: (lambda f, train: nn.sigmoid(f))), name="fc")(encoding_feat, train)
    return encoding_feat, nn.relu(x + x * gamma[:, None, None, :])


def class_presence(labels, num_classes: int):
  """mmseg ``_convert_to_onehot_labels``: (N, num_classes), 1 where the image has a pixel of that
  class (histc over [0, num_classes - 1], so ignored labels such as 255 count for nothing)."""
  classes = jnp.arange(num_classes)
  present = (labels.reshape(labels.shape[0], -1, 1) == classes).any(axis=1)
  return present.astype(jnp.float32)


def presence_bce(se_logit, target, class_weight=None):
  """``F.binary_cross_entropy_with_logits(se_logit, target, pos_weight=class_weight)`` averaged
  over images and classes, as mmseg's ``binary_cross_entropy`` reduces same-shaped targets."""
  se_logit = losses.at_least_float32(se_logit)
  pos_weight = 1.0 if class_weight is None else jnp.asarray(class_weight, jnp.float32)
  loss = -(pos_weight * target * jax.nn.log_sigmoid(se_logit) + (1 - target) * jax.nn.log_sigmoid(-se_logit))
  return loss.mean()


class EncHead(BaseDecodeHead):
  """With ``use_se_loss`` the forward returns (seg logits, SE logits (N, num_classes)); the test
  logits are the first, and the losses add ``loss_se``: ``loss_se_decode`` (a sigmoid
  CrossEntropyLoss) of the SE logits against ``class_presence``, mean over images and classes."""
  TINY: ClassVar[dict] = dict(in_channels=(16, 32, 64), in_index=(1, 2, 3), channels=8, num_codes=4,
                              add_lateral=True, num_classes=3,
                              norm_cfg=dict(type="BN", requires_grad=True))
  num_codes: int = 32
  use_se_loss: bool = True
  add_lateral: bool = False
  loss_se_decode: Any = None  # mmseg's default: sigmoid CrossEntropyLoss, loss_weight 0.2
  input_transform: str | None = "multiple_select"

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    inputs = self.transform_inputs(inputs)
    feat = self.conv(self.channels, 3, 1)(name="bottleneck")(inputs[-1], train)
    if self.add_lateral:
      laterals = layers.ModuleList(len(self.in_channels) - 1, lambda i, name: self.conv(self.channels, 1)(name=name),
                                   name="lateral_convs")(list(inputs[:-1]), train)
      laterals = [layers.resize(f, feat.shape[1:3], self.align_corners) for f in laterals]
      feat = self.conv(self.channels, 3, 1)(name="fusion")(jnp.concatenate([feat, *laterals], -1), train)
    encode_feat, output = EncModule(self.num_codes, self.norm_cfg, self.act, name="enc_module")(feat, train)
    output = self.cls_seg(output, train)
    if self.use_se_loss:
      return output, nn.Dense(self.num_classes, name="se_layer")(encode_feat)
    return output

  def forward_test(self, inputs, test_cfg=None, prev_output=None, train: bool = False):
    del test_cfg, prev_output
    out = self(inputs, train=train)
    return out[0] if self.use_se_loss else out

  def se_loss(self, se_logit, labels):
    cfg = dict(self.loss_se_decode or dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=0.2))
    unknown = sorted(set(cfg) - {"type", "use_sigmoid", "loss_weight", "class_weight", "loss_name",
                                 "avg_non_ignore", "reduction"})
    if cfg.get("type") != "CrossEntropyLoss" or not cfg.get("use_sigmoid") or unknown:
      raise ValueError(f"EncHead: loss_se_decode={cfg} is not supported; expected a CrossEntropyLoss "
                       "with use_sigmoid=True (keys loss_weight, class_weight, avg_non_ignore)")
    if cfg.get("reduction", "mean") != "mean":
      raise ValueError(f"EncHead: loss_se_decode reduction={cfg['reduction']!r}; only 'mean' is supported")
    # Targets are 0/1, all valid, so avg_non_ignore averages over the same N x num_classes.
    return cfg.get("loss_weight", 1.0) * presence_bce(se_logit, class_presence(labels, self.num_classes),
                                                      cfg.get("class_weight"))

  def losses(self, seg_logit, labels) -> dict:
    if not self.use_se_loss:
      return super().losses(seg_logit, labels)
    seg_logit, se_logit = seg_logit
    out = super().losses(seg_logit, labels)
    out["loss_se"] = self.se_loss(se_logit, labels)
    return out
