"""Peak memory of tools/test.py against the number of images (issue 17).

  python experiments/eval_memory.py [--counts 4 24] [--work /tmp/segjax_eval_memory]

Writes N synthetic 1024x2048 images (two 1024 px scenes of segjax's generator side by side) as
an mmseg custom dataset, a randomly initialised tiny PSPNet checkpoint (tools/test.py's test
overrides), runs ``tools/test.py configs/pspnet_synthetic.py CKPT --eval mIoU --out OUT.npz`` on
each count in its own process and prints the peak resident set size (``ru_maxrss``) of each run.
"""
import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["model.backbone.base_channels=8", "model.backbone.stem_channels=8",
        "model.decode_head.in_channels=64", "model.decode_head.channels=16",
        "model.auxiliary_head.in_channels=32", "model.auxiliary_head.channels=8"]


def make_data(root: str, count: int) -> None:
  import cv2
  import numpy as np
  from segjax.data import synthetic
  for sub in ("img_dir/val", "ann_dir/val"):
    os.makedirs(os.path.join(root, sub), exist_ok=True)
  for i in range(count):
    scenes = [synthetic.render_scene(1000 + 2 * i + k, 1024) for k in range(2)]
    img = np.concatenate([s[0] for s in scenes], axis=1)
    label = np.concatenate([s[1] for s in scenes], axis=1)
    cv2.imwrite(os.path.join(root, "img_dir/val", f"{i:05d}.png"), img[..., ::-1])
    cv2.imwrite(os.path.join(root, "ann_dir/val", f"{i:05d}.png"), label)


def make_checkpoint(out_dir: str) -> None:
  import jax
  sys.path.insert(0, ROOT)
  from segjax import apis
  from segjax.config import apply_overrides, load_config, to_plain
  from segjax.models import build_segmentor, init_variables
  config = load_config(os.path.join(ROOT, "configs", "pspnet_synthetic.py"))
  apply_overrides(config, TINY)
  model_cfg = to_plain(config.model)
  apis.save_converted(out_dir, model_cfg, init_variables(build_segmentor(model_cfg), jax.random.PRNGKey(0)))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--counts", type=int, nargs="+", default=[4, 24])
  parser.add_argument("--work", default="/tmp/segjax_eval_memory")
  parser.add_argument("--tool", default=os.path.join(ROOT, "tools", "test.py"),
                      help="the tools/test.py to measure (e.g. an earlier version from git show)")
  args = parser.parse_args()
  sys.path.insert(0, ROOT)
  ckpt = os.path.join(args.work, "ckpt")
  if not os.path.isdir(ckpt):
    make_checkpoint(ckpt)
  for count in args.counts:
    data = os.path.join(args.work, f"data_{count}")
    if not os.path.isdir(data):
      make_data(data, count)
    # A child's peak is only visible through RUSAGE_CHILDREN once it exceeds earlier children's,
    # so each count runs inside its own wrapper process that reports its single child's peak.
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    command = [sys.executable, args.tool, "configs/pspnet_synthetic.py", ckpt,
               "--eval", "mIoU", "--out", os.path.join(args.work, f"preds_{count}.npz"),
               "--cfg-options", *TINY, f"data.test.data_root={data}"]
    r = subprocess.run([sys.executable, "-c", code, *command], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    if r.returncode:
      sys.exit(r.stderr[-3000:])
    print(f"{count} images: peak RSS {int(r.stdout.strip().splitlines()[-1]) / 1024:.0f} MB")


if __name__ == "__main__":
  main()
