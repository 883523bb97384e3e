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

from typing import Iterator

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
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return ds.batch(host_batch_size, drop_remainder=True)


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
