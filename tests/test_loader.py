"""The grain loader: a run resumed mid-epoch (through the orbax checkpoint) sees exactly the
batches an uninterrupted run sees, and augmentation does not depend on the number of workers."""
import itertools

import jax.numpy as jnp
import numpy as np

from segjax.data import datasets, loader
from segjax.train import checkpoint
from test_train import tiny_config


def _batches(it, n):
  return [{k: np.array(v) for k, v in b.items()} for b in itertools.islice(it, n)]


def test_resumed_mid_epoch_sees_the_same_batches(tiny_dataset, tmp_path):
  c = tiny_config(tiny_dataset)
  train_set = datasets.build_split(c.data, "train")  # 16 images, batches of 4: 4 per epoch
  full = _batches(iter(loader.train_loader(train_set, 4, seed=7)), 7)  # crosses an epoch
  assert sorted(np.concatenate([b["index"] for b in full[:4]]).tolist()) == list(range(16))

  it = iter(loader.train_loader(train_set, 4, seed=7))
  first = _batches(it, 3)  # stop after 3 batches, mid-epoch
  manager = checkpoint.make_manager(str(tmp_path), None)
  checkpoint.save(manager, 3, {"step": jnp.zeros(())}, it, force=True)
  manager.wait_until_finished()

  resumed = iter(loader.train_loader(train_set, 4, seed=7))
  _, step = checkpoint.restore_latest(checkpoint.make_manager(str(tmp_path), None),
                                      {"step": jnp.zeros(())}, resumed)
  assert step == 3
  rest = _batches(resumed, 4)
  for a, b in zip(first + rest, full):
    np.testing.assert_array_equal(a["index"], b["index"])
    np.testing.assert_array_equal(a["img"], b["img"])
    np.testing.assert_array_equal(a["gt_semantic_seg"], b["gt_semantic_seg"])


def test_batches_do_not_depend_on_worker_count(tiny_dataset):
  train_set = datasets.build_split(tiny_config(tiny_dataset).data, "train")
  serial = _batches(iter(loader.train_loader(train_set, 4, seed=1)), 3)
  workers = _batches(iter(loader.train_loader(train_set, 4, seed=1, worker_count=2)), 3)
  for a, b in zip(serial, workers):
    np.testing.assert_array_equal(a["index"], b["index"])
    np.testing.assert_array_equal(a["img"], b["img"])
