"""Images/s of the Cityscapes training pipeline on generated 2048x1024 images, in one process
(per worker), for experiments/bench/README.md.

  python experiments/bench/input_pipeline.py --images 40
"""
import argparse
import os
import sys
import tempfile
import time

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from segjax.convert.mmseg_config import load_mmseg_config  # noqa: E402
from segjax.data.datasets import build_dataset  # noqa: E402


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--images", type=int, default=40)
  args = parser.parse_args(argv)
  rng = np.random.default_rng(0)
  with tempfile.TemporaryDirectory() as root:
    for sub in ("leftImg8bit/train/city", "gtFine/train/city"):
      os.makedirs(os.path.join(root, sub))
    for i in range(8):  # 8 distinct files, read repeatedly
      img = cv2.GaussianBlur(rng.integers(0, 255, (1024, 2048, 3), dtype=np.uint8), (5, 5), 0)
      label = cv2.resize(rng.integers(0, 19, (32, 64), dtype=np.uint8), (2048, 1024),
                         interpolation=cv2.INTER_NEAREST)
      cv2.imwrite(os.path.join(root, f"leftImg8bit/train/city/c_{i:06d}_leftImg8bit.png"), img)
      cv2.imwrite(os.path.join(root, f"gtFine/train/city/c_{i:06d}_gtFine_labelTrainIds.png"), label)
    cfg = load_mmseg_config(os.path.join(ROOT, "configs/mmseg_configs/_base_/datasets/cityscapes.py"))["data"]["train"]
    cfg["data_root"] = root
    dataset = build_dataset(cfg)
    dataset.prepare(0, np.random.default_rng(0))  # warm caches
    start = time.perf_counter()
    for i in range(args.images):
      out = dataset.prepare(i % len(dataset), np.random.default_rng(i))
    elapsed = time.perf_counter() - start
  print(f"{args.images / elapsed:.2f} images/s per worker ({elapsed / args.images * 1000:.0f} ms/image); "
        f"output {out['img'].shape} {out['img'].dtype}")


if __name__ == "__main__":
  main()
