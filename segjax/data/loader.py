"""grain loaders: files -> pipeline -> host-local batches.

Training: a grain dataset over this host's share of the images, reshuffled every epoch, the mmseg
pipeline as a ``RandomMapTransform`` (its generator is derived by grain from the seed and the
stream position), worker processes, then batches of ``samples_per_gpu x local devices``, so
neither the augmentation nor the batches depend on the number of workers. The iterator's state
is checkpointed with the train state, so a resumed run continues with the next unseen batch.

Evaluation: each process takes every ``process_count``-th image and batches images of equal
shape; padding entries carry ignore-only labels and add no area.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Iterator

import grain.python as grain
from absl import flags
import jax
import numpy as np

from segjax.data.datasets import CustomDataset
from segjax.data.transforms import DataError


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
    example = _to_example(self.dataset.prepare(int(index), rng), index)
    seg = example["gt_semantic_seg"]
    ds, j = self.dataset.locate(int(index))
    bad = (seg >= ds.num_classes) & (seg != ds.ignore_index)
    if bad.any():  # would silently corrupt the loss; costs one pass over the label
      raise DataError(f"{ds.img_infos[j]['ann']['seg_map']} in {ds.img_infos[j]['ann']['seg_prefix']}: label values "
                      f"{np.unique(seg[bad]).tolist()} outside [0, {ds.num_classes}) and not "
                      f"ignore_index {ds.ignore_index}")
    return example


def train_loader(dataset: CustomDataset, host_batch_size: int, seed: int,
                 worker_count: int = 0) -> grain.IterDataset:
  """Infinite batches of this host's share of ``dataset``; iterate with ``iter(...)``.

  Each host takes every ``process_count``-th image (equal counts, the remainder dropped), shuffled
  anew every epoch from ``seed``; each image's augmentation is seeded by ``seed`` and its position
  in the stream. ``worker_count`` processes run the pipeline and the batches are formed after
  them, so the batches are the same for any number of workers (the iterator's state, which orbax
  checkpoints, is specific to it)."""
  n, hosts = len(dataset), jax.process_count()
  ds = (grain.MapDataset.range(n)
        .slice(slice(jax.process_index(), n - n % hosts, hosts))
        .shuffle(seed=seed)
        .repeat(None)
        .random_map(_Pipeline(dataset), seed=seed)
        .to_iter_dataset())
  if worker_count:
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()  # grain's workers read absl flags (notebooks/tests never parse them)
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count),
                        worker_init_fn=_exit_with_parent)
  return ds.batch(host_batch_size, drop_remainder=True)


def _exit_with_parent(worker_index: int, worker_count: int) -> None:
  """Runs in each grain worker: end the worker once the process that started it is gone.

  grain's workers are spawned processes; after a SIGKILL of the trainer they would live on under
  init (each holding the dataset and shared memory, and keeping multiprocessing's resource
  tracker alive). Linux's PR_SET_PDEATHSIG is not used because it fires when the *thread* that
  spawned the worker ends, and grain starts workers from whichever thread first pulls a batch; a
  watchdog on the parent pid holds for any thread and any OS."""
  del worker_index, worker_count
  parent = os.getppid()

  def watch():
    while os.getppid() == parent:
      time.sleep(0.5)
    os._exit(1)  # no cleanup to run: the parent that would consume anything is gone

  threading.Thread(target=watch, name="segjax-exit-with-parent", daemon=True).start()


def elements_consumed(state: dict) -> int:
  """How many examples a grain train iterator has delivered, from its state: ``next_index`` of
  the serial pipeline, or the sum over ``mp_prefetch``'s per-worker positions (each worker's
  ``next_index`` counts its own slice)."""
  if "next_index" in state:
    return int(state["next_index"])
  try:
    return sum(int(s["next_index"]) for s in state["iterators_in_use_states"])
  except (KeyError, TypeError) as e:
    raise ValueError(f"unrecognised data-iterator state {state} (written by another grain "
                     "version?)") from e


def state_at(elements: int, worker_count: int) -> dict:
  """The grain state of ``train_loader(..., worker_count)`` after ``elements`` examples: the
  inverse of ``elements_consumed``. ``mp_prefetch`` interleaves its workers round robin, worker
  ``i`` reading examples ``i, i + W, ...`` (tests check this against grain's own states)."""
  if worker_count == 0:
    return {"next_index": elements}
  return {"next_index_in_cycle": elements % worker_count if worker_count > 1 else 0,
          "next_index_in_datasets": worker_count,
          "iterators_in_use_indices": list(range(worker_count)),
          "iterators_in_use_states": [{"next_index": (elements - i + worker_count - 1) // worker_count}
                                      for i in range(worker_count)],
          "exhausted": [0] * worker_count,
          "future_states": {}}


class TrainIterator(grain.DatasetIterator):
  """``iter(train_loader(...))`` whose checkpointed state restores under any worker count.

  The batches do not depend on the number of workers, but grain's state does (one position per
  worker); ``set_state`` takes a state written with any count and resumes at the same example."""

  def __init__(self, dataset: CustomDataset, host_batch_size: int, seed: int, worker_count: int = 0):
    super().__init__(iter(train_loader(dataset, host_batch_size, seed, worker_count)))
    self.worker_count = worker_count

  def __next__(self) -> dict:
    return next(self._parent)

  def get_state(self) -> dict[str, Any]:
    return self._parent.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state_at(elements_consumed(state), self.worker_count))


def eval_batches(dataset: CustomDataset, host_batch_size: int) -> Iterator[dict]:
  """This process's share of ``dataset`` (every ``process_count``-th image) in batches of
  ``host_batch_size`` images of one shape; short batches are filled with ignore-only labels,
  which add no area. Hosts may run different numbers of batches (evaluation is per host)."""
  indices = range(jax.process_index(), len(dataset), jax.process_count())
  pending: dict[tuple, list] = {}
  for i in indices:
    results = dataset.prepare(i, np.random.default_rng(0))
    if isinstance(results, list):
      raise ValueError("evaluation during training takes one augmentation per image; use "
                       "segjax.apis.inference_segmentor(scales=..., flip=...) for TTA")
    if "gt_semantic_seg" not in results:  # mmseg test pipelines do not load labels
      ds, j = dataset.locate(i)
      results["gt_semantic_seg"] = ds.get_gt_seg_map(j)
    ex = _to_example(results, i)
    key = (ex["img"].shape, ex["gt_semantic_seg"].shape)
    pending.setdefault(key, []).append(ex)
    if len(pending[key]) == host_batch_size:
      yield _stack(pending.pop(key), host_batch_size, dataset.ignore_index)
  for examples in pending.values():
    yield _stack(examples, host_batch_size, dataset.ignore_index)


def _stack(examples: list, size: int, ignore_index: int) -> dict:
  filler = {"img": np.zeros_like(examples[0]["img"]),
            "gt_semantic_seg": np.full_like(examples[0]["gt_semantic_seg"], ignore_index),
            "index": np.int32(-1)}
  examples = examples + [filler] * (size - len(examples))
  return {k: np.stack([e[k] for e in examples]) for k in filler}
