"""Conformance with MMSegmentation 0.30's 644 configs (../shared/reference): every config whose
classes segjax has builds at full size (``jax.eval_shape``) with mmseg's parameter count and takes
mmseg's state_dict key for key; every other config fails naming a class segjax lacks; README's
table says how many run per folder.

By default one model per key listing of the fcn and pspnet folders is checked; the rest is marked
slow (``pytest --run-slow``, or CI=true as .ci/run sets).
"""
import os

import pytest

from conftest import ROOT, SHARED
from segjax.convert import conformance

REFERENCE = os.path.join(SHARED, "reference")
INDEX = conformance.load_index(REFERENCE) if os.path.exists(os.path.join(REFERENCE, "mmseg_zoo")) else {}
ARCHITECTURES = conformance.architectures(REFERENCE, INDEX) if INDEX else []
FAST_FOLDERS = ("fcn", "pspnet")
# The folders whose every config must run (issue 16's acceptance).
COMPLETE_FOLDERS = ("fcn", "pspnet", "deeplabv3", "deeplabv3plus", "upernet")


def _params():
  fast_keys = set()
  params = []
  for arch in ARCHITECTURES:
    fast = arch.configs[0].split("/")[0] in FAST_FOLDERS and arch.keys_file not in fast_keys
    fast_keys.add(arch.keys_file)
    params.append(pytest.param(arch, id=arch.configs[0], marks=() if fast else pytest.mark.slow))
  return params


@pytest.fixture(scope="module")
def counts():
  if not INDEX:
    pytest.skip(f"{REFERENCE} not available")
  return conformance.family_counts(REFERENCE, INDEX)


@pytest.mark.parametrize("arch", _params())
def test_model_has_mmseg_parameters_and_state_dict(arch):
  conformance.check_architecture(REFERENCE, arch)


def test_configs_with_a_class_segjax_lacks_fail_naming_it():
  if not INDEX:
    pytest.skip(f"{REFERENCE} not available")
  wrong = []
  for config, entry in sorted(INDEX.items()):
    missing = conformance.missing_classes(entry)
    if not missing:
      continue
    error = conformance.build_error(REFERENCE, config)
    if error is None or not any(name in error for name in missing):
      wrong.append(f"{config}: lacks {missing}, build error: {error}")
  assert not wrong, "\n".join(wrong)


def test_complete_folders_run_every_config(counts):
  assert {f: counts[f] for f in COMPLETE_FOLDERS} == {f: (counts[f][1],) * 2 for f in COMPLETE_FOLDERS}
  assert sum(counts[f][1] for f in COMPLETE_FOLDERS) == 225


def test_readme_table_is_generated_from_this_data(counts):
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
  section = conformance.readme_section(counts)
  assert section in readme, "README's conformance table is stale: python tools/conformance_table.py --write README.md"
