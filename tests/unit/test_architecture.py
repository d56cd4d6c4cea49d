"""The core stays pure: importing it pulls in no framework, driver or ML library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = (
    "joblib", "litestar", "msgspec", "numpy", "polars", "psycopg", "psycopg_pool",
    "sklearn", "xgboost", "yoyo", "fraudscore_adapters",
)  # fmt: skip


def test_importing_the_core_loads_no_forbidden_module() -> None:
    probe = (
        "import sys, fraudscore, fraudscore.service, fraudscore.ports\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_import_linter_contracts_hold() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
