"""Execute the EDA notebook on the project's dataset and export it as an HTML report.

``make eda`` runs ``uv run python notebooks/run_eda.py``: it executes ``notebooks/eda.ipynb``
top to bottom in a fresh ``python3`` kernel of this environment (the dataset is the one the
project uses: ``FRAUDSCORE_DATA_FILE``, else a real BAF file in ``data/raw``, else the synthetic
set, generated if needed), prints each cell's progress to stderr, and writes the executed
notebook as ``reports/eda.html``. The committed notebook is never modified.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter

__all__ = ["NOTEBOOK", "REPORT", "execute", "export_html", "main"]

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "eda.ipynb"
REPORT = HERE.parent / "reports" / "eda.html"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _first_line(cell: Any) -> str:
    lines = [s for s in str(cell.source).splitlines() if s.strip() and not s.startswith("%")]
    return (lines[0] if lines else "")[:70]


def execute(
    nb: nbformat.NotebookNode, cwd: Path = HERE, *, timeout: int = 1800, progress: bool = True
) -> nbformat.NotebookNode:
    """Run ``nb`` in place in a fresh ``python3`` kernel started in ``cwd``; return it.

    The kernel inherits this process's environment (so ``FRAUDSCORE_*`` settings reach it).
    Raises ``CellExecutionError`` at the first failing cell; ``nb`` then holds the outputs so
    far, the traceback included.
    """
    code_cells = sum(1 for cell in nb.cells if cell.cell_type == "code")
    started: dict[str, float] = {}
    done = [0]

    def on_start(cell: Any, cell_index: int) -> None:
        started["cell"] = time.perf_counter()

    def on_executed(cell: Any, cell_index: int, execute_reply: Any) -> None:
        done[0] += 1
        seconds = time.perf_counter() - started.get("cell", time.perf_counter())
        if progress:
            _log(f"  [{done[0]:>2}/{code_cells}] {seconds:6.1f}s  {_first_line(cell)}")

    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=timeout,
        resources={"metadata": {"path": str(cwd)}},
        on_cell_start=on_start,
        on_cell_executed=on_executed,
    )
    client.execute()
    return nb


def export_html(nb: nbformat.NotebookNode, output: Path) -> Path:
    """Write an executed notebook as a self-contained HTML page (figures embedded)."""
    body, _ = HTMLExporter().from_notebook_node(nb)  # type: ignore[no-untyped-call]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(body, encoding="utf-8")
    return output


def main(argv: list[str] | None = None) -> int:
    """Execute the notebook and write the report; 1 if a cell fails (the report shows where)."""
    parser = argparse.ArgumentParser(description="Execute notebooks/eda.ipynb; write HTML.")
    parser.add_argument("--notebook", type=Path, default=NOTEBOOK)
    parser.add_argument("--output", type=Path, default=REPORT)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args(argv)
    _log(f"executing {args.notebook} (a python3 kernel; progress per code cell)")
    started = time.perf_counter()
    nb = nbformat.read(args.notebook, as_version=4)  # type: ignore[no-untyped-call]
    status = 0
    try:
        execute(nb, args.notebook.parent, timeout=args.timeout)
    except CellExecutionError as exc:
        _log(f"a cell failed:\n{exc}")
        status = 1
    _log(f"executed in {time.perf_counter() - started:.1f}s")
    path = export_html(nb, args.output)
    _log(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return status


if __name__ == "__main__":
    sys.exit(main())
