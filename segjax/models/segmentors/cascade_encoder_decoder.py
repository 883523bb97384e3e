"""mmseg ``CascadeEncoderDecoder``: ``num_stages`` decode heads, each later stage fed the previous
stage's test logits (OCRNet after an FCN head, PointRend's point head after FPN's)."""
from __future__ import annotations

from segjax import losses
from segjax.models.segmentors.encoder_decoder import EncoderDecoder, HeadList


class CascadeEncoderDecoder(EncoderDecoder):
  """``decode_head`` is a list of ``num_stages`` head configs (``decode_head.0``, ``.1``, ...)."""
  num_stages: int = 2

  def decode_heads(self) -> list:
    cfgs = self.decode_head
    if not isinstance(cfgs, (list, tuple)) or len(cfgs) != self.num_stages:
      raise ValueError(f"CascadeEncoderDecoder(num_stages={self.num_stages}) needs decode_head as a "
                       f"list of {self.num_stages} head configs, got {type(cfgs).__name__} "
                       f"of length {len(cfgs) if isinstance(cfgs, (list, tuple)) else 1}")
    heads = HeadList(tuple(cfgs), "decode_head", self.build, name="decode_head")
    return [heads.member(i) for i in range(self.num_stages)]

  def decode_train(self, heads, x, labels) -> dict:
    """Stage ``i`` trains on stage ``i-1``'s test output, recomputed in training mode as mmseg
    does (so BatchNorm sees the batch twice, and updates its running statistics twice)."""
    out = losses.add_prefix(heads[0].forward_train(x, labels, self.train_cfg), "decode_0")
    prev = None
    for i in range(1, self.num_stages):
      prev = heads[i - 1].forward_test(x, self.test_cfg, prev_output=prev, train=True)
      out.update(losses.add_prefix(
          heads[i].forward_train(x, labels, self.train_cfg, prev_output=prev), f"decode_{i}"))
    return out

  def decode_test(self, heads, x, train: bool = False):
    out = heads[0].forward_test(x, self.test_cfg, train=train)
    stages = [out]
    for head in heads[1:]:
      out = head.forward_test(x, self.test_cfg, prev_output=out, train=train)
      stages.append(out)
    return out, stages
