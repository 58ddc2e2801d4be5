"""The walkthrough notebook runs top to bottom (so it never goes stale)."""
import os
import sys
from pathlib import Path

import pytest

import nbclient
import nbformat

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"


@pytest.mark.lava
def test_walkthrough_notebook_executes(monkeypatch):
    # the kernel is started as `python`: make it this environment's interpreter
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parents[1])}}).execute()
    text = "\n".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for out in cell.get("outputs", []))
    assert "clean test accuracy" in text and "agreement 1.000" in text
    assert "ms_mppd_chip" in text
