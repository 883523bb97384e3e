"""Datasets beyond one machine: a segjax dataset packed into TFDS array_record shards.

``pack`` writes the image and label files of each split byte for byte (no re-encoding) into a
tensorflow-datasets folder (``<out>/segjax_packed/1.0.0``: ``dataset_info.json``,
``features.json``, ``*.array_record-NNNNN-of-MMMMM``) together with the dataset spec (classes,
palette, ignore_index, reduce_zero_label). No TensorFlow is needed to write or read it:
``tfds.builder_from_directory(path).as_data_source(split)`` gives random access, and
``PackedDataset`` (``segjax.data.datasets``) runs the usual pipeline on it, so a packed dataset
trains exactly like the folder it came from. Copy the folder to shared or cloud storage
(anything ``etils.epath`` opens, e.g. ``gs://``) for multi-host jobs.
"""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np
import tensorflow_datasets as tfds

VERSION = "1.0.0"


def _features():
  # Encoded bytes as they are on disk: lossless, and decoded by the same cv2/PIL calls as files.
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=(), dtype=np.object_),
      "segmentation_mask": tfds.features.Tensor(shape=(), dtype=np.object_),
      "file_name": tfds.features.Text(),
      "seg_map": tfds.features.Text(),
  })


def _records(dataset):
  """(key, example) for every record of a folder dataset (Repeat/Concat wrappers resolved)."""
  for i in range(len(dataset)):
    ds, j = dataset.locate(i)
    image = ds.file_bytes(j, "img")
    label = ds.file_bytes(j, "seg")
    if image is None or label is None:
      raise FileNotFoundError(f"cannot pack record {i}: {ds.file_name(j, 'img')} or "
                              f"{ds.file_name(j, 'seg')} is missing")
    yield i, {"image": image, "segmentation_mask": label, "file_name": ds.img_infos[j]["filename"],
              "seg_map": ds.img_infos[j]["ann"]["seg_map"]}


class SegjaxPacked(tfds.core.GeneratorBasedBuilder):
  """The TFDS builder behind ``pack``; its splits are the datasets given to it."""
  VERSION = tfds.core.Version(VERSION)

  def __init__(self, splits: Mapping | None = None, spec: Mapping | None = None, **kwargs):
    self._splits, self._spec = splits or {}, spec or {}
    super().__init__(**kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=_features(),
                                 metadata=tfds.core.MetadataDict(self._spec),
                                 description="A segjax dataset packed by segjax.data.packed.pack")

  def _split_generators(self, dl_manager):
    del dl_manager
    return {name: self._generate_examples(ds) for name, ds in self._splits.items()}

  def _generate_examples(self, dataset):
    yield from _records(dataset)


def pack(splits: Mapping[str, object], out_dir: str) -> str:
  """Write ``{split name: dataset}`` to ``out_dir``; returns the folder a PackedDataset reads."""
  first = next(iter(splits.values()))
  spec = dict(classes=list(first.CLASSES), palette=[list(map(int, c)) for c in first.PALETTE],
              ignore_index=int(first.ignore_index), reduce_zero_label=bool(first.reduce_zero_label),
              label_map={str(k): int(v) for k, v in first.label_map.items()},
              sources={name: ds.name for name, ds in splits.items()})
  builder = SegjaxPacked(splits=splits, spec=spec, data_dir=out_dir, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return str(builder.data_dir)


def open_split(path: str, split: str):
  """(random-access source of records, the packed dataset spec)."""
  if not os.path.exists(os.path.join(path, "dataset_info.json")) and "://" not in path:
    raise FileNotFoundError(f"{path} is not a packed dataset (no dataset_info.json); write one with "
                            "python tools/pack_dataset.py CONFIG OUT_DIR")
  builder = tfds.builder_from_directory(path)
  if split not in builder.info.splits:
    raise KeyError(f"{path} has no split {split!r}; it has {sorted(builder.info.splits)}")
  return builder.as_data_source(split=split), dict(builder.info.metadata)
