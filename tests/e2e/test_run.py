"""The README's main command, end to end: from no data and no model to a serving API."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import free_port

pytestmark = pytest.mark.e2e


def test_run_generates_data_trains_and_serves(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSCORE_")}
    env.pop("DATABASE_URL", None)
    env |= {
        "FRAUDSCORE_DATA_DIR": str(tmp_path / "data"),
        "FRAUDSCORE_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "FRAUDSCORE_SYNTHETIC_ROWS": "20000",
        "FRAUDSCORE_PORT": str(port),
    }
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "fraudscore_adapters", "run"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        answer = _first_answer(f"http://127.0.0.1:{port}/predict/sync/42", process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    assert answer["user_id"] == 42
    assert str(answer["model_version"]).startswith("xgb-")
    assert (tmp_path / "artifacts" / "manifest.json").is_file()
    assert "generating 20,000 synthetic rows" in log.read_text()


def _first_answer(url: str, process: subprocess.Popen[bytes], log: Path) -> dict[str, object]:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"run exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            response = httpx.post(url, timeout=2)
            if response.status_code == 200:
                body: dict[str, object] = response.json()
                return body
        time.sleep(0.5)
    pytest.fail(f"no answer within 240 s:\n{log.read_text()[-3000:]}")
