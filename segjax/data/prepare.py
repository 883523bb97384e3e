"""What ``tools/convert_datasets/*.py`` share: archives, parallel maps, label recoding, tiling.

Each converter turns a dataset's official archives into mmseg's folder layout (see README.md,
'Datasets'); the label rules here are mmseg's: vessel masks are ``channel 0 // 128``, colour
labels map to indices through a palette (unknown colours -> 0), tiles follow mmseg's clipping.
"""
from __future__ import annotations

import gzip
import os
import shutil
import sys
import tarfile
import zipfile
from multiprocessing import Pool
from typing import Iterable, Sequence

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm


def fail(message: str) -> None:
  """Exit a converter with a message naming what is missing."""
  sys.exit(f"error: {message}")


def require(path: str, what: str) -> str:
  if not os.path.exists(path):
    fail(f"{path} does not exist ({what})")
  return path


def extract(archive: str, dest: str) -> str:
  """Unpack a .zip or .tar into ``dest``; gzipped members (STARE's ``*.ppm.gz``) are unpacked too."""
  require(archive, "archive")
  os.makedirs(dest, exist_ok=True)
  desc = f"unpacking {os.path.basename(archive)}"
  if zipfile.is_zipfile(archive):
    with zipfile.ZipFile(archive) as z:
      for member in tqdm(z.infolist(), desc=desc, unit="file", disable=None):
        z.extract(member, dest)
  elif tarfile.is_tarfile(archive):
    with tarfile.open(archive) as t:
      t.extractall(dest, members=tqdm(t, desc=desc, unit="file", disable=None), filter="data")
  else:
    fail(f"{archive} is neither a zip nor a tar archive")
  for root, _, files in os.walk(dest):
    for f in files:
      if f.endswith(".gz"):
        with gzip.open(os.path.join(root, f)) as src, open(os.path.join(root, f[:-3]), "wb") as dst:
          shutil.copyfileobj(src, dst)
        os.remove(os.path.join(root, f))
  return dest


def files(root: str, suffixes: Sequence[str] | str) -> list[str]:
  """Files under ``root`` (recursively) ending with one of ``suffixes``, sorted by name."""
  suffixes = (suffixes,) if isinstance(suffixes, str) else tuple(suffixes)
  found = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.lower().endswith(suffixes)]
  return sorted(found, key=os.path.basename)


def _call(job: tuple):
  fn, *args = job
  return fn(*args)


def parallel(jobs: Iterable[tuple], nproc: int = 1, desc: str = "converting") -> list:
  """Run jobs ``(fn, *args)`` on ``nproc`` processes, results in job order, with a progress bar
  on stderr when it is a terminal (mmcv's track_parallel_progress)."""
  jobs = list(jobs)
  progress = lambda results: list(tqdm(results, total=len(jobs), desc=desc, unit="file", disable=None))
  if nproc > 1 and len(jobs) > 1:
    with Pool(nproc) as pool:
      return progress(pool.imap(_call, jobs))
  return progress(map(_call, jobs))


def read_rgb(path: str) -> np.ndarray:
  """Any image (TIFF, GIF, PPM, PNG, JPEG) as HxWx3 uint8 RGB."""
  try:
    with Image.open(path) as im:
      return np.array(im.convert("RGB"))
  except OSError as e:
    fail(f"cannot read {path}: {e}")


def save_png(array: np.ndarray, path: str) -> None:
  """Labels (2-D) as 8-bit single-channel PNGs; images (HxWx3 RGB) as RGB PNGs."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  Image.fromarray(np.ascontiguousarray(array).astype(np.uint8)).save(path)


def copy_image(src: str, dst: str) -> None:
  """Re-encode ``src`` as PNG at ``dst`` (mmcv.imread + imwrite: 8-bit, 3 channels)."""
  img = cv2.imread(src, cv2.IMREAD_COLOR)
  if img is None:  # cv2 reads no GIF
    img = read_rgb(src)[..., ::-1]
  os.makedirs(os.path.dirname(dst), exist_ok=True)
  cv2.imwrite(dst, img)


def vessel_label(src: str, dst: str) -> None:
  """mmseg's vessel masks: first channel // 128, i.e. 1 where the annotation is >= 128."""
  save_png(read_rgb(src)[..., 2] // 128, dst)  # cv2's channel 0 is blue (= red for grey masks)


def colour_to_index(rgb: np.ndarray, colours: Sequence[Sequence[int]]) -> np.ndarray:
  """Index of each pixel's colour in ``colours``; colours not listed become 0 (as mmseg)."""
  out = np.zeros(rgb.shape[:2], np.uint8)
  for index, colour in enumerate(colours):
    out[np.all(rgb == np.asarray(colour, rgb.dtype), axis=-1)] = index
  return out


def isprs_boxes(h: int, w: int, clip: int, stride: int) -> list[tuple[int, int, int, int]]:
  """mmseg's ISPRS clipping (potsdam.py/vaihingen.py ``clip_big_image``): boxes at multiples of
  ``clip`` (its grid count comes from ``stride``, its steps from ``clip``), the last row/column
  moved back to end at the border; as (x0, y0, x1, y1), duplicates dropped."""
  def count(n):
    k = int(np.ceil((n - clip) / stride))
    return k if k * stride + clip >= n else k + 1
  boxes = []
  for y in range(count(h) + 1):
    for x in range(count(w) + 1):
      x0, y0 = x * clip, y * clip
      x0, y0 = (w - clip if x0 + clip > w else x0), (h - clip if y0 + clip > h else y0)
      box = (x0, y0, min(x0 + clip, w), min(y0 + clip, h))
      if box not in boxes:
        boxes.append(box)
  return boxes


def sliding_windows(h: int, w: int, patch_h: int, patch_w: int, overlap: int):
  """mmseg's iSAID patches (x outer, y inner loop), the last ones moved back to the border;
  yields (y0, y1, x0, x1). Images smaller than a patch are padded first (see ``pad_to``)."""
  for x in range(0, w, patch_w - overlap):
    for y in range(0, h, patch_h - overlap):
      x0, y0 = min(x, w - patch_w), min(y, h - patch_h)
      yield y0, y0 + patch_h, x0, x0 + patch_w


def pad_to(array: np.ndarray, h: int, w: int, value: int) -> np.ndarray:
  """Pad bottom/right up to at least h x w (mmcv.impad)."""
  ph, pw = max(h - array.shape[0], 0), max(w - array.shape[1], 0)
  if not (ph or pw):
    return array
  pad = ((0, ph), (0, pw)) + ((0, 0),) * (array.ndim - 2)
  return np.pad(array, pad, constant_values=value)


def write_list(path: str, names: Iterable[str]) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    f.writelines(n + "\n" for n in names)


# ISPRS label colours, index = label value: boundary/clutter-free black first (ignored through
# reduce_zero_label), then impervious surface, building, low vegetation, tree, car, clutter.
ISPRS_COLOURS = ((0, 0, 0), (255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0),
                 (255, 255, 0), (255, 0, 0))


def clip_tile(src: str, out_dir: str, prefix: str, is_label: bool, clip: int, stride: int) -> int:
  """Cut one ISPRS tile into ``<prefix>_<x0>_<y0>_<x1>_<y1>.png`` clips; returns their number."""
  image = read_rgb(src)
  if is_label:
    image = colour_to_index(image, ISPRS_COLOURS)
  boxes = isprs_boxes(image.shape[0], image.shape[1], clip, stride)
  for x0, y0, x1, y1 in boxes:
    save_png(image[y0:y1, x0:x1], os.path.join(out_dir, f"{prefix}_{x0}_{y0}_{x1}_{y1}.png"))
  return len(boxes)


def argument_parser(doc: str, out_default: str | None = None, out_help: str | None = None,
                    unpacks: bool = True):
  """The options every converter shares: ``-o/--out_dir``, ``--nproc`` and, for those that
  unpack archives, ``--tmp_dir``; the converter adds its positional arguments."""
  import argparse
  parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("-o", "--out_dir", default=out_default, help=out_help)
  if unpacks:
    parser.add_argument("--tmp_dir", help="where to unpack (default: system temp)")
  parser.add_argument("--nproc", default=1, type=int, help="worker processes")
  return parser


def isprs_argument_parser(doc: str, default_out: str):
  parser = argument_parser(doc, default_out)
  parser.add_argument("dataset_path", help="folder holding the dataset's zip archives")
  parser.add_argument("--clip_size", type=int, default=512)
  parser.add_argument("--stride_size", type=int, default=256)
  return parser


def convert_isprs(args, tile_of, split_of) -> None:
  """Unpack every zip in ``args.dataset_path`` and clip its tiles: ``tile_of(path)`` gives
  (tile name, is_label) or None to skip, ``split_of(tile)`` 'train' or 'val'."""
  import tempfile
  archives = files(require(args.dataset_path, "dataset folder"), ".zip")
  if not archives:
    fail(f"no .zip archives in {args.dataset_path}")
  jobs = []
  with tempfile.TemporaryDirectory(dir=args.tmp_dir) as tmp:
    for k, archive in enumerate(archives):
      for src in files(extract(archive, os.path.join(tmp, str(k))), (".tif", ".tiff")):
        tile = tile_of(src)
        if tile is not None:
          name, is_label = tile
          out = os.path.join(args.out_dir, "ann_dir" if is_label else "img_dir", split_of(name))
          jobs.append((clip_tile, src, out, name, is_label, args.clip_size, args.stride_size))
    n = sum(parallel(jobs, args.nproc))
  print(f"wrote {n} clips from {len(jobs)} tiles into {args.out_dir}")
