"""Run in a subprocess with 8 forced host devices by test_distributed.py: one training step over
an 8-device batch-sharded mesh vs the same step on one device. Prints the max differences as JSON."""
import json
import os
import sys

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

sys.path[:0] = [sys.argv[1], os.path.join(sys.argv[1], "tests")]
from segjax import sharding  # noqa: E402
from test_train import tiny_config, tiny_step  # noqa: E402


def main():
  c = tiny_config(None, total_iters=1000)
  c.model.decode_head.dropout_ratio = c.model.auxiliary_head.dropout_ratio = 0.0
  state, step = tiny_step(c)
  rng = np.random.default_rng(0)
  batch = {"img": rng.normal(size=(8, 48, 48, 3)).astype(np.float32),
           "gt_semantic_seg": rng.integers(0, 6, size=(8, 48, 48)).astype(np.int32)}
  results = {}
  meshes = {1: Mesh(np.asarray(jax.devices()[:1]), ("data",)),  # one device
            8: sharding.make_mesh({"data": -1}),  # the default config mesh
            "4x2": sharding.make_mesh({"data": 4, "fsdp": 2})}  # batch over both axes
  for n, mesh in meshes.items():
    repl, data = NamedSharding(mesh, P()), sharding.batch_sharding(mesh)
    s = jax.device_put(state, repl)
    b = {k: jax.device_put(v, data) for k, v in batch.items()}
    new, logs = jax.jit(step, out_shardings=(repl, repl))(s, b)
    results[n] = (jax.device_get(new), float(logs["loss"]))
  diff = lambda a, b: max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
                          for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  one, eight = results[1][0], results[8][0]
  print(json.dumps({"devices": jax.device_count(), "loss": [results[1][1], results[8][1]],
                    "params": diff(one.params, eight.params),
                    "batch_stats": diff(one.batch_stats, eight.batch_stats),
                    "params_4x2": diff(one.params, results["4x2"][0].params),
                    "param_change": diff(one.params, jax.device_get(state.params))}))


if __name__ == "__main__":
  main()
