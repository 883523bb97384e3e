"""iSAID -> data/iSAID/{img_dir,ann_dir}/{train,val,test}.

  python tools/convert_datasets/isaid.py /path/to/iSAID [-o data/iSAID] [--patch_width 896] \\
      [--patch_height 896] [--overlap_area 384] [--nproc 8]

Expects ``{train,val,test}/images/*.zip`` (DOTA images, ``images/P0000.png``) and
``{train,val}/Semantic_masks/*.zip`` (``images/P0000_instance_color_RGB.png``). Train and val
images are cut into overlapping patches ``P0000_<y0>_<y1>_<x0>_<x1>.png`` (padded with 0 when
smaller than a patch), their masks into ``..._instance_color_RGB.png`` with the 16 colours mapped to
class indices (padding 255); test images are moved whole.
"""
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from segjax.data import prepare  # noqa: E402
from segjax.data.datasets import iSAIDDataset  # noqa: E402


def crop(src: str, out_dir: str, is_label: bool, patch_h: int, patch_w: int, overlap: int) -> int:
  image = prepare.read_rgb(src)
  stem = os.path.basename(src)[:-4]
  if is_label:
    image, stem, suffix = prepare.colour_to_index(image, iSAIDDataset.PALETTE), stem.split("_")[0], "_instance_color_RGB"
  else:
    suffix = ""
  image = prepare.pad_to(image, patch_h, patch_w, 255 if is_label else 0)
  n = 0
  for y0, y1, x0, x1 in prepare.sliding_windows(image.shape[0], image.shape[1], patch_h, patch_w, overlap):
    prepare.save_png(image[y0:y1, x0:x1], os.path.join(out_dir, f"{stem}_{y0}_{y1}_{x0}_{x1}{suffix}.png"))
    n += 1
  return n


def main(argv=None):
  parser = prepare.argument_parser(__doc__, os.path.join("data", "iSAID"))
  parser.add_argument("dataset_path", help="folder holding train/, val/ and test/")
  parser.add_argument("--patch_width", default=896, type=int)
  parser.add_argument("--patch_height", default=896, type=int)
  parser.add_argument("--overlap_area", default=384, type=int)
  args = parser.parse_args(argv)
  jobs, moved = [], 0
  with tempfile.TemporaryDirectory(dir=args.tmp_dir) as tmp:
    for mode in ("train", "val", "test"):
      prepare.require(os.path.join(args.dataset_path, mode), f"the iSAID {mode} folder")
      kinds = [("images", False)] + ([("Semantic_masks", True)] if mode != "test" else [])
      for folder, is_label in kinds:
        unpacked = os.path.join(tmp, mode, folder)
        for archive in prepare.files(os.path.join(args.dataset_path, mode, folder), ".zip"):
          prepare.extract(archive, unpacked)
        out = os.path.join(args.out_dir, "ann_dir" if is_label else "img_dir", mode)
        os.makedirs(out, exist_ok=True)
        for src in prepare.files(unpacked, ".png"):
          if mode == "test":
            shutil.move(src, os.path.join(out, os.path.basename(src)))
            moved += 1
          else:
            jobs.append((crop, src, out, is_label, args.patch_height, args.patch_width, args.overlap_area))
    n = sum(prepare.parallel(jobs, args.nproc))
  print(f"wrote {n} patches from {len(jobs)} files and moved {moved} test images into {args.out_dir}")


if __name__ == "__main__":
  main()
