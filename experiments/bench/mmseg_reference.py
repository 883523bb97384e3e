"""The same measurements on MMSegmentation 0.30 (PyTorch, CPU) for side-by-side ratios.

  python experiments/bench/mmseg_reference.py configs/pspnet_cityscapes.py:r50-d8_512x1024_40k \
      --mode train --batch 2 --crop 512 512 --repeat 3
  python experiments/bench/mmseg_reference.py configs/pspnet_cityscapes.py:r50-d8_512x1024_40k \
      --mode infer --crop 512 1024 --repeat 5

Builds mmseg's segmentor from the segjax config's ``model`` dict (the same dict mmseg's config
holds; for ``configs/mmseg.py:<folder>/<file>.py`` from that mmseg config file itself, read by
mmcv, SyncBN as BN, and the train step uses the file's optimizer) and times ``forward_train`` + backward + SGD, or ``encode_decode``, with
``torch.set_num_threads(--threads)``. Needs an environment with torch, mmcv 1.x and
mmsegmentation 0.30 (not a segjax dependency; experiments/bench/README.md says how it was made).
"""
import argparse
import os
import sys

import numpy as np

from timing import call_times  # this script's folder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
MMSEG_PREFIX = "configs/mmseg.py:"


def sync_bn_to_bn(cfg):
  """SyncBN needs a process group; on one CPU process it is BatchNorm."""
  if isinstance(cfg, dict):
    return {k: ("BN" if k == "type" and v == "SyncBN" else sync_bn_to_bn(v)) for k, v in cfg.items()}
  if isinstance(cfg, (list, tuple)):
    return type(cfg)(sync_bn_to_bn(v) for v in cfg)
  return cfg


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("config")
  parser.add_argument("--mode", choices=["train", "infer"], default="train")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--crop", type=int, nargs=2, default=[512, 512])
  parser.add_argument("--repeat", type=int, default=3)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--warmup", type=int, default=1, help="untimed calls first (oneDNN set-up)")
  args = parser.parse_args(argv)
  import torch
  from mmseg.models import build_segmentor
  torch.set_num_threads(args.threads)
  optimizer_cfg = None
  if args.config.startswith(MMSEG_PREFIX):
    # mmseg's own config file, read by mmcv (this venv has no jax for segjax.config).
    import mmcv
    config = mmcv.Config.fromfile(os.path.join(REPO, "configs", "mmseg_configs", args.config[len(MMSEG_PREFIX):]))
    model_cfg = sync_bn_to_bn(config.model.to_dict())
    optimizer_cfg = config.optimizer.to_dict()
  else:
    from segjax.config import load_config, to_plain
    model_cfg = to_plain(load_config(args.config).model)
  model_cfg.pop("pretrained", None)
  model = build_segmentor(model_cfg)
  decode_head = model_cfg["decode_head"]
  num_classes = (decode_head[-1] if isinstance(decode_head, (list, tuple)) else decode_head)["num_classes"]
  rng = np.random.default_rng(0)
  n = args.batch if args.mode == "train" else 1
  img = torch.from_numpy(rng.normal(size=(n, 3, *args.crop)).astype(np.float32))
  metas = [dict(img_shape=(*args.crop, 3), ori_shape=(*args.crop, 3), pad_shape=(*args.crop, 3),
                flip=False)] * n
  if args.mode == "train":
    seg = torch.from_numpy(rng.integers(0, num_classes, size=(n, 1, *args.crop)).astype(np.int64))
    if optimizer_cfg is None:
      opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    else:  # the config's optimizer (AdamW with paramwise_cfg for the transformers), as segjax's step
      from mmcv.runner import build_optimizer
      opt = build_optimizer(model, optimizer_cfg)
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
  times = np.array(call_times(run, args.repeat, args.warmup))  # warm-up: allocations, oneDNN primitives
  print(f"mmseg {args.mode}: median {np.median(times):.3f} s, min {times.min():.3f}, "
        f"max {times.max():.3f} over {args.repeat} (torch {torch.__version__}, {args.threads} threads)")


if __name__ == "__main__":
  main()
