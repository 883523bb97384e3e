import os

import numpy as np
from PIL import Image

from segjax.data import synthetic


def test_render_is_deterministic_and_seed_dependent():
  a_img, a_lab = synthetic.render_scene(11)
  b_img, b_lab = synthetic.render_scene(11)
  c_img, _ = synthetic.render_scene(12)
  assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
  assert not np.array_equal(a_img, c_img)


def test_labels_are_classes_or_ignore_and_all_classes_occur():
  seen = set()
  for seed in range(40):
    _, label = synthetic.render_scene(seed)
    values = set(np.unique(label).tolist())
    assert values <= set(range(len(synthetic.CLASSES))) | {255}
    seen |= values
  assert seen == set(range(len(synthetic.CLASSES))) | {255}


def test_boundaries_between_regions_are_ignored():
  _, label = synthetic.render_scene(5)
  for a, b in ((label[1:], label[:-1]), (label[:, 1:], label[:, :-1])):
    touching = (a != b) & (a != 255) & (b != 255)
    assert not touching.any(), "two different classes touch without an ignore band"


def test_colour_alone_does_not_identify_the_class():
  # Mean colour of each object's pixels: nearest-centroid on colour must be far from perfect.
  colours, classes = [], []
  for seed in range(30):
    img, label = synthetic.render_scene(seed)
    for c in range(1, len(synthetic.CLASSES)):
      m = label == c
      if m.sum() > 50:
        colours.append(img[m].mean(0))
        classes.append(c)
  colours, classes = np.array(colours), np.array(classes)
  centroids = np.stack([colours[classes == c].mean(0) for c in range(1, len(synthetic.CLASSES))])
  pred = 1 + np.argmin(((colours[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
  assert (pred == classes).mean() < 0.7


def test_ensure_dataset_writes_mmseg_layout(tmp_path):
  root = synthetic.ensure_dataset(str(tmp_path / "d"), num_train=3, num_val=2, size=48, seed=1)
  for split, n in (("train", 3), ("val", 2)):
    imgs = sorted(os.listdir(os.path.join(root, "img_dir", split)))
    anns = sorted(os.listdir(os.path.join(root, "ann_dir", split)))
    assert imgs == anns == [f"{i:05d}.png" for i in range(n)]
  label = np.array(Image.open(os.path.join(root, "ann_dir", "train", "00000.png")))
  img = np.array(Image.open(os.path.join(root, "img_dir", "train", "00000.png")))
  assert label.shape == (48, 48) and label.dtype == np.uint8 and img.shape == (48, 48, 3)
  # The written image is the rendered one (RGB on disk after cv2's BGR write).
  ref_img, ref_label = synthetic.render_scene(1 * 1_000_003 + 0, 48)
  assert np.array_equal(img, ref_img) and np.array_equal(label, ref_label)
  # A second call with the marker present reuses the folder.
  assert synthetic.ensure_dataset(root) == root
