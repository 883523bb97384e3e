"""Metric writers: JSON lines and TensorBoard event files.

clu's ``metric_writers`` import TensorFlow; segjax writes TensorBoard events with tensorboardX so
TensorFlow stays optional.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Mapping

import jax


class MetricWriter:
  """Writes scalars from process 0 only, to ``workdir/metrics.jsonl`` and ``workdir/tb/``.

  A metrics.jsonl row is ``mode`` (train, val or eval), ``step``, ``timestamp`` (Unix seconds
  when it was written) and the scalars, unchanged: evaluation metrics (aAcc, mIoU, ...) as
  fractions, train rows' ``sec_per_step`` in seconds, ``*acc_seg`` in percent as mmseg's loss dict."""

  def __init__(self, workdir: str):
    self.active = jax.process_index() == 0
    if not self.active:
      return
    os.makedirs(workdir, exist_ok=True)
    self._json = open(os.path.join(workdir, "metrics.jsonl"), "a", buffering=1)
    from tensorboardX import SummaryWriter
    self._tb = SummaryWriter(os.path.join(workdir, "tb"))

  def write_scalars(self, step: int, scalars: Mapping[str, float], mode: str = "train") -> None:
    if not self.active:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    record = {"mode": mode, "step": int(step), "timestamp": time.time()}
    record.update({k: (v if math.isfinite(v) else None) for k, v in clean.items()})
    self._json.write(json.dumps(record) + "\n")
    for k, v in clean.items():
      self._tb.add_scalar(f"{mode}/{k}", v, int(step))
    self._tb.flush()

  def close(self) -> None:
    if self.active:
      self._json.close()
      self._tb.close()
