"""Device mesh and shardings. Single device, many devices and many hosts differ only here.

The batch is split over the ``data`` and ``fsdp`` axes. Parameters and optimizer state are
replicated over ``data`` and, when the mesh has an ``fsdp`` axis of size > 1, sharded over it
(``state_shardings``): fully sharded data parallelism as big_vision's ``fsdp`` rule, the
collectives (parameter all-gathers, gradient sums) inserted by XLA from the ``jax.jit``
shardings. BatchNorm
statistics under jit over a batch-sharded array are computed over the global batch (mmseg's SyncBN).
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def initialize_distributed(config) -> None:
  """``jax.distributed.initialize`` for multi-host runs (auto-detects SLURM, TPU pods, ...);
  explicit coordinator/process settings come from ``config.distributed``."""
  dist = config.get("distributed")
  if not dist or not dist.get("enabled", False):
    return
  kwargs = {k: dist[k] for k in ("coordinator_address", "num_processes", "process_id",
                                  "heartbeat_timeout_seconds") if dist.get(k) is not None}
  jax.distributed.initialize(**kwargs)


# Axes the batch is split over; the train state is sharded over FSDP_AXIS, replicated over the rest.
BATCH_AXES = ("data", "fsdp")
FSDP_AXIS = "fsdp"
# State leaves smaller than this stay replicated under fsdp: norm scales, biases and BN statistics
# (ViT-L's largest vector, 4096 floats, is 16 KiB), where sharding saves next to nothing and costs
# a collective each. Every ViT-L matrix and every 3x3 convolution of 64+ channels is larger.
FSDP_MIN_BYTES = 2**16


def mesh_shape(axes, num_devices: int) -> dict:
  """Axis name -> size for ``num_devices``: ``axes`` in order, at most one -1 (the rest)."""
  axes = dict(axes or {"data": -1})
  known = int(np.prod([n for n in axes.values() if n != -1]))
  sizes = {k: (num_devices // known if n == -1 else n) for k, n in axes.items()}
  if list(axes.values()).count(-1) > 1 or int(np.prod(list(sizes.values()))) != num_devices:
    raise ValueError(f"mesh {axes} does not fit {num_devices} devices (one axis may be -1)")
  unsupported = [k for k, n in sizes.items() if k not in BATCH_AXES and n > 1]
  if unsupported:
    raise ValueError(f"mesh axes {unsupported} > 1: only data parallelism and fsdp ({BATCH_AXES}) "
                     "are implemented")
  return sizes


def make_mesh(axes=None, local: bool = False) -> Mesh:
  """A mesh over all devices (training, ``axes`` from ``config.mesh``, default ``{"data": -1}``)
  or this process's devices (``local``: per-host evaluation, one ``data`` axis). The batch is
  split over ``data`` and ``fsdp``, the train state over ``fsdp``; sharding over further axes
  (``model``) is not implemented, so those must have size 1."""
  devices = jax.local_devices() if local else jax.devices()
  sizes = mesh_shape({"data": -1} if local else axes, len(devices))
  return Mesh(np.asarray(devices).reshape(tuple(sizes.values())), tuple(sizes))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(tuple(a for a in mesh.axis_names if a in BATCH_AXES)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def fsdp_spec(shape, nbytes: int, fsdp_size: int) -> P:
  """The partition of one state leaf: its largest dimension divisible by ``fsdp_size`` (the last
  of equals) split over ``fsdp``; replicated when ``fsdp_size`` is 1, the leaf is smaller than
  ``FSDP_MIN_BYTES`` or no dimension divides."""
  divisible = [i for i, n in enumerate(shape) if n % fsdp_size == 0]
  if fsdp_size == 1 or nbytes < FSDP_MIN_BYTES or not divisible:
    return P()
  axis = max(divisible, key=lambda i: (shape[i], i))
  return P(*[FSDP_AXIS if i == axis else None for i in range(len(shape))])


def state_shardings(abstract_tree, mesh: Mesh):
  """A ``NamedSharding`` per leaf of ``abstract_tree`` (arrays or ``jax.ShapeDtypeStruct``s of
  the train state): ``fsdp_spec`` over the mesh's ``fsdp`` axis, replicated without one. An
  optimizer moment gets its parameter's sharding (the rule sees only shape and size)."""
  fsdp_size = dict(mesh.shape).get(FSDP_AXIS, 1)
  return jax.tree.map(lambda a: NamedSharding(mesh, fsdp_spec(
      a.shape, int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize, fsdp_size)), abstract_tree)


def gather_sharded(tree):
  """``tree`` with every sharded ``jax.Array`` leaf gathered whole (replicated over its mesh, on
  every host); replicated leaves and non-arrays are returned as they are, not copied."""
  leaves, treedef = jax.tree.flatten(tree)
  split = [i for i, a in enumerate(leaves)
           if isinstance(a, jax.Array) and not a.is_fully_replicated]
  if split:
    mesh = leaves[split[0]].sharding.mesh
    whole = jax.jit(lambda xs: xs, out_shardings=replicated(mesh))([leaves[i] for i in split])
    for i, a in zip(split, whole):
      leaves[i] = a
  return jax.tree.unflatten(treedef, leaves)


def global_batch(local: dict, mesh: Mesh) -> dict:
  """Host-local numpy batch -> global arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def local_batch(local: dict, mesh: Mesh) -> dict:
  """Host-local numpy batch -> arrays sharded over a process-local mesh."""
  return {k: jax.device_put(np.asarray(v), batch_sharding(mesh)) for k, v in local.items()}
