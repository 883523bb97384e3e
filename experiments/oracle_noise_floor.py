"""How close float32 can get to MMSegmentation's float32 logits: the table in experiments/README.md.

  python experiments/oracle_noise_floor.py

For each ../shared/oracle case and output, in units of the case's float32 noise floor (the change
that rounding the input to float32 causes, measured in float64; the code is shared with
tests/test_oracle_models.py): how far mmseg's float32 output is from segjax's float64 evaluation,
and how far segjax's float32 output is from each.
"""
import functools
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import jax  # noqa: E402
import numpy as np  # noqa: E402

from conftest import ORACLE  # noqa: E402
from test_oracle_models import CASES, float64_noise_floor, outputs, reference  # noqa: E402


def dist(a, b):
  return np.abs(a - b).max()


def main():
  print("| case | output | floor | mmseg32 - segjax64 | segjax32 - segjax64 | segjax32 - mmseg32 |")
  print("|---|---|---:|---:|---:|---:|")
  for name in CASES:
    d = os.path.join(ORACLE, name)
    model, variables, x, exact, noise = float64_noise_floor(d)
    out = jax.jit(functools.partial(outputs, model))(variables, x)
    for key in ("feat_3", "head_logits", "logits"):
      ref, ours = reference(d, key), np.asarray(out[key])
      print(f"| {name} | {key} | {noise[key]:.2g} | {dist(ref, exact[key]):.2g} | {dist(ours, exact[key]):.2g} "
            f"| {dist(ours, ref):.2g} |", flush=True)


if __name__ == "__main__":
  main()
