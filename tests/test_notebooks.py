"""The notebooks in notebooks/ (every one found there) run from top to bottom, show a picture,
and are stored without outputs.

Their cells assert what they show (test metrics, the figure files). Each runs in a fresh
kernel with this test's folder as working directory, on a tiny budget (seconds of training).
A notebook whose metadata holds `"weaksup": {"slow": true}` runs only in `make test-all`.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def _is_slow(path: Path) -> bool:
    return bool(nbformat.read(path, as_version=4).metadata.get("weaksup", {}).get("slow"))


EXECUTED = [
    pytest.param(path, id=path.stem, marks=[pytest.mark.slow] if _is_slow(path) else [])
    for path in NOTEBOOKS
]
# Kernel start and imports included; a notebook that needs longer is too big for a tutorial.
MAX_SECONDS = 90


def _code_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_every_method_has_a_notebook() -> None:
    assert {"quickstart", "mil", "minmax", "inversion"} <= {path.stem for path in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    """Outputs (images, tables, paths of the machine that ran it) stay out of git."""
    notebook = nbformat.read(path, as_version=4)
    with_outputs = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]
    assert not with_outputs, (
        f"{path.name}: cells {with_outputs} hold outputs; clear them before committing "
        f"(jupyter nbconvert --clear-output --inplace {path.relative_to(NOTEBOOK_DIR.parent)})"
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # jupyter_client's own deprecations
@pytest.mark.parametrize("path", EXECUTED)
def test_notebook_executes_and_shows_a_picture(path: Path, tmp_path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    seconds = time.perf_counter() - started
    outputs = [output for cell in _code_cells(notebook) for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output.get("output_type") == "error"]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert images, f"{path.name} shows no picture"
    assert seconds < MAX_SECONDS, f"{path.name} took {seconds:.0f} s: shrink it or mark it slow"
