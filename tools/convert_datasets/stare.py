"""STARE -> data/STARE/{images,annotations}/{training,validation}.

  python tools/convert_datasets/stare.py stare-images.tar labels-ah.tar labels-vk.tar [-o data/STARE]

The tars hold gzipped PPMs (``im0001.ppm.gz``, ``im0001.ah.ppm.gz``, ``im0001.vk.ppm.gz``); as in
mmseg the first 10 (sorted) go to ``training``, the rest to ``validation``. Images become
``im0001.png``, masks ``im0001.ah.png`` / ``im0001.vk.png`` with values 0/1.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from segjax.data import prepare  # noqa: E402

TRAINING_LEN = 10


def main(argv=None):
  parser = prepare.argument_parser(__doc__, os.path.join("data", "STARE"))
  parser.add_argument("image_path", help="stare-images.tar")
  parser.add_argument("labels_ah", help="labels-ah.tar")
  parser.add_argument("labels_vk", help="labels-vk.tar")
  args = parser.parse_args(argv)
  jobs = []
  with tempfile.TemporaryDirectory(dir=args.tmp_dir) as tmp:
    for k, (archive, is_label) in enumerate(((args.image_path, False), (args.labels_ah, True),
                                            (args.labels_vk, True))):
      for i, src in enumerate(prepare.files(prepare.extract(archive, os.path.join(tmp, str(k))), ".ppm")):
        split = "training" if i < TRAINING_LEN else "validation"
        dst = os.path.join(args.out_dir, "annotations" if is_label else "images", split,
                           os.path.basename(src)[:-len(".ppm")] + ".png")
        jobs.append((prepare.vessel_label if is_label else prepare.copy_image, src, dst))
    prepare.parallel(jobs, args.nproc)
  print(f"wrote {len(jobs)} files under {args.out_dir}")


if __name__ == "__main__":
  main()
