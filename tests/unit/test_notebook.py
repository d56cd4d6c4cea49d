"""The EDA notebook: paired with its jupytext twin, committed clean, and runnable end to end.

The run executes ``notebooks/eda.ipynb`` in a real ``python3`` kernel of this environment on a
small generated sample (``FRAUDSCORE_DATA_FILE`` points the project's own dataset lookup at it),
through the same code as ``make eda`` (``notebooks/run_eda.py``), HTML export included.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import jupytext  # type: ignore[import-untyped]
import nbformat
import pytest

from fraudscore_adapters.baf.synthetic import SYNTHETIC_FILE_STEM, generate

pytestmark = pytest.mark.unit

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOK = NOTEBOOKS / "eda.ipynb"
SCRIPT = NOTEBOOKS / "eda.py"
HEADER = re.compile(r"\A# ---\n(?:#.*\n)*?# ---\n")
"""The jupytext YAML header of a percent script (it carries version stamps; cells follow)."""


def load_runner() -> ModuleType:
    """``notebooks/run_eda.py`` as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location("run_eda", NOTEBOOKS / "run_eda.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_notebook(path: Path) -> Any:
    """A notebook file as an ``nbformat`` v4 node."""
    return nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]


def test_notebooks_are_paired_by_the_jupytext_config() -> None:
    config = tomllib.loads((NOTEBOOKS / "jupytext.toml").read_text(encoding="utf-8"))
    assert config["formats"] == "ipynb,py:percent"


def test_the_ipynb_is_the_percent_script_converted() -> None:
    """Regenerate with ``uv run jupytext --to ipynb notebooks/eda.py`` when this fails."""
    nb = read_notebook(NOTEBOOK)
    script = SCRIPT.read_text(encoding="utf-8")
    converted = jupytext.writes(nb, fmt="py:percent")
    assert HEADER.match(script), "eda.py lost its jupytext header"
    assert HEADER.sub("", converted) == HEADER.sub("", script)
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_the_committed_ipynb_has_no_outputs() -> None:
    nb = read_notebook(NOTEBOOK)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)


def _texts(outputs: list[Any]) -> str:
    parts = []
    for output in outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        data = output.get("data", {})
        parts += [data[k] for k in ("text/markdown", "text/plain", "text/html") if k in data]
    return "\n".join(parts)


def test_the_notebook_runs_on_a_small_synthetic_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / f"{SYNTHETIC_FILE_STEM}_n20000_seed1.parquet"
    generate(20_000, seed=1).write_parquet(data)
    monkeypatch.setenv("FRAUDSCORE_DATA_FILE", str(data))
    runner = load_runner()
    nb = read_notebook(NOTEBOOK)

    runner.execute(nb, timeout=300, progress=False)  # raises CellExecutionError on any failure
    html = runner.export_html(nb, tmp_path / "report" / "eda.html").read_text(encoding="utf-8")

    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    outputs = [output for cell in code for output in cell.outputs]
    assert all(cell.execution_count is not None for cell in code)
    assert not [o for o in outputs if o.output_type == "error"]
    stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not [t for t in stderr if "Warning" in t], stderr
    text = _texts(outputs)
    assert "**Data: SYNTHETIC**" in text
    assert str(data) in text
    assert "20,000 rows" in text
    # The missing-value table and its conclusion name the sentinel columns.
    assert "prev_address_months_count" in text
    assert "naive null count finds **0** missing values" in text
    assert "Missingness carries signal" in text
    assert "imputed with the **median**" in text
    assert "threshold is the score at 5% FPR" in text
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 7  # missingness, months, numerics, categoricals, binaries, age, rho
    assert html.count("data:image/png") >= len(figures)
