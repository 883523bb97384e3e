"""Where inference time goes, per operation kind: segjax (jax.profiler) or mmseg (torch.profiler).

  python experiments/bench/profile_infer.py configs/mmseg.py:cgnet/cgnet_512x1024_60k_cityscapes.py
  PYTHONPATH=/tmp/mmstub /tmp/mmvenv/bin/python experiments/bench/profile_infer.py \
      configs/mmseg.py:cgnet/cgnet_512x1024_60k_cityscapes.py --side mmseg

Batch 1 at ``--shape`` after warm-up; ``--repeat`` profiled calls. segjax: a perfetto trace of
the compiled program, each XLA CPU thunk's time summed by its HLO instruction kind (convolution,
dot, fusion kinds as named in the compiled HLO, copy, ...); mmseg: ``torch.profiler``'s
self-CPU time per aten operator. Prints ms per call and share of the summed op time.
"""
import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)


OP_NAMES = {}  # instruction name -> its metadata op_name (the jax/flax source scope)


def hlo_kinds(hlo_text):
  """instruction name -> kind: the opcode, or for a fusion its kind plus its root computation's
  heaviest op (convolution / dot / reduce / ...) so that fused convolutions count as such."""
  kinds = {}
  fused_roots = {}
  computation = None
  body_ops = collections.defaultdict(set)
  for line in hlo_text.splitlines():
    m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
    if m and not line.startswith(" "):
      computation = m.group(1)
      continue
    m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = [^=]*? (\w[\w\-]*)\(", line)
    if not m:
      continue
    name, op = m.groups()
    body_ops[computation].add(op)
    where = re.search(r'op_name="([^"]*)"', line)
    if where:
      OP_NAMES[name] = where.group(1)
    if op == "fusion":
      called = re.search(r"calls=%?([\w.\-]+)", line)
      kind = re.search(r"kind=(\w+)", line)
      fused_roots[name] = (called.group(1) if called else None, kind.group(1) if kind else "")
    kinds[name] = op
  for name, (called, kind) in fused_roots.items():
    ops = body_ops.get(called, set())
    heavy = next((o for o in ("convolution", "dot", "reduce-window", "reduce", "scatter", "gather",
                              "dynamic-update-slice", "transpose") if o in ops), "elementwise")
    kinds[name] = f"fusion({heavy})"
  return kinds


def profile_segjax(args):
  from segjax import xla_flags
  xla_flags.apply_defaults()
  import jax
  import numpy as np

  from segjax import apis
  from segjax.config import load_config
  segmentor = apis.init_segmentor(load_config(args.config))
  x = np.random.default_rng(0).normal(size=(1, *args.shape, 3)).astype(np.float32)
  for _ in range(3):
    jax.block_until_ready(apis.inference_logits(segmentor, x))
  compiled = segmentor.inference_logits.lower(segmentor.variables, jax.numpy.asarray(x)).compile()
  kinds = hlo_kinds(compiled.as_text())
  trace_dir = tempfile.mkdtemp(prefix="segjax_trace_")
  start = time.perf_counter()
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(args.repeat):
      jax.block_until_ready(apis.inference_logits(segmentor, x))
  wall = (time.perf_counter() - start) / args.repeat
  path = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)[0]
  events = json.load(gzip.open(path))
  events = events["traceEvents"] if isinstance(events, dict) else events
  by_kind = collections.Counter()
  by_op = collections.Counter()
  unmatched = collections.Counter()
  for e in events:
    if e.get("ph") != "X":
      continue
    name = e.get("name", "")
    if name in kinds:
      by_kind[kinds[name]] += e["dur"] / 1e3 / args.repeat
      by_op[name] += e["dur"] / 1e3 / args.repeat
    else:
      unmatched[name] += e["dur"] / 1e3 / args.repeat
  report("segjax", wall, by_kind, by_op, kinds)
  print("  trace events that are no HLO instruction (runtime, thread pool):",
        ", ".join(f"{n} {ms:.1f} ms" for n, ms in unmatched.most_common(6)))


def profile_mmseg(args):
  import numpy as np
  import torch
  from mmseg.models import build_segmentor

  import mmcv
  sys.path.insert(0, os.path.join(REPO, "experiments", "bench"))
  from mmseg_reference import MMSEG_PREFIX, sync_bn_to_bn
  torch.set_num_threads(2)
  config = mmcv.Config.fromfile(os.path.join(REPO, "configs", "mmseg_configs", args.config[len(MMSEG_PREFIX):]))
  model_cfg = sync_bn_to_bn(config.model.to_dict())
  model_cfg.pop("pretrained", None)
  model = build_segmentor(model_cfg).eval()
  img = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 3, *args.shape)).astype(np.float32))
  metas = [dict(img_shape=(*args.shape, 3), ori_shape=(*args.shape, 3), pad_shape=(*args.shape, 3), flip=False)]
  with torch.no_grad():
    for _ in range(3):
      model.encode_decode(img, metas)
    start = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
      for _ in range(args.repeat):
        model.encode_decode(img, metas)
    wall = (time.perf_counter() - start) / args.repeat
  by_op = collections.Counter()
  for item in prof.key_averages():
    by_op[item.key] += item.self_cpu_time_total / 1e3 / args.repeat
  report("mmseg", wall, by_op, collections.Counter(), {})


def report(side, wall, by_kind, by_op, kinds):
  total = sum(by_kind.values())
  print(f"{side}: {wall * 1e3:.1f} ms per call (profiled, wall); op time summed {total:.1f} ms")
  for kind, ms in by_kind.most_common(14):
    print(f"  {ms:8.1f} ms  {100 * ms / total:5.1f}%  {kind}")
  if by_op:
    print("  heaviest instructions:")
    for name, ms in by_op.most_common(8):
      print(f"  {ms:8.1f} ms  {kinds[name]:24s} {name}  {OP_NAMES.get(name, '')[-110:]}")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("config")
  parser.add_argument("--side", choices=["segjax", "mmseg"], default="segjax")
  parser.add_argument("--shape", type=int, nargs=2, default=[512, 1024], metavar=("H", "W"))
  parser.add_argument("--repeat", type=int, default=5)
  args = parser.parse_args(argv)
  (profile_segjax if args.side == "segjax" else profile_mmseg)(args)


if __name__ == "__main__":
  main()
