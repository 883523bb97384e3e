"""Run in a subprocess with 8 forced host devices by test_distributed.py: one training step over
an 8-device batch-sharded mesh vs the same step on one device. Prints the max differences as JSON."""
import functools
import json
import sys

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

sys.path.insert(0, sys.argv[1])
from configs import pspnet_synthetic  # noqa: E402
from segjax.config import to_plain  # noqa: E402
from segjax.models import build_segmentor  # noqa: E402
from segjax.train import loop, optim  # noqa: E402


def main():
  c = pspnet_synthetic.get_config()
  m = c.model
  m.backbone.stem_channels = m.backbone.base_channels = 8
  m.decode_head.in_channels, m.decode_head.channels = 64, 16
  m.auxiliary_head.in_channels, m.auxiliary_head.channels = 32, 8
  m.decode_head.dropout_ratio = m.auxiliary_head.dropout_ratio = 0.0
  model_cfg = to_plain(c.model)
  model = build_segmentor(model_cfg)
  tx, schedule = optim.build_optimizer(c)
  state = loop.create_train_state(model, tx, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  batch = {"img": rng.normal(size=(8, 48, 48, 3)).astype(np.float32),
           "gt_semantic_seg": rng.integers(0, 6, size=(8, 48, 48)).astype(np.int32)}
  step = functools.partial(loop.train_step, model=model, tx=tx, schedule=schedule, model_cfg=model_cfg)
  results = {}
  for n in (1, 8):
    mesh = Mesh(np.asarray(jax.devices()[:n]), ("data",))
    repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
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
                    "param_change": diff(one.params, jax.device_get(state.params))}))


if __name__ == "__main__":
  main()
