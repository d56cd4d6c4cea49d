"""The README's main command, end to end: from no data, no model and no key to a serving API
that the curl lines ``run`` prints can call."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fraudscore_adapters.access import key_sha256
from tests.e2e.conftest import bearer, free_port, key_id_of

pytestmark = pytest.mark.e2e

CURL = re.compile(r'^\s*(curl -s -H "Authorization: Bearer (fsk_[A-Za-z0-9_-]+)" -X POST (\S+))$')
"""A curl line ``run`` prints: the whole command, the key, the URL."""


def test_run_generates_data_trains_makes_a_key_and_serves(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSCORE_")}
    env.pop("DATABASE_URL", None)
    env.pop("MIGRATIONS_DATABASE_URL", None)
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
        curls = _curl_lines(process, log)
        key = curls[0][1]
        url = f"http://127.0.0.1:{port}/predict/sync/42"
        answer = _first_answer(url, key, process, log)
        unkeyed = httpx.post(url, timeout=5)
        printed = _run_printed(next(c for c in curls if c[2] == url)[0])
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    text = log.read_text()
    assert answer["user_id"] == 42
    assert str(answer["model_version"]).startswith("xgb-")
    assert (tmp_path / "artifacts" / "current" / "manifest.json").is_file()  # a version, current
    assert "generating 20,000 synthetic rows" in text
    assert f"created API key {key_id_of(key)}" in text
    assert {c[1] for c in curls} == {key}  # one key, in every curl line
    assert len(curls) == 4
    assert unkeyed.status_code == 401
    assert printed["user_id"] == 42
    assert printed["prediction_id"] != answer["prediction_id"]
    keys_file = tmp_path / "data" / "api_keys.json"
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    stored = keys_file.read_text()
    assert key not in stored
    assert key_sha256(key) in stored


def _curl_lines(process: subprocess.Popen[bytes], log: Path) -> list[tuple[str, str, str]]:
    """The curl lines ``run`` prints before it serves: (command, key, URL) each."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        text = log.read_text()
        if "/readyz" in text:  # the last of the lines printed
            found = [m.groups() for m in map(CURL.match, text.splitlines()) if m]
            if found:
                return [(command, key, url) for command, key, url in found]
            pytest.fail(f"run printed no curl line with a key:\n{text[-3000:]}")
        if process.poll() is not None:
            pytest.fail(f"run exited with {process.returncode}:\n{text[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"no curl lines within 240 s:\n{log.read_text()[-3000:]}")


def _first_answer(
    url: str, key: str, process: subprocess.Popen[bytes], log: Path
) -> dict[str, object]:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"run exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            response = httpx.post(url, timeout=2, headers=bearer(key))
            if response.status_code == 200:
                body: dict[str, object] = response.json()
                return body
        time.sleep(0.5)
    pytest.fail(f"no answer within 240 s:\n{log.read_text()[-3000:]}")


def _run_printed(command: str) -> dict[str, object]:
    """Run a printed curl line as a shell would (its words as the shell splits them)."""
    argv = shlex.split(command)
    if shutil.which("curl") is None:  # pragma: no cover - curl is on the test machines
        pytest.skip("no curl to run the printed line with")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    body: dict[str, object] = json.loads(done.stdout)
    return body
