"""Device mesh and shardings. Single device, many devices and many hosts differ only here.

The batch is split over the ``data`` axis; parameters are replicated. BatchNorm statistics under
jit over a batch-sharded array are computed over the global batch (mmseg's SyncBN).
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


# Axes the batch is split over (data parallelism); parameters are replicated over every axis.
BATCH_AXES = ("data", "fsdp")


def mesh_shape(axes, num_devices: int) -> dict:
  """Axis name -> size for ``num_devices``: ``axes`` in order, at most one -1 (the rest)."""
  axes = dict(axes or {"data": -1})
  known = int(np.prod([n for n in axes.values() if n != -1]))
  sizes = {k: (num_devices // known if n == -1 else n) for k, n in axes.items()}
  if list(axes.values()).count(-1) > 1 or int(np.prod(list(sizes.values()))) != num_devices:
    raise ValueError(f"mesh {axes} does not fit {num_devices} devices (one axis may be -1)")
  unsupported = [k for k, n in sizes.items() if k not in BATCH_AXES and n > 1]
  if unsupported:
    raise ValueError(f"mesh axes {unsupported} > 1: only data parallelism ({BATCH_AXES}) is implemented")
  return sizes


def make_mesh(axes=None, local: bool = False) -> Mesh:
  """A mesh over all devices (training, ``axes`` from ``config.mesh``, default ``{"data": -1}``)
  or this process's devices (``local``: per-host evaluation, one ``data`` axis). The batch is
  split over ``data`` (and ``fsdp``); parameter sharding over further axes (``model``) is not
  implemented, so those must have size 1."""
  devices = jax.local_devices() if local else jax.devices()
  sizes = mesh_shape({"data": -1} if local else axes, len(devices))
  return Mesh(np.asarray(devices).reshape(tuple(sizes.values())), tuple(sizes))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(tuple(a for a in mesh.axis_names if a in BATCH_AXES)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local: dict, mesh: Mesh) -> dict:
  """Host-local numpy batch -> global arrays sharded over the ``data`` axis."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def local_batch(local: dict, mesh: Mesh) -> dict:
  """Host-local numpy batch -> arrays sharded over a process-local mesh."""
  return {k: jax.device_put(np.asarray(v), batch_sharding(mesh)) for k, v in local.items()}
