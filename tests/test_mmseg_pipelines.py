"""Every dataset dict of mmseg's _base_/datasets configs (with its train_pipeline or
test_pipeline) builds in segjax and runs on mmseg's own test images (../shared/fixtures), laid out
as the dict says (folders, split files, the file suffixes of mmseg 0.30's dataset class), giving
the shapes mmcv's rules imply. One image per dataset dict."""
import glob
import os

import numpy as np
import pytest

from conftest import FIXTURES, ROOT
from segjax.convert.mmseg_config import load_mmseg_config
from segjax.data.datasets import build_dataset

BASE = os.path.join(ROOT, "configs", "mmseg_configs", "_base_", "datasets")
DATA = os.path.join(FIXTURES, "tests", "data")

# (image suffix, label suffix) each mmseg 0.30 dataset class looks for (mmseg/datasets/*.py).
MMSEG_SUFFIXES = {
    "CityscapesDataset": ("_leftImg8bit.png", "_gtFine_labelTrainIds.png"),
    "ADE20KDataset": (".jpg", ".png"), "PascalVOCDataset": (".jpg", ".png"),
    "PascalContextDataset": (".jpg", ".png"), "PascalContextDataset59": (".jpg", ".png"),
    "COCOStuffDataset": (".jpg", "_labelTrainIds.png"), "DRIVEDataset": (".png", "_manual1.png"),
    "HRFDataset": (".png", ".png"), "STAREDataset": (".png", ".ah.png"),
    "ChaseDB1Dataset": (".png", "_1stHO.png"), "LoveDADataset": (".png", ".png"),
    "ISPRSDataset": (".png", ".png"), "PotsdamDataset": (".png", ".png"),
    "iSAIDDataset": (".png", "_instance_color_RGB.png"), "FaceOccludedDataset": (".jpg", ".png"),
}
# mmseg's test image (and label) standing in for each dataset; pseudo_dataset for the rest (its
# iSAID files are empty). cv2 and PIL decode by content, so a JPEG may carry a .png name.
_PSEUDO = ("pseudo_dataset/imgs/00000_img.jpg", "pseudo_dataset/gts/00000_gt.png")
FIXTURE_FILES = {
    "CityscapesDataset": ("pseudo_cityscapes_dataset/leftImg8bit/frankfurt_000000_000294_leftImg8bit.png",
                          "pseudo_cityscapes_dataset/gtFine/frankfurt_000000_000294_gtFine_labelTrainIds.png"),
    "LoveDADataset": ("pseudo_loveda_dataset/img_dir/0.png", "pseudo_loveda_dataset/ann_dir/0.png"),
    "PotsdamDataset": ("pseudo_potsdam_dataset/img_dir/2_10_0_0_512_512.png",
                       "pseudo_potsdam_dataset/ann_dir/2_10_0_0_512_512.png"),
    "ISPRSDataset": ("pseudo_vaihingen_dataset/img_dir/area1_0_0_512_512.png",
                     "pseudo_vaihingen_dataset/ann_dir/area1_0_0_512_512.png"),
}


def _cases():
  cases = []
  for path in sorted(glob.glob(os.path.join(BASE, "*.py"))):
    for split in ("train", "val", "test"):
      if split in load_mmseg_config(path)["data"]:
        cases.append((os.path.basename(path), split))
  return cases


def _folder_datasets(cfg):
  """The folder dataset dicts inside ``cfg`` (lists and RepeatDataset unwrapped)."""
  if isinstance(cfg, list):
    return [d for c in cfg for d in _folder_datasets(c)]
  return _folder_datasets(cfg["dataset"]) if cfg["type"] == "RepeatDataset" else [cfg]


def _as_list(value):
  return value if isinstance(value, list) else [value]


def _lay_out(cfg, root):
  """Point every folder dataset of ``cfg`` at ``root`` and link one image ('sample') and its label
  into each img_dir / ann_dir, named with mmseg's suffixes; split files list 'sample'."""
  for d in _folder_datasets(cfg):
    d["data_root"] = root
    img_suffix, seg_suffix = MMSEG_SUFFIXES[d["type"]]
    img, seg = (os.path.join(DATA, f) for f in FIXTURE_FILES.get(d["type"], _PSEUDO))
    for folder, source, suffix in ((d["img_dir"], img, img_suffix), *(
        (a, seg, seg_suffix) for a in _as_list(d.get("ann_dir")))):
      os.makedirs(os.path.join(root, folder), exist_ok=True)
      link = os.path.join(root, folder, "sample" + suffix)
      if not os.path.exists(link):
        os.symlink(source, link)
    for split in _as_list(d.get("split")) if d.get("split") else []:
      os.makedirs(os.path.dirname(os.path.join(root, split)), exist_ok=True)
      with open(os.path.join(root, split), "w") as f:
        f.write("sample\n")
  return img


def _rescale(hw, scale):
  """mmcv's rescale_size for keep_ratio: the largest factor fitting (long, short) edges."""
  h, w = hw
  factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
  return int(h * factor + 0.5), int(w * factor + 0.5)


def _expected_test_shapes(step, hw):
  """MultiScaleFlipAug: one keep-ratio resize per scale (img_scale times img_ratios), twice with
  flip; then ResizeToMultiple's rounding up if the inner transforms have it."""
  w, h = step["img_scale"]
  scales = [(int(w * r), int(h * r)) for r in step.get("img_ratios") or [1.0]]
  shapes = [_rescale(hw, s) for s in scales for _ in range(2 if step.get("flip") else 1)]
  for t in step["transforms"]:
    if t["type"] == "ResizeToMultiple":
      d = t["size_divisor"]
      shapes = [(-(-sh // d) * d, -(-sw // d) * d) for sh, sw in shapes]
  return shapes


def _expected_train_shape(pipeline, hw):
  pad = [t for t in pipeline if t["type"] == "Pad"]
  if pad:
    return tuple(pad[0]["size"])  # RandomCrop to at most crop_size, padded to it
  (resize,) = [t for t in pipeline if t["type"] == "Resize"]
  return _rescale(hw, resize["img_scale"])  # one scale, keep_ratio (occlude_face)


@pytest.mark.parametrize("name,split", _cases(), ids=[f"{n[:-3]}-{s}" for n, s in _cases()])
def test_mmseg_base_dataset_dicts_run(name, split, tmp_path):
  import cv2
  if not os.path.isdir(DATA):
    pytest.skip(f"{DATA} not available")
  cfg = load_mmseg_config(os.path.join(BASE, name))
  data = cfg["data"][split]
  image = _lay_out(data, str(tmp_path))
  dataset = build_dataset(data)
  # one image per folder dataset, a dict with split lists being one per split file (VOC aug);
  # mmseg's retinal sets repeat theirs 40000 times
  images = sum(max(len(_as_list(d.get("split"))), len(_as_list(d["img_dir"]))) for d in _folder_datasets(data))
  assert len(dataset) == images * (data.get("times", 1) if isinstance(data, dict) else 1)
  out = dataset.prepare(len(dataset) - 1, np.random.default_rng(0))
  hw = cv2.imread(image).shape[:2]
  pipeline = _folder_datasets(data)[0]["pipeline"]
  assert all(d["pipeline"] == pipeline for d in _folder_datasets(data))
  if pipeline == cfg["train_pipeline"]:
    (collect,) = [t for t in pipeline if t["type"] == "Collect"]
    assert set(out) == set(collect["keys"]) | {"img_metas"}
    crop = _expected_train_shape(pipeline, hw)
    assert out["img"].shape == (*crop, 3) and out["img"].dtype == np.float32
    assert out["gt_semantic_seg"].shape == crop and out["gt_semantic_seg"].dtype == np.uint8
    assert tuple(out["img_metas"]["ori_shape"][:2]) == hw
  else:
    assert pipeline == cfg["test_pipeline"]
    (aug,) = [t for t in pipeline if t["type"] == "MultiScaleFlipAug"]
    outs = out if isinstance(out, list) else [out]
    assert [o["img"].shape for o in outs] == [(*s, 3) for s in _expected_test_shapes(aug, hw)]
    assert all(set(o) == {"img", "img_metas"} for o in outs)  # Collect(keys=['img'])
    flips = [False, True] * (len(outs) // 2) if aug.get("flip") else [False] * len(outs)
    assert [o["img_metas"]["flip"] for o in outs] == flips
