"""HRF -> data/HRF/{images,annotations}/{training,validation}.

  python tools/convert_datasets/hrf.py healthy.zip healthy_manualsegm.zip glaucoma.zip \\
      glaucoma_manualsegm.zip diabetic_retinopathy.zip diabetic_retinopathy_manualsegm.zip [-o data/HRF]

Each archive holds 15 files; as in mmseg the first 5 (sorted) of each go to ``training``, the rest
to ``validation``. Images become ``01_h.png``; masks ``01_h.png`` with values 0/1.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from segjax.data import prepare  # noqa: E402

TRAINING_LEN = 5


def main(argv=None):
  parser = prepare.argument_parser(__doc__, os.path.join("data", "HRF"))
  for name in ("healthy", "healthy_manualsegm", "glaucoma", "glaucoma_manualsegm",
               "diabetic_retinopathy", "diabetic_retinopathy_manualsegm"):
    parser.add_argument(f"{name}_path", help=f"{name}.zip")
  args = parser.parse_args(argv)
  archives = [(args.healthy_path, False), (args.healthy_manualsegm_path, True),
              (args.glaucoma_path, False), (args.glaucoma_manualsegm_path, True),
              (args.diabetic_retinopathy_path, False), (args.diabetic_retinopathy_manualsegm_path, True)]
  jobs = []
  with tempfile.TemporaryDirectory(dir=args.tmp_dir) as tmp:
    for k, (archive, is_label) in enumerate(archives):
      srcs = prepare.files(prepare.extract(archive, os.path.join(tmp, str(k))), (".jpg", ".tif", ".png"))
      for i, src in enumerate(srcs):
        split = "training" if i < TRAINING_LEN else "validation"
        dst = os.path.join(args.out_dir, "annotations" if is_label else "images", split,
                           os.path.splitext(os.path.basename(src))[0] + ".png")
        jobs.append((prepare.vessel_label if is_label else prepare.copy_image, src, dst))
    prepare.parallel(jobs, args.nproc)
  print(f"wrote {len(jobs)} files under {args.out_dir}")


if __name__ == "__main__":
  main()
