"""fsdp: the train state sharded over the mesh's ``fsdp`` axis. On 8 host devices (a subprocess:
this file's ``main``) each device holds 1/8 of every large parameter and AdamW moment, two steps
equal the data-parallel and the single-device steps, and checkpoints move between the meshes."""
import json
import os
import subprocess
import sys

import jax
import numpy as np

import conftest  # noqa: F401  (puts the repository on sys.path, also in the subprocess)
from segjax.sharding import FSDP_MIN_BYTES


def test_fsdp_shards_state_steps_like_data_parallel_and_checkpoints(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  r = subprocess.run([sys.executable, os.path.abspath(__file__), str(tmp_path)], env=env,
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  out = json.loads(r.stdout.strip().splitlines()[-1])

  # (a) Every leaf of at least FSDP_MIN_BYTES (64 KiB) is split into 8 distinct eighths, one per
  # device; smaller ones stay whole. Those are the 9 weight matrices of 128x128 floats or more
  # (the patch embedding and, per layer, the qkv, output and two MLP matrices) and, of each, the
  # SGD momentum or the two AdamW moments.
  for optimizer, moments in (("sgd", 1), ("adamw", 2)):
    leaves = out["leaves"][optimizer]
    large = [leaf for leaf in leaves if leaf["bytes"] >= FSDP_MIN_BYTES]
    assert len(large) == 9 * (1 + moments), optimizer
    for leaf in leaves:
      is_large = leaf["bytes"] >= FSDP_MIN_BYTES
      assert leaf["shard_bytes"] == [leaf["bytes"] // 8 if is_large else leaf["bytes"]] * 8, leaf
      assert leaf["distinct_shards"] == (8 if is_large else 1), leaf
    total = sum(leaf["bytes"] for leaf in leaves)
    large_bytes = sum(leaf["bytes"] for leaf in large)
    device_bytes = [sum(leaf["shard_bytes"][d] for leaf in leaves) for d in range(8)]
    assert device_bytes == [total - large_bytes + large_bytes // 8] * 8, optimizer
    assert device_bytes[0] < 0.15 * total, optimizer  # 97% of this model's state is in large leaves

  # (b) Two SGD steps: the same loss, parameters, momenta and BatchNorm statistics on one device,
  # on 8 devices data-parallel and on 8 devices fsdp. The meshes differ only in the order of
  # float32 sums (the gradient over 8 shards of the batch, BatchNorm statistics over the global
  # batch), so they agree to a few float32 epsilons of each part's largest magnitude. The two
  # steps move the parameters by far more than that (a wrong gradient scale, such as N times the
  # mean, would show as a difference of the size of the step itself).
  tolerance = 16  # float32 epsilons of the part's largest magnitude
  assert out["param_change"] > 10 * tolerance
  for mesh in ("data8", "fsdp8"):
    d = out["diff"][mesh]
    assert d["loss"] <= tolerance * float(np.finfo(np.float32).eps) * out["loss"], mesh
    for part in ("params", "opt_state", "batch_stats"):
      assert d[part] <= tolerance, (mesh, part, d[part])

  # (c) A checkpoint written under fsdp=8 restores onto fsdp=8 (sharded as saved) and onto the
  # replicated data-parallel mesh, and one written replicated restores sharded: all bitwise equal.
  assert out["checkpoint"] == {"fsdp8->fsdp8": True, "fsdp8->data8": True, "data8->fsdp8": True}
  assert out["gathered_equal"]


# SETR (naive up head) on a 2-layer ViT of width 128: 32 px images, 8 px patches.
_HEAD = dict(type="SETRUPHead", in_channels=128, channels=16, num_classes=6, num_convs=1,
             up_scale=4, kernel_size=1, norm_cfg=dict(type="BN"), dropout_ratio=0.0,
             align_corners=False,
             loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0))
TINY_SETR = dict(
    type="EncoderDecoder",
    backbone=dict(type="VisionTransformer", img_size=(32, 32), patch_size=8, embed_dims=128,
                  num_layers=2, num_heads=2, out_indices=(0, 1), drop_path_rate=0.0,
                  with_cls_token=True, interpolate_mode="bilinear",
                  norm_cfg=dict(type="LN", eps=1e-6)),
    decode_head=dict(_HEAD, in_index=1),
    auxiliary_head=dict(_HEAD, in_index=0, loss_decode=dict(_HEAD["loss_decode"], loss_weight=0.4)),
    train_cfg={}, test_cfg=dict(mode="whole"))


def main(tmp):
  """8 devices: the measurements the test asserts, as one JSON line."""
  from jax.sharding import Mesh
  from segjax import sharding
  from segjax.config import base_config, schedule
  from segjax.models import build_segmentor
  from segjax.train import checkpoint, loop, optim

  c = base_config()  # mmseg's SGD with momentum
  c.update(schedule(1000))
  model = build_segmentor(TINY_SETR)
  tx, schedule_fn = optim.build_optimizer(c)
  rng = jax.random.PRNGKey(0)
  meshes = {"one": Mesh(np.asarray(jax.devices()[:1]), ("data",)),
            "data8": sharding.make_mesh({"data": -1}),
            "fsdp8": sharding.make_mesh({"data": 1, "fsdp": -1})}
  init = jax.device_get(loop.create_train_state(model, tx, rng))
  data = np.random.default_rng(0)
  batches = [{"img": data.normal(size=(8, 32, 32, 3)).astype(np.float32),
              "gt_semantic_seg": data.integers(0, 6, size=(8, 32, 32)).astype(np.int32)}
             for _ in range(2)]
  states, losses, abstracts, leaves = {}, {}, {}, {}
  for name, mesh in meshes.items():
    abstracts[name], shardings = loop.state_shardings(model, tx, rng, mesh)
    step = loop.jit_train_step(model, tx, schedule_fn, mesh, shardings)
    state = jax.device_put(init, shardings)
    if name == "fsdp8":
      leaves["sgd"] = _state_leaves(state, lambda a: [s.data.nbytes for s in a.addressable_shards],
                                    lambda a: [s.index for s in a.addressable_shards])
    for b in batches:
      state, logs = step(state, {k: jax.device_put(v, sharding.batch_sharding(mesh))
                                 for k, v in b.items()})
    states[name], losses[name] = state, float(logs["loss"])

  # AdamW's state, as the loop places it (abstract: the rule sees only shapes).
  adamw = c.copy_and_resolve_references()
  adamw.optimizer = dict(type="AdamW", lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01)
  abstract, _ = loop.state_shardings(model, optim.build_optimizer(adamw)[0], rng, meshes["fsdp8"])
  leaves["adamw"] = _state_leaves(
      abstract, lambda a: [int(np.prod(a.sharding.shard_shape(a.shape))) * a.dtype.itemsize] * 8,
      lambda a: list(a.sharding.devices_indices_map(a.shape).values()))

  host = {name: jax.device_get(s) for name, s in states.items()}
  diff = lambda a, b: max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
                          for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

  def diff_in_eps(a, reference):
    """The largest difference of an array leaf of ``a`` from ``reference``, in units of float32's
    epsilon times the largest magnitude in ``reference`` (scalar counters left out)."""
    pairs = [(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(reference)) if np.ndim(y) > 0]
    scale = max(float(np.abs(y).max()) for _, y in pairs)
    largest = max(float(np.abs(x - y).max()) for x, y in pairs)
    return largest / (float(np.finfo(np.float32).eps) * scale)

  one = host["one"]
  parts = ("params", "opt_state", "batch_stats")
  out = {"leaves": leaves, "loss": losses["one"],
         "param_change": diff_in_eps(init.params, one.params),
         "diff": {name: dict(loss=abs(losses[name] - losses["one"]),
                             **{p: diff_in_eps(getattr(h, p), getattr(one, p)) for p in parts})
                  for name, h in host.items() if name != "one"}}

  # Sharded leaves gathered whole for evaluation (loop.evaluate).
  gathered = sharding.gather_sharded(states["fsdp8"].params)
  out["gathered_equal"] = (all(a.is_fully_replicated for a in jax.tree.leaves(gathered)) and
                           diff(jax.device_get(gathered), host["fsdp8"].params) == 0.0)

  out["checkpoint"] = {}
  for saved, restored in (("fsdp8", "fsdp8"), ("fsdp8", "data8"), ("data8", "fsdp8")):
    manager = checkpoint.make_manager(os.path.join(tmp, saved), None)
    if not manager.all_steps():
      checkpoint.save(manager, 2, states[saved])
      manager.wait_until_finished()
    back, step = checkpoint.restore_latest(manager, abstracts[restored])
    same_sharding = all(a.sharding == t.sharding for a, t in
                        zip(jax.tree.leaves(back), jax.tree.leaves(abstracts[restored])))
    out["checkpoint"][f"{saved}->{restored}"] = (
        step == 2 and same_sharding and diff(jax.device_get(back), host[saved]) == 0.0)
  print(json.dumps(out))


def _state_leaves(state, shard_bytes, shard_indices):
  """Per leaf of the parameters and optimizer state: its bytes, the bytes of its shard on each
  of the 8 devices, and how many distinct pieces of it the devices hold."""
  return [{"name": jax.tree_util.keystr(path), "bytes": int(np.prod(a.shape)) * a.dtype.itemsize,
           "shard_bytes": shard_bytes(a),
           "distinct_shards": len({str(i) for i in shard_indices(a)})}
          for part in (state.params, state.opt_state)
          for path, a in jax.tree_util.tree_flatten_with_path(part)[0]]


if __name__ == "__main__":
  main(sys.argv[1])
