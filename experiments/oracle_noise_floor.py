"""How close segjax's float32 gets to MMSegmentation: the tables in experiments/README.md.

  python experiments/oracle_noise_floor.py [case ...]

For each ../shared/oracle case segjax can build (code shared with tests/test_oracle_models.py):
- per output, in absolute terms: the case's float32 noise floor (the change that rounding the
  input to float32 causes, measured in float64), and the distances between mmseg's float32
  output, segjax's float64 evaluation and segjax's float32 output;
- the faithfulness ratio: max |segjax32 - truth| / max |mmseg32 - truth| for the logits, truth
  being mmseg's logits64.npy where shipped, else segjax's float64 evaluation;
- the worst relative difference of the training loss terms against mmseg's train_loss.json.
"""
import functools
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import jax  # noqa: E402
import numpy as np  # noqa: E402

from conftest import ORACLE  # noqa: E402
from segjax.models import build_segmentor  # noqa: E402
from test_oracle_models import CASES, float64_noise_floor, nhwc, outputs, reference  # noqa: E402


def dist(a, b):
  return float(np.abs(a - b).max())


def loss_differences(d, model, variables):
  """Worst relative difference of the loss terms (not acc_seg) against mmseg's, and its key."""
  expected = json.load(open(os.path.join(d, "train_loss.json")))["losses"]
  data = np.load(os.path.join(d, "train_input.npz"))
  got, _ = model.apply(variables, nhwc(data["img"].astype(np.float32)),
                       data["gt_semantic_seg"][:, 0].astype(np.int32), train=True, mode="loss",
                       mutable=["batch_stats"])
  rel = {k: abs(float(got[k]) - v) / abs(v) for k, v in expected.items() if "loss" in k}
  key = max(rel, key=rel.get)
  return rel[key], key


def main(cases):
  rows, summary = [], []
  for name in cases:
    d = os.path.join(ORACLE, name)
    try:
      model = build_segmentor(json.load(open(os.path.join(d, "mmseg_model.json"))))
    except ValueError as e:
      print(f"{name}: skipped ({e})", file=sys.stderr)
      continue
    variables, x, exact, _, noise = float64_noise_floor(d, model)
    out = jax.tree.map(np.asarray, jax.jit(functools.partial(outputs, model))(variables, x))
    for key in ("head_logits", "logits"):
      ref, ours = reference(d, key), out[key]
      rows.append(f"| {name} | {key} | {noise[key]:.2g} | {dist(ref, exact[key]):.2g} "
                  f"| {dist(ours, exact[key]):.2g} | {dist(ours, ref):.2g} |")
    truth = reference(d, "logits64")
    truth = exact["logits"] if truth is None else truth
    ratio = dist(out["logits"], truth) / dist(reference(d, "logits"), truth)
    worst, key = loss_differences(d, model, variables)
    summary.append(f"| {name} | {ratio:.2f} | {worst:.1e} ({key}) |")
    print(rows[-1], summary[-1], sep="\n", file=sys.stderr, flush=True)
  print("| case | output | floor | mmseg32 - segjax64 | segjax32 - segjax64 | segjax32 - mmseg32 |")
  print("|---|---|---:|---:|---:|---:|")
  print("\n".join(rows))
  print("\n| case | logits: segjax32 / mmseg32 distance to float64 truth | worst loss relative difference |")
  print("|---|---:|---|")
  print("\n".join(summary))


if __name__ == "__main__":
  main(sys.argv[1:] or CASES)
