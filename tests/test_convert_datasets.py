"""Dataset converters on small fake archives of the documented layout."""
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from conftest import ROOT


def test_cityscapes_converter_writes_train_ids_and_splits(tmp_path):
  root = tmp_path / "cityscapes"
  ids = np.array([[7, 8, 26, 0], [33, 1, 24, 255]], np.uint8)  # road, sidewalk, car, unlabeled...
  for split, city in (("train", "aachen"), ("val", "lindau")):
    (root / "gtFine" / split / city).mkdir(parents=True)
    (root / "leftImg8bit" / split / city).mkdir(parents=True)
    stem = f"{city}_000000_000019"
    Image.fromarray(ids).save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(
        root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
  r = subprocess.run([sys.executable, "tools/convert_datasets/cityscapes.py", str(root), "--nproc", "2"],
                     cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr
  out = np.array(Image.open(root / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelTrainIds.png"))
  np.testing.assert_array_equal(out, [[0, 1, 13, 255], [18, 255, 11, 255]])
  assert (root / "train.txt").read_text() == "aachen/aachen_000000_000019\n"
  assert (root / "val.txt").read_text() == "lindau/lindau_000000_000019\n"


# ------------------------------------------------------------------ fake archives of each dataset

def run_tool(name, *args):
  r = subprocess.run([sys.executable, f"tools/convert_datasets/{name}.py", *map(str, args)],
                     cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stdout + r.stderr
  return r.stdout


def zip_of(path, members):
  """members: {name inside the archive: bytes}."""
  import zipfile
  with zipfile.ZipFile(path, "w") as z:
    for name, data in members.items():
      z.writestr(name, data)
  return path


def encode(array, fmt):
  import io
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format=fmt)
  return buf.getvalue()


def listing(root):
  return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


VESSEL = np.array([[0, 255, 130, 127], [255, 0, 0, 200]], np.uint8)  # >= 128 is vessel
VESSEL_01 = (VESSEL >= 128).astype(np.uint8)
RGB = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3)


def test_drive(tmp_path):
  train = zip_of(tmp_path / "training.zip", {
      "training/images/21_training.tif": encode(RGB, "TIFF"),
      "training/1st_manual/21_manual1.gif": encode(VESSEL, "GIF")})
  test = zip_of(tmp_path / "test.zip", {
      "test/images/01_test.tif": encode(RGB, "TIFF"),
      "test/1st_manual/01_manual1.gif": encode(VESSEL, "GIF"),
      "test/2nd_manual/01_manual2.gif": encode(VESSEL, "GIF")})
  out = tmp_path / "DRIVE"
  run_tool("drive", train, test, "-o", out, "--nproc", 2)
  assert listing(out) == ["annotations/training/21_manual1.png", "annotations/validation/01_manual1.png",
                          "annotations/validation/01_manual2.png", "images/training/21.png",
                          "images/validation/01.png"]
  np.testing.assert_array_equal(np.array(Image.open(out / "annotations/training/21_manual1.png")), VESSEL_01)
  np.testing.assert_array_equal(np.array(Image.open(out / "images/training/21.png")), RGB)
  from segjax.data.datasets import build_dataset
  ds = build_dataset(dict(type="DRIVEDataset", pipeline=[], data_root=str(out), img_dir="images/training",
                          ann_dir="annotations/training"))
  np.testing.assert_array_equal(ds.get_gt_seg_map(0), VESSEL_01)


def test_hrf_first_five_of_each_archive_train(tmp_path):
  names = [f"{i:02d}_h" for i in range(1, 7)]
  archives = []
  for kind in ("healthy", "glaucoma", "diabetic_retinopathy"):
    tag = kind[0]
    archives.append(zip_of(tmp_path / f"{kind}.zip", {n.replace("_h", f"_{tag}") + ".jpg": encode(RGB, "JPEG") for n in names}))
    archives.append(zip_of(tmp_path / f"{kind}_manualsegm.zip", {n.replace("_h", f"_{tag}") + ".tif": encode(VESSEL, "TIFF") for n in names}))
  out = tmp_path / "HRF"
  run_tool("hrf", *archives, "-o", out)
  files = listing(out)
  assert len([f for f in files if f.startswith("images/training/")]) == 15
  assert [f for f in files if f.startswith("images/validation/")] == ["images/validation/06_d.png", "images/validation/06_g.png", "images/validation/06_h.png"]
  np.testing.assert_array_equal(np.array(Image.open(out / "annotations/validation/06_g.png")), VESSEL_01)


def test_stare_gzipped_ppm_tars(tmp_path):
  import gzip
  import tarfile
  def tar_of(path, suffix, array):
    with tarfile.open(path, "w") as t:
      for i in range(1, 12):
        data = gzip.compress(encode(array, "PPM"))
        info = tarfile.TarInfo(f"im{i:04d}{suffix}.ppm.gz")
        info.size = len(data)
        import io
        t.addfile(info, io.BytesIO(data))
    return path
  vessel_rgb = np.repeat(VESSEL[..., None], 3, axis=2)
  out = tmp_path / "STARE"
  run_tool("stare", tar_of(tmp_path / "images.tar", "", RGB), tar_of(tmp_path / "ah.tar", ".ah", vessel_rgb),
           tar_of(tmp_path / "vk.tar", ".vk", vessel_rgb), "-o", out)
  files = listing(out)
  assert "images/training/im0010.png" in files and "images/validation/im0011.png" in files
  assert "annotations/validation/im0011.ah.png" in files and "annotations/training/im0001.vk.png" in files
  assert len(files) == 33
  np.testing.assert_array_equal(np.array(Image.open(out / "annotations/training/im0001.ah.png")), VESSEL_01)


def test_chase_db1_first_twenty_images_train(tmp_path):
  members = {}
  for i in range(1, 12):
    for side in "LR":
      stem = f"Image_{i:02d}{side}"
      members[stem + ".jpg"] = encode(RGB, "JPEG")
      members[stem + "_1stHO.png"] = encode(VESSEL, "PNG")
      members[stem + "_2ndHO.png"] = encode(VESSEL, "PNG")
  out = tmp_path / "CHASE_DB1"
  run_tool("chase_db1", zip_of(tmp_path / "CHASEDB1.zip", members), "-o", out)
  files = listing(out)
  assert len([f for f in files if f.startswith("images/training/")]) == 20
  assert [f for f in files if f.startswith("images/validation/")] == ["images/validation/Image_11L.png", "images/validation/Image_11R.png"]
  np.testing.assert_array_equal(np.array(Image.open(out / "annotations/validation/Image_11R_1stHO.png")), VESSEL_01)


def test_voc_aug_masks_and_lists(tmp_path):
  from scipy.io import savemat
  devkit, aug = tmp_path / "VOCdevkit", tmp_path / "VOCaug"
  seg = devkit / "VOC2012" / "ImageSets" / "Segmentation"
  seg.mkdir(parents=True)
  (seg / "train.txt").write_text("a\nb\n")
  (seg / "val.txt").write_text("c\n")
  (aug / "dataset" / "cls").mkdir(parents=True)
  (aug / "dataset" / "train.txt").write_text("b\nc\nd\n")
  (aug / "dataset" / "val.txt").write_text("e\n")
  mask = np.array([[0, 15], [255, 3]], np.uint8)
  for n in "bcde":
    savemat(aug / "dataset" / "cls" / f"{n}.mat", {"GTcls": {"Segmentation": mask}})
  run_tool("voc_aug", devkit, aug, "--nproc", 2)
  np.testing.assert_array_equal(np.array(Image.open(devkit / "VOC2012/SegmentationClassAug/d.png")), mask)
  assert (seg / "aug.txt").read_text() == "d\ne\n"  # SBD minus VOC train and val
  assert (seg / "trainaug.txt").read_text() == "a\nb\nd\ne\n"  # VOC train + SBD minus VOC val


def test_pascal_context_from_label_maps(tmp_path):
  import json
  from scipy.io import savemat
  devkit = tmp_path / "VOCdevkit"
  (devkit / "VOC2010" / "JPEGImages").mkdir(parents=True)
  (tmp_path / "maps").mkdir()
  js = tmp_path / "trainval_merged.json"
  js.write_text(json.dumps({"images": [{"file_name": "2008_000002.jpg", "phase": "train"},
                                       {"file_name": "2008_000003.jpg", "phase": "val"}]}))
  # 459-class ids: 0 background, 2 aeroplane (1st class), 115 (the 59th, 'wood'), 1 accordion (not kept)
  label = np.array([[0, 2], [115, 1]], np.int32)
  for n in ("2008_000002", "2008_000003"):
    savemat(tmp_path / "maps" / f"{n}.mat", {"LabelMap": label})
  run_tool("pascal_context", devkit, js, "--label-dir", tmp_path / "maps")
  out = np.array(Image.open(devkit / "VOC2010/SegmentationClassContext/2008_000003.png"))
  # sorted ids: 0, 2, 9, 18, ... so aeroplane -> 1; 115 is the 20th smallest of the 60 ids
  from tools.convert_datasets.pascal_context import CONTEXT_IDS
  assert out[0, 0] == 0 and out[0, 1] == 1 and out[1, 1] == 0
  assert out[1, 0] == list(CONTEXT_IDS).index(115) == sorted([0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159, 416, 33, 162, 420, 454, 295, 296, 427, 44, 45, 46, 308, 59, 440, 445, 31, 232, 65, 354, 424, 68, 326, 72, 458, 34, 207, 80, 355, 85, 347, 220, 349, 360, 98, 187, 104, 105, 366, 189, 368, 113, 115]).index(115)
  assert (devkit / "VOC2010/ImageSets/SegmentationContext/train.txt").read_text() == "2008_000002\n"


def test_coco_stuff10k(tmp_path):
  from scipy.io import savemat
  root = tmp_path / "coco"
  for d in ("images", "annotations", "imageLists"):
    (root / d).mkdir(parents=True)
  (root / "imageLists" / "train.txt").write_text("COCO_train2014_000000000077\n")
  (root / "imageLists" / "test.txt").write_text("COCO_train2014_000000000078\n")
  s = np.array([[0, 1, 11, 13], [92, 182, 12, 91]], np.uint8)  # 12 and 91 are unused ids
  for n in ("COCO_train2014_000000000077", "COCO_train2014_000000000078"):
    Image.fromarray(RGB).save(root / "images" / f"{n}.jpg")
    savemat(root / "annotations" / f"{n}.mat", {"S": s})
  run_tool("coco_stuff10k", root, "--nproc", 2)
  out = np.array(Image.open(root / "annotations/train2014/COCO_train2014_000000000077_labelTrainIds.png"))
  np.testing.assert_array_equal(out, [[0, 1, 11, 12], [81, 171, 0, 0]])  # mmseg's clsID_to_trID
  assert (root / "images/test2014/COCO_train2014_000000000078.jpg").exists()
  assert (root / "imagesLists/test.txt").read_text() == "COCO_train2014_000000000078\n"


def test_coco_stuff164k(tmp_path):
  root = tmp_path / "coco"
  (root / "annotations" / "train2017").mkdir(parents=True)
  (root / "annotations" / "val2017").mkdir(parents=True)
  ids = np.array([[0, 10, 11, 12], [91, 181, 255, 90]], np.uint8)  # 11 and 90 unused
  Image.fromarray(ids).save(root / "annotations/val2017/000000000139.png")
  run_tool("coco_stuff164k", root)
  out = np.array(Image.open(root / "annotations/val2017/000000000139_labelTrainIds.png"))
  np.testing.assert_array_equal(out, [[0, 10, 255, 11], [80, 170, 255, 255]])


def test_loveda(tmp_path):
  for part in ("Train", "Val", "Test"):
    members = {}
    for loc, n in (("Rural", "0"), ("Urban", "1")):
      members[f"{part}/{loc}/images_png/{part}{n}.png"] = encode(RGB, "PNG")
      if part != "Test":
        members[f"{part}/{loc}/masks_png/{part}{n}.png"] = encode(VESSEL // 64, "PNG")
    zip_of(tmp_path / f"{part}.zip", members)
  out = tmp_path / "loveDA"
  run_tool("loveda", tmp_path, "-o", out)
  assert listing(out) == ["ann_dir/train/Train0.png", "ann_dir/train/Train1.png", "ann_dir/val/Val0.png",
                          "ann_dir/val/Val1.png", "img_dir/test/Test0.png", "img_dir/test/Test1.png",
                          "img_dir/train/Train0.png", "img_dir/train/Train1.png", "img_dir/val/Val0.png",
                          "img_dir/val/Val1.png"]
  np.testing.assert_array_equal(np.array(Image.open(out / "ann_dir/val/Val1.png")), VESSEL // 64)


# A 6x10 tile clipped with clip 4 / stride 2: mmseg's grid gives x0 in {0, 4, 8->6, 12->6} and
# y0 in {0, 4->2}, i.e. 3 x 2 distinct boxes.
ISPRS_BOXES = [(0, 0, 4, 4), (4, 0, 8, 4), (6, 0, 10, 4), (0, 2, 4, 6), (4, 2, 8, 6), (6, 2, 10, 6)]
ISPRS_LABEL = np.zeros((6, 10, 3), np.uint8)
ISPRS_LABEL[:, 5:] = (255, 255, 255)  # impervious surface -> 1
ISPRS_LABEL[0, 0] = (255, 0, 0)  # clutter -> 6


def test_isprs_boxes_follow_mmseg():
  from segjax.data.prepare import isprs_boxes
  assert isprs_boxes(6, 10, 4, 2) == ISPRS_BOXES
  # Potsdam's 6000x6000 tiles give 12 x 12 clips, so 24 train tiles -> 3456 (mmseg's count).
  assert len(isprs_boxes(6000, 6000, 512, 256)) == 144


def test_potsdam(tmp_path):
  image = np.random.default_rng(0).integers(0, 255, (6, 10, 3), dtype=np.uint8)
  zip_of(tmp_path / "2_Ortho_RGB.zip", {"2_Ortho_RGB/top_potsdam_2_10_RGB.tif": encode(image, "TIFF"),
                                        "2_Ortho_RGB/top_potsdam_2_13_RGB.tif": encode(image, "TIFF")})
  zip_of(tmp_path / "5_Labels_all_noBoundary.zip",
         {"top_potsdam_2_10_label_noBoundary.tif": encode(ISPRS_LABEL, "TIFF")})
  out = tmp_path / "potsdam"
  run_tool("potsdam", tmp_path, "-o", out, "--clip_size", 4, "--stride_size", 2, "--nproc", 2)
  names = [f"2_10_{x0}_{y0}_{x1}_{y1}.png" for x0, y0, x1, y1 in ISPRS_BOXES]
  assert listing(out / "img_dir" / "train") == sorted(names)
  assert listing(out / "ann_dir" / "train") == sorted(names)
  assert len(listing(out / "img_dir" / "val")) == 6  # tile 2_13 is in mmseg's val list
  np.testing.assert_array_equal(np.array(Image.open(out / "img_dir/train/2_10_6_2_10_6.png")), image[2:6, 6:10])
  label = np.array(Image.open(out / "ann_dir/train/2_10_4_0_8_4.png"))
  np.testing.assert_array_equal(label, [[0, 1, 1, 1]] * 4)
  assert np.array(Image.open(out / "ann_dir/train/2_10_0_0_4_4.png"))[0, 0] == 6


def test_vaihingen_reads_top_tiles_and_eroded_labels(tmp_path):
  image = np.random.default_rng(1).integers(0, 255, (6, 10, 3), dtype=np.uint8)
  zip_of(tmp_path / "ISPRS_semantic_labeling_Vaihingen.zip", {
      "top/top_mosaic_09cm_area1.tif": encode(image, "TIFF"),
      "gts_for_participants/top_mosaic_09cm_area1.tif": encode(ISPRS_LABEL, "TIFF"),  # not an image
      "dsm/dsm_09cm_matching_area1.tif": encode(image[..., 0], "TIFF")})
  zip_of(tmp_path / "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip",
         {"top_mosaic_09cm_area1_noBoundary.tif": encode(ISPRS_LABEL, "TIFF")})
  out = tmp_path / "vaihingen"
  run_tool("vaihingen", tmp_path, "-o", out, "--clip_size", 4, "--stride_size", 2)
  names = sorted(f"area1_{x0}_{y0}_{x1}_{y1}.png" for x0, y0, x1, y1 in ISPRS_BOXES)
  assert listing(out / "img_dir" / "train") == names and listing(out / "ann_dir" / "train") == names
  np.testing.assert_array_equal(np.array(Image.open(out / "img_dir/train/area1_0_0_4_4.png")), image[:4, :4])


def test_isaid_patches(tmp_path):
  from segjax.data.datasets import iSAIDDataset
  image = np.random.default_rng(2).integers(0, 255, (5, 7, 3), dtype=np.uint8)
  mask = np.zeros((5, 7, 3), np.uint8)
  mask[:, 4:] = iSAIDDataset.PALETTE[1]  # ship
  mask[4, 0] = iSAIDDataset.PALETTE[15]  # harbor
  for mode in ("train", "val", "test"):
    (tmp_path / "iSAID" / mode / "images").mkdir(parents=True)
    zip_of(tmp_path / "iSAID" / mode / "images" / "part1.zip", {"images/P0000.png": encode(image, "PNG")})
    if mode != "test":
      (tmp_path / "iSAID" / mode / "Semantic_masks").mkdir()
      zip_of(tmp_path / "iSAID" / mode / "Semantic_masks" / "images.zip",
             {"images/P0000_instance_color_RGB.png": encode(mask, "PNG")})
  out = tmp_path / "out"
  run_tool("isaid", tmp_path / "iSAID", "-o", out, "--patch_width", 4, "--patch_height", 4, "--overlap_area", 2)
  # x in range(0, 7, 2) -> 0, 2, 4->3, 6->3; y in range(0, 5, 2) -> 0, 2->1, 4->1
  windows = sorted({(y, y + 4, x, x + 4) for y in (0, 1) for x in (0, 2, 3)})
  assert listing(out / "img_dir" / "train") == sorted(f"P0000_{a}_{b}_{c}_{d}.png" for a, b, c, d in windows)
  assert listing(out / "img_dir" / "test") == ["P0000.png"]
  label = np.array(Image.open(out / "ann_dir/val/P0000_1_5_0_4_instance_color_RGB.png"))
  np.testing.assert_array_equal(label, [[0, 0, 0, 0]] * 3 + [[15, 0, 0, 0]])
  np.testing.assert_array_equal(np.array(Image.open(out / "ann_dir/val/P0000_0_4_3_7_instance_color_RGB.png")),
                                [[0, 1, 1, 1]] * 4)
  np.testing.assert_array_equal(np.array(Image.open(out / "img_dir/train/P0000_1_5_3_7.png")), image[1:5, 3:7])


def test_converters_name_missing_inputs(tmp_path):
  r = subprocess.run([sys.executable, "tools/convert_datasets/loveda.py", str(tmp_path / "nothing")],
                     cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert r.returncode != 0 and "Train.zip" in r.stderr
