"""The notebooks in experiments/notebooks run headless top to bottom (nbclient), offline and on
small settings: the inference notebook converts a stand-in mmseg checkpoint and segments a
generated frame, the training notebook trains 20 steps and plots the curve."""
import os

import pytest

from conftest import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


@pytest.mark.parametrize("name", ["inference", "train"])
def test_notebook_runs(name, monkeypatch, tmp_path):
  monkeypatch.setenv("SEGJAX_NOTEBOOK_OFFLINE", "1")
  monkeypatch.setenv("SEGJAX_NOTEBOOK_STEPS", "20")
  monkeypatch.setenv("SEGJAX_CACHE", str(tmp_path / "cache"))
  nb = nbformat.read(os.path.join(ROOT, "experiments", "notebooks", f"{name}.ipynb"), as_version=4)
  nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                          resources={"metadata": {"path": ROOT}}).execute()
  outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
  assert not [o for o in outputs if o.output_type == "error"]
  assert any(o.output_type == "display_data" and "image/png" in o.get("data", {}) for o in outputs)
