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


def make_mesh(axis_name: str = "data", local: bool = False) -> Mesh:
  """All devices (training), or this process's devices only (``local``: per-host evaluation)."""
  return Mesh(np.asarray(jax.local_devices() if local else jax.devices()), (axis_name,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(mesh.axis_names[0]))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local: dict, mesh: Mesh) -> dict:
  """Host-local numpy batch -> global arrays sharded over the ``data`` axis."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def local_batch(local: dict, mesh: Mesh) -> dict:
  """Host-local numpy batch -> arrays sharded over a process-local mesh."""
  return {k: jax.device_put(np.asarray(v), batch_sharding(mesh)) for k, v in local.items()}
