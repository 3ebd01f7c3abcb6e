"""notebooks/quickstart.ipynb runs top to bottom on CPU (against a tiny random checkpoint)."""
import pathlib

import pytest


NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tiny_checkpoint, tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  monkeypatch.setenv("DIFF2LIP_CHECKPOINT", tiny_checkpoint)
  monkeypatch.setenv("DIFF2LIP_RESPACING", "ddim2")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(notebook, timeout=240, kernel_name="python3",
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute()
  outputs = {i: cell.get("outputs", []) for i, cell in enumerate(notebook.cells)
             if cell.cell_type == "code"}
  errors = [o for cell in outputs.values() for o in cell if o.get("output_type") == "error"]
  assert not errors
  text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                 for cell in outputs.values() for o in cell)
  assert "Pearson r" in text and ", 32, 32, 3), dtype('uint8'))" in text
  assert "LipSyncResult" in text and "'ddim2'" in text
  assert any("video/mp4" in str(o.get("data", {})) or "<video" in str(o.get("data", {}))
             for cell in outputs.values() for o in cell)
