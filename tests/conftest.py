"""Shared fixtures. ``ORACLE``/``FIXTURES`` point at ../shared (outputs of the real MMSegmentation);
tests that need them skip when the folder is absent."""
import atexit
import os
import shutil
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# Tools the tests start as subprocesses print a Python stack if they crash in native code.
os.environ.setdefault("PYTHONFAULTHANDLER", "1")
# One JAX compilation cache per test session, shared by the workers and by the runs tests start
# as subprocesses: the same tiny training program, compiled by the first run (an unbroken run,
# then its killed and resumed twins, the CLI runs), is loaded by the rest. A fresh directory, so
# a session's time does not depend on earlier sessions.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="segjax-tests-jax-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
SHARED = os.environ.get("SEGJAX_SHARED", os.path.join(ROOT, "..", "shared"))
ORACLE = os.path.join(SHARED, "oracle")
FIXTURES = os.path.join(SHARED, "fixtures", "mmseg_testdata")


def fast_jit(fun, **kwargs):
  """``jax.jit`` for a check that runs once on tiny inputs: compiled without XLA's optimisations
  (``xla_flags.unoptimised_options``), since optimising compiles, or op-by-op dispatch of a deep
  network's thousands of operations, would take most of the test's time."""
  import jax
  from segjax import xla_flags
  return jax.jit(fun, compiler_options=xla_flags.unoptimised_options(), **kwargs)


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


def pytest_addoption(parser):
  parser.addoption("--run-slow", action="store_true",
                   help="also run tests marked slow (CI runs them: .ci/run sets CI=true)")


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: runs only with --run-slow or CI=true (e.g. the full "
                          "conformance set over mmseg's configs)")


def pytest_collection_modifyitems(config, items):
  if config.getoption("--run-slow") or os.environ.get("CI", "").lower() == "true":
    return
  skip = pytest.mark.skip(reason="slow: runs with --run-slow or CI=true")
  for item in items:
    if "slow" in item.keywords:
      item.add_marker(skip)


@pytest.hookimpl(optionalhook=True)  # xdist's hook: absent under -p no:xdist
def pytest_xdist_auto_num_workers(config):
  """``-n auto`` (pytest.ini): one worker per CPU, at most 4, since each holds its own JAX runtime."""
  return max(1, min(os.cpu_count() or 1, 4))
