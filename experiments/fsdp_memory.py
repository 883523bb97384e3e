"""Per-device memory of SETR ViT-L's train step with AdamW on 8 devices: fsdp=1 (parameters and
optimizer state replicated) vs fsdp=8 (sharded, ``config.mesh.fsdp``).

Nothing is initialised or run: the train state and the batch are ``jax.ShapeDtypeStruct``s
carrying the loop's shardings (``loop.state_shardings``), the step is the loop's
(``loop.jit_train_step``), lowered and compiled for them; XLA's ``memory_analysis()`` of the
compiled per-device program gives its argument, output, aliased (donated state) and temporary
bytes. Needs 8 devices; on a CPU host force them:

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python experiments/fsdp_memory.py \\
      [--config configs/mmseg.py:setr/setr_vit-large_naive_8x1_768x768_80k_cityscapes.py] \\
      [--crop 768] [--per-device 1]

The config's optimizer is replaced by AdamW (lr 6e-5, weight decay 0.01) with its paramwise
multipliers kept; ``--crop`` and ``--per-device`` (images per device) set the batch.
"""
import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from segjax import sharding  # noqa: E402
from segjax.config import load_config, to_plain  # noqa: E402
from segjax.models import build_segmentor, init_variables  # noqa: E402
from segjax.train import loop, optim  # noqa: E402

SETR_L = "configs/mmseg.py:setr/setr_vit-large_naive_8x1_768x768_80k_cityscapes.py"
MB = 2**20


def device_bytes(tree) -> int:
  """Bytes of ``tree``'s shards on one device (every device holds the same amount here)."""
  return sum(int(np.prod(a.sharding.shard_shape(a.shape))) * a.dtype.itemsize
             for a in jax.tree.leaves(tree))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default=SETR_L)
  parser.add_argument("--crop", type=int, default=768)
  parser.add_argument("--per-device", type=int, default=1)
  args = parser.parse_args()
  if jax.device_count() != 8:
    raise SystemExit(f"{jax.device_count()} devices; run with "
                     "XLA_FLAGS=--xla_force_host_platform_device_count=8")
  config = load_config(args.config)
  config.optimizer = dict(config.optimizer.to_dict(), type="AdamW", lr=6e-5, betas=(0.9, 0.999),
                          weight_decay=0.01)
  model = build_segmentor(to_plain(config.model))
  rng = jax.random.PRNGKey(0)
  param_shapes = jax.eval_shape(lambda r: init_variables(model, r)["params"], rng)
  tx, schedule = optim.build_optimizer(config, param_shapes)
  n = jax.device_count() * args.per_device
  print(f"{args.config}  AdamW  batch {n} ({args.per_device}/device) x {args.crop}x{args.crop}  "
        f"{jax.device_count()} {jax.devices()[0].platform} devices")
  print(f"{'mesh':<18}{'params':>9}{'opt state':>11}{'argument':>10}{'output':>9}{'alias':>9}"
        f"{'temp':>9}{'peak':>9}   MiB per device  (compile s)")
  for fsdp in (1, 8):
    mesh = sharding.make_mesh({"data": -1, "fsdp": fsdp})
    abstract, state_sharding = loop.state_shardings(model, tx, rng, mesh)
    batch_sharding = sharding.batch_sharding(mesh)
    batch = {"img": jax.ShapeDtypeStruct((n, args.crop, args.crop, 3), jnp.float32,
                                         sharding=batch_sharding),
             "gt_semantic_seg": jax.ShapeDtypeStruct((n, args.crop, args.crop), jnp.int32,
                                                     sharding=batch_sharding)}
    start = time.time()
    step = loop.jit_train_step(model, tx, schedule, mesh, state_sharding,
                               jnp.dtype(config.compute_dtype))
    memory = step.lower(abstract, batch).compile().memory_analysis()
    seconds = time.time() - start
    peak = (memory.argument_size_in_bytes + memory.output_size_in_bytes
            - memory.alias_size_in_bytes + memory.temp_size_in_bytes)
    row = [device_bytes(abstract.params), device_bytes(abstract.opt_state),
           memory.argument_size_in_bytes, memory.output_size_in_bytes, memory.alias_size_in_bytes,
           memory.temp_size_in_bytes, peak]
    print(f"{str(dict(mesh.shape)):<18}" + "".join(f"{v / MB:>{w}.0f}" for v, w in zip(
        row, (9, 11, 10, 9, 9, 9, 9))) + f"   ({seconds:.0f})", flush=True)


if __name__ == "__main__":
  main()
