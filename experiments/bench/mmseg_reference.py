"""The same measurements on MMSegmentation 0.30 (PyTorch, CPU) for side-by-side ratios.

  python experiments/bench/mmseg_reference.py configs/pspnet_cityscapes.py:r50-d8_512x1024_40k \
      --mode train --batch 2 --crop 512 512 --repeat 3
  python experiments/bench/mmseg_reference.py configs/pspnet_cityscapes.py:r50-d8_512x1024_40k \
      --mode infer --crop 512 1024 --repeat 5

Builds mmseg's segmentor from the segjax config's ``model`` dict (the same dict mmseg's config
holds) and times ``forward_train`` + backward + SGD, or ``encode_decode``, with
``torch.set_num_threads(--threads)``. Needs an environment with torch, mmcv 1.x and
mmsegmentation 0.30 (not a segjax dependency; experiments/bench/README.md says how it was made).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("config")
  parser.add_argument("--mode", choices=["train", "infer"], default="train")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--crop", type=int, nargs=2, default=[512, 512])
  parser.add_argument("--repeat", type=int, default=3)
  parser.add_argument("--threads", type=int, default=2)
  args = parser.parse_args(argv)
  import torch
  from mmseg.models import build_segmentor

  from segjax.config import load_config, to_plain
  torch.set_num_threads(args.threads)
  config = load_config(args.config)
  model_cfg = to_plain(config.model)
  model_cfg.pop("pretrained", None)
  model = build_segmentor(model_cfg)
  num_classes = model_cfg["decode_head"]["num_classes"]
  rng = np.random.default_rng(0)
  n = args.batch if args.mode == "train" else 1
  img = torch.from_numpy(rng.normal(size=(n, 3, *args.crop)).astype(np.float32))
  metas = [dict(img_shape=(*args.crop, 3), ori_shape=(*args.crop, 3), pad_shape=(*args.crop, 3),
                flip=False)] * n
  if args.mode == "train":
    seg = torch.from_numpy(rng.integers(0, num_classes, size=(n, 1, *args.crop)).astype(np.int64))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    model.train()

    def run():
      loss, _ = model._parse_losses(model.forward_train(img, metas, seg))
      opt.zero_grad()
      loss.backward()
      opt.step()
  else:
    model.eval()

    def run():
      with torch.no_grad():
        model.encode_decode(img, metas)
  run()  # warm-up (allocations)
  times = []
  for _ in range(args.repeat):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  times = np.array(times)
  print(f"mmseg {args.mode}: median {np.median(times):.2f} s, min {times.min():.2f}, "
        f"max {times.max():.2f} over {args.repeat} (torch {torch.__version__}, {args.threads} threads)")


if __name__ == "__main__":
  main()
