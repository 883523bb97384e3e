"""Every config variant builds its model at full size (jax.eval_shape, no memory) and names
map one-to-one to mmseg config names."""
import glob
import importlib
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT
from segjax.models import build_segmentor

CONFIG_FILES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "*_*.py"))
                      if not os.path.basename(p).startswith("__"))
CASES = [(name, v) for name in CONFIG_FILES
         for v in getattr(importlib.import_module(f"configs.{name}"), "PUBLISHED_MIOU", ("r18",))]


@pytest.mark.parametrize("name,variant", CASES, ids=[f"{n}:{v}" for n, v in CASES])
def test_variant_builds_at_full_size(name, variant):
  config = importlib.import_module(f"configs.{name}").get_config(variant)
  model = build_segmentor(config.model)
  h, w = config.data.train.pipeline[3]["crop_size"]
  x = jax.ShapeDtypeStruct((1, h, w, 3), np.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
  out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
  num_classes = config.model.decode_head.num_classes
  assert out["decode"].shape[-1] == num_classes
  n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(variables["params"]))
  depth = config.model.backbone.depth
  # Published sizes: ResNet-18/50/101 trunks have 11.2M/23.5M/42.5M conv+BN parameters without fc.
  trunk = {18: 11.17e6, 50: 23.5e6, 101: 42.5e6}[depth] if name != "pspnet_synthetic" else 0
  assert n_params > trunk


def test_variant_names_match_mmseg_config_names():
  from configs import pspnet_cityscapes
  c = pspnet_cityscapes.get_config("r101-d8_769x769_80k")
  assert c.model.backbone.depth == 101 and c.total_iters == 80000
  assert c.model.decode_head.align_corners and c.model.test_cfg.mode == "slide"
  assert tuple(c.model.test_cfg.crop_size) == (769, 769) and tuple(c.model.test_cfg.stride) == (513, 513)
  assert c.data.train.pipeline[3]["crop_size"] == (769, 769)
  c = pspnet_cityscapes.get_config("r18b-d8_512x1024_80k")
  assert c.model.backbone.type == "ResNet" and c.model.decode_head.channels == 128
  with pytest.raises(ValueError, match="r50-d8_512x1024_40k"):
    pspnet_cityscapes.get_config("r50-d8_1x1_1k")


def test_dataset_specific_settings_follow_mmseg():
  from configs import pspnet_coco_stuff10k, pspnet_dark, pspnet_isaid, pspnet_pascal_context_59
  c = pspnet_pascal_context_59.get_config("r101-d8_480x480_80k")
  assert c.model.decode_head.num_classes == 59 and c.data.train.type == "PascalContextDataset59"
  assert c.model.test_cfg.mode == "slide" and tuple(c.model.test_cfg.stride) == (320, 320)
  assert c.optimizer.lr == 0.004 and c.optimizer.weight_decay == 1e-4 and c.total_iters == 80000
  assert c.data.train.pipeline[1]["reduce_zero_label"]
  c = pspnet_coco_stuff10k.get_config("r101-d8_512x512_4x4_40k")  # mmseg's 4x4 (GPUs x images) token
  assert c.data.samples_per_gpu == 4 and c.model.decode_head.num_classes == 171 and c.total_iters == 40000
  c = pspnet_isaid.get_config("r18-d8_4x4_896x896_80k")
  assert c.data.train.pipeline[3]["crop_size"] == (896, 896) and c.model.decode_head.channels == 128
  c = pspnet_dark.get_config("r101b-d8_512x1024_80k")  # trained on Cityscapes, tested on Dark Zurich
  assert c.data.train.type == "CityscapesDataset" and c.data.val.type == "DarkZurichDataset"


def test_readme_model_table_lists_every_variant_with_its_published_miou():
  with open(os.path.join(ROOT, "README.md")) as f:
    rows = {tuple(cell.strip() for cell in line.strip().strip("|").split("|"))
            for line in f if line.startswith("| ") and line.count("|") == 4}
  expected = {(name, v, f"{miou:.2f}") for name in CONFIG_FILES
              for v, miou in getattr(importlib.import_module(f"configs.{name}"), "PUBLISHED_MIOU", {}).items()}
  assert expected and expected <= rows, sorted(expected - rows)[:5]


def test_canonical_job_without_data_points_to_converter(tmp_path):
  if os.path.isdir(os.path.join(ROOT, "data", "cityscapes")):
    pytest.skip("data/cityscapes exists here")
  r = subprocess.run([sys.executable, "main.py", "--config=configs/pspnet_cityscapes.py",
                      f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode != 0
  assert "tools/convert_datasets/cityscapes.py" in r.stderr and "data/cityscapes" in r.stderr
