"""grain loaders: files -> pipeline -> host-local batches.

Training: an infinite shuffled ``IndexSampler`` sharded by JAX process, the mmseg pipeline as a
``RandomMapTransform`` (its generator is derived by grain from the seed and the record, so the
augmentation of an image does not depend on the number of workers), batches of
``samples_per_gpu x local devices``. The iterator's state is checkpointed with the train state, so
a resumed run continues with the next unseen batch.

Evaluation: each process takes every ``process_count``-th image; batches are padded to a fixed
size with ignore-only labels, so every host runs the same number of steps and padding adds no area.
"""
from __future__ import annotations

from typing import Iterator

import grain.python as grain
import jax
import numpy as np

from segjax.data.datasets import CustomDataset


class _IndexSource(grain.RandomAccessDataSource):
  """Record ``i`` is the index ``i``; the pipeline transform loads the files."""

  def __init__(self, n: int, name: str):
    self._n = n
    self._name = name

  def __repr__(self) -> str:
    # grain compares this with the checkpoint's on restore: a different dataset is an error.
    return f"_IndexSource(n={self._n}, dataset={self._name!r})"

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, index: int) -> int:
    return int(index)


def _to_example(results: dict, index: int) -> dict:
  img = results["img"]
  if img.ndim == 2:
    img = img[..., None]
  return {"img": np.asarray(img, np.float32),
          "gt_semantic_seg": np.asarray(results["gt_semantic_seg"], np.int32),
          "index": np.int32(index)}


class _Pipeline(grain.RandomMapTransform):
  def __init__(self, dataset: CustomDataset):
    self.dataset = dataset

  def random_map(self, index, rng: np.random.Generator):
    return _to_example(self.dataset.prepare(int(index), rng), index)


def train_loader(dataset: CustomDataset, host_batch_size: int, seed: int, worker_count: int = 0):
  """Infinite grain DataLoader over ``dataset``; iterate it with ``iter(loader)``."""
  sampler = grain.IndexSampler(len(dataset), shard_options=grain.ShardByJaxProcess(drop_remainder=True),
                               shuffle=True, num_epochs=None, seed=seed)
  return grain.DataLoader(data_source=_IndexSource(len(dataset), dataset.img_dir), sampler=sampler,
                          operations=[_Pipeline(dataset), grain.Batch(host_batch_size, drop_remainder=True)],
                          worker_count=worker_count)


def eval_batches(dataset: CustomDataset, host_batch_size: int) -> Iterator[dict]:
  """This process's share of ``dataset`` in fixed-size batches; ``valid`` marks real images."""
  proc, nproc = jax.process_index(), jax.process_count()
  indices = list(range(proc, len(dataset), nproc))
  per_host = -(-len(dataset) // nproc)
  num_batches = -(-per_host // host_batch_size)
  indices += [-1] * (num_batches * host_batch_size - len(indices))
  template = None
  for b in range(num_batches):
    examples = []
    for i in indices[b * host_batch_size:(b + 1) * host_batch_size]:
      if i >= 0:
        ex = _to_example(dataset.prepare(i, np.random.default_rng(0)), i)
        template = template or ex
        examples.append(ex)
      else:
        examples.append(None)
    if template is None:  # this host has no image at all in this batch
      template = _to_example(dataset.prepare(0, np.random.default_rng(0)), 0)
    filler = {"img": np.zeros_like(template["img"]),
              "gt_semantic_seg": np.full_like(template["gt_semantic_seg"], dataset.ignore_index),
              "index": np.int32(-1)}
    examples = [e if e is not None else filler for e in examples]
    shapes = {e["img"].shape for e in examples}
    if len(shapes) > 1:
      raise ValueError(f"evaluation batch has images of different shapes {sorted(shapes)}; use a "
                       "test pipeline that resizes/pads to one size or samples_per_gpu=1")
    yield {k: np.stack([e[k] for e in examples]) for k in filler}
