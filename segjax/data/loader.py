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


def eval_batches(dataset: CustomDataset, host_batch_size: int, labels: bool = True,
                 max_pending: int = 8) -> Iterator[dict]:
  """This process's share of ``dataset`` (every ``process_count``-th image) through its test
  pipeline, in batches of ``host_batch_size`` images whose augmentations have one shape:

  - ``img``: (B, h, w, C), or a tuple of them, one per augmentation of ``MultiScaleFlipAug``;
  - ``gt_semantic_seg``: (B, H, W) labels at the image's original size, read from the label file
    (mmseg scores there, whatever the pipeline resized); ``labels=False``: ignore-only maps of
    the original size, for splits without label files;
  - ``augs``: per augmentation, the (h, w) the image covers before padding and its flip
    direction (None: not flipped); ``index``: dataset indices, -1 for fillers.

  Short batches are filled with ignore-only entries, which add no area. Images of one shape wait
  for a full batch; when more than ``max_pending`` shapes wait (ADE20K's many sizes), the oldest
  goes out short, so memory does not grow with the dataset. Hosts may run different numbers of
  batches (evaluation is per host)."""
  indices = range(jax.process_index(), len(dataset), jax.process_count())
  pending: dict[tuple, list] = {}
  for i in indices:
    results = dataset.prepare(i, np.random.default_rng(0))
    augs = results if isinstance(results, list) else [results]
    metas = [r.get("img_metas", r) for r in augs]  # after Collect, the meta keys are img_metas
    ds, j = dataset.locate(i)
    ori_shape = tuple(metas[0].get("ori_shape", augs[0]["img"].shape)[:2])
    if labels:
      label = np.asarray(ds.get_gt_seg_map(j), np.int32)
      if label.shape != ori_shape:
        raise DataError(f"{ds.file_name(j, 'seg')}: label shape {label.shape} differs from the image "
                        f"{ds.file_name(j, 'img')} shape {ori_shape}")
    else:
      label = np.full(ori_shape, ds.ignore_index, np.int32)
    imgs = [_image(r["img"]) for r in augs]
    aug_meta = tuple((tuple(m.get("img_shape", img.shape)[:2]), m.get("flip_direction") if m.get("flip") else None)
                     for m, img in zip(metas, imgs))
    example = {"img": imgs, "gt_semantic_seg": label, "index": np.int32(i)}
    key = (tuple(img.shape for img in imgs), aug_meta, label.shape)
    pending.setdefault(key, []).append(example)
    if len(pending[key]) == host_batch_size:
      yield _stack_eval(pending.pop(key), aug_meta, host_batch_size, ds.ignore_index)
    elif len(pending) > max_pending:
      oldest = next(iter(pending))
      yield _stack_eval(pending.pop(oldest), oldest[1], host_batch_size, ds.ignore_index)
  for key, examples in pending.items():
    yield _stack_eval(examples, key[1], host_batch_size, dataset.ignore_index)


def _image(img: np.ndarray) -> np.ndarray:
  return np.asarray(img[..., None] if img.ndim == 2 else img, np.float32)


def _stack_eval(examples: list, augs: tuple, size: int, ignore_index: int) -> dict:
  filler = {"img": [np.zeros_like(img) for img in examples[0]["img"]],
            "gt_semantic_seg": np.full_like(examples[0]["gt_semantic_seg"], ignore_index),
            "index": np.int32(-1)}
  examples = examples + [filler] * (size - len(examples))
  imgs = tuple(np.stack([e["img"][a] for e in examples]) for a in range(len(augs)))
  return {"img": imgs[0] if len(imgs) == 1 else imgs,
          "gt_semantic_seg": np.stack([e["gt_semantic_seg"] for e in examples]),
          "index": np.stack([e["index"] for e in examples]), "augs": augs}
