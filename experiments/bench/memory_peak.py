"""What is alive at the peak of XLA's buffer plan for a config's inference or train step.

  python experiments/bench/memory_peak.py configs/mmseg.py:danet/danet_r50-d8_512x1024_40k_cityscapes.py \
      --mode infer --shape 512 1024
  python experiments/bench/memory_peak.py CONFIG --mode train --batch 2 --shape 512 512

Compiles (nothing runs) with ``--xla_dump_to`` into a temporary directory, prints
``compiled.memory_analysis()`` and the largest buffers of the ``Live ranges at N (peak)`` list
of the program's ``*-live-range.txt`` (XLA's own plan; the scratch a run allocates).
"""
import argparse
import functools
import glob
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

DUMP = tempfile.mkdtemp(prefix="segjax_xla_dump_")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={DUMP}").strip()

from segjax import xla_flags  # noqa: E402

xla_flags.apply_defaults()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from segjax import apis  # noqa: E402
from segjax.config import load_config, to_plain  # noqa: E402


def compile_program(args):
  config = load_config(args.config)
  if args.mode == "infer":
    segmentor = apis.init_segmentor(config)
    x = np.zeros((args.batch, *args.shape, 3), np.float32)
    return segmentor.inference_logits.lower(segmentor.variables, x).compile()
  from segjax.models import build_segmentor, init_variables
  from segjax.train import loop, optim
  model_cfg = to_plain(config.model)
  model = build_segmentor(model_cfg)
  param_shapes = jax.eval_shape(lambda r: init_variables(model, r)["params"], jax.random.PRNGKey(0))
  tx, schedule = optim.build_optimizer(config, param_shapes)
  state = loop.create_train_state(model, tx, jax.random.PRNGKey(0))
  batch = {"img": np.zeros((args.batch, *args.shape, 3), np.float32),
           "gt_semantic_seg": np.zeros((args.batch, *args.shape), np.int32)}
  step = jax.jit(functools.partial(loop.train_step, model=model, tx=tx, schedule=schedule), donate_argnums=0)
  return step.lower(state, batch).compile()


def peak_buffers(path):
  """(peak bytes line, [(bytes, line)]) from a live-range dump's ``(peak)`` section."""
  lines = open(path).read().splitlines()
  start = next(i for i, line in enumerate(lines) if "(peak)" in line)
  buffers = []
  for line in lines[start + 1:]:
    if not line.strip():
      break
    m = re.match(r"\s*(\S+): (\d+) bytes", line)  # "name{}: N bytes (cumulative: M bytes)"
    if m:
      buffers.append((int(m.group(2)), m.group(1)))
  return lines[start], sorted(buffers, reverse=True)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("config")
  parser.add_argument("--mode", choices=["infer", "train"], default="infer")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--shape", type=int, nargs=2, default=[512, 1024], metavar=("H", "W"))
  parser.add_argument("--top", type=int, default=15)
  args = parser.parse_args(argv)
  compiled = compile_program(args)
  print(compiled.memory_analysis())
  # init and small helpers are dumped too; the program is the jitted inference_logits / train_step
  program = "inference_logits" if args.mode == "infer" else "train_step"
  dump = glob.glob(os.path.join(DUMP, f"*jit_{program}*-live-range.txt"))[0]
  header, buffers = peak_buffers(dump)
  print(f"{os.path.basename(dump)}: {header.strip()}, {sum(b for b, _ in buffers) / 2**20:.1f} MiB alive")
  for size, line in buffers[:args.top]:
    print(f"  {size / 2**20:9.1f} MiB  {line[:220]}")
  print(f"dump: {DUMP} (the file's 'Stack trace breakdown for peak usage' names the jax source scopes)")


if __name__ == "__main__":
  main()
