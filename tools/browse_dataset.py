"""Write training samples after the pipeline, with palette overlays (mmseg's browse_dataset.py).

  python tools/browse_dataset.py configs/pspnet_cityscapes.py --output-dir browse --num 20 [--opacity 0.5]

Each PNG shows the augmented image (de-normalised) and its label overlay side by side; ignored
pixels are left uncoloured. Random transforms use the given --seed.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from segjax.config import apply_overrides, load_config  # noqa: E402
from segjax.data.datasets import build_split  # noqa: E402


def denormalise(img: np.ndarray, norm: dict) -> np.ndarray:
  """Normalize's inverse, back to a BGR uint8 image."""
  img = img * np.asarray(norm["std"], np.float32) + np.asarray(norm["mean"], np.float32)
  if norm.get("to_rgb"):
    img = img[..., ::-1]
  return np.clip(img, 0, 255).astype(np.uint8)


def overlay(img_bgr: np.ndarray, seg: np.ndarray, palette, opacity: float) -> np.ndarray:
  out = img_bgr.astype(np.float32)
  for label, color in enumerate(palette):
    mask = seg == label
    out[mask] = out[mask] * (1 - opacity) + np.asarray(color[::-1], np.float32) * opacity
  return out.astype(np.uint8)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("config")
  parser.add_argument("--output-dir", required=True)
  parser.add_argument("--num", type=int, default=20)
  parser.add_argument("--opacity", type=float, default=0.5)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--cfg-options", nargs="*", default=[])
  args = parser.parse_args(argv)
  config = load_config(args.config)
  apply_overrides(config, args.cfg_options)
  dataset = build_split(config.data, "train")
  os.makedirs(args.output_dir, exist_ok=True)
  for i in range(min(args.num, len(dataset))):
    results = dataset.prepare(i, np.random.default_rng(args.seed + i))
    img = results["img"]
    norm = results.get("img_norm_cfg")
    img = denormalise(img, norm) if img.dtype != np.uint8 else img
    both = np.concatenate([img, overlay(img, results["gt_semantic_seg"], dataset.PALETTE, args.opacity)], 1)
    ds, j = dataset.locate(i)
    stem = os.path.splitext(os.path.basename(ds.img_infos[j]["filename"]))[0]
    cv2.imwrite(os.path.join(args.output_dir, f"{i:05d}_{stem}.png"), both)
  print(f"wrote {min(args.num, len(dataset))} samples to {args.output_dir}")


if __name__ == "__main__":
  main()
