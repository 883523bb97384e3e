"""Dataset converters on small fake archives of the documented layout."""
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from conftest import ROOT


def test_cityscapes_converter_writes_train_ids_and_splits(tmp_path):
  root = tmp_path / "cityscapes"
  ids = np.array([[7, 8, 26, 0], [33, 1, 24, 255]], np.uint8)  # road, sidewalk, car, unlabeled...
  for split, city in (("train", "aachen"), ("val", "lindau")):
    (root / "gtFine" / split / city).mkdir(parents=True)
    (root / "leftImg8bit" / split / city).mkdir(parents=True)
    stem = f"{city}_000000_000019"
    Image.fromarray(ids).save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(
        root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
  r = subprocess.run([sys.executable, "tools/convert_datasets/cityscapes.py", str(root), "--nproc", "2"],
                     cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr
  out = np.array(Image.open(root / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelTrainIds.png"))
  np.testing.assert_array_equal(out, [[0, 1, 13, 255], [18, 255, 11, 255]])
  assert (root / "train.txt").read_text() == "aachen/aachen_000000_000019\n"
  assert (root / "val.txt").read_text() == "lindau/lindau_000000_000019\n"
