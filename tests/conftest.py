"""Shared fixtures. ``ORACLE``/``FIXTURES`` point at ../shared (outputs of the real MMSegmentation);
tests that need them skip when the folder is absent."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = os.environ.get("SEGJAX_SHARED", os.path.join(ROOT, "..", "shared"))
ORACLE = os.path.join(SHARED, "oracle")
FIXTURES = os.path.join(SHARED, "fixtures", "mmseg_testdata")


def require(path):
  if not os.path.exists(path):
    pytest.skip(f"{path} not available")
  return path


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
  """A small generated dataset (16 train / 8 val images of 64 px)."""
  from segjax.data import synthetic
  root = str(tmp_path_factory.mktemp("synthetic") / "data")
  return synthetic.ensure_dataset(root, num_train=16, num_val=8, size=64, seed=3)
