"""Every notebook in ``notebooks/`` runs top to bottom on the quick preset.

Notebooks are jupytext percent-format files; each code cell is executed in order in one
namespace (what a kernel does, minus the kernel), with ``LLJAX_PRESET=quick`` and the
output folder in a temporary directory. Marked ``slow``: CI runs them in their own step.
"""

import json
import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.py"))


def _code_cells(path: Path) -> list[str]:
    jupytext = pytest.importorskip("jupytext")
    nb = jupytext.read(path)
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_every_experiment_has_a_notebook():
    import lljax as ll

    assert set(ll.experiments.names()) <= {p.stem for p in NOTEBOOKS}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    cells = _code_cells(path)
    assert cells, f"{path.name} has no code cells"
    out = tmp_path / "out"
    monkeypatch.setenv("LLJAX_PRESET", "quick")
    monkeypatch.setenv("LLJAX_OUT", str(out))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__", "__file__": os.fspath(path)}
    for i, source in enumerate(cells):
        try:
            exec(compile(source, f"{path.name}[cell {i}]", "exec"), namespace)
        except Exception as e:  # name the cell: the traceback alone points into exec
            raise AssertionError(f"{path.name}: code cell {i} failed: {e!r}") from e
    record = json.loads((out / "results.json").read_text())
    assert record["experiment"] == path.stem and record["preset"] == "quick"
    assert (out / "report.html").exists()
