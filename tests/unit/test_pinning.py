"""Pinned models: a folder that is not the expected model is refused before any unpickling.

The folder's own manifest only proves the folder agrees with itself; these tests forge a
folder the way an attacker with write access would (new pickle, manifest re-hashed) and show
the pin, given from outside, refuses it without unpickling anything.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import joblib
import pytest

from fraudscore import ModelUnavailable
from fraudscore_adapters.xgb import (
    TrainConfig,
    XGBScorer,
    manifest_sha256,
    probe_applications,
    read_verified,
    required_pins,
)
from fraudscore_adapters.xgb.__main__ import train_and_report
from fraudscore_adapters.xgb.artifacts import MANIFEST, PREPROCESSOR_FILE, sha256_file

pytestmark = pytest.mark.unit


class _TouchOnUnpickle:
    """Pickles to a payload that creates ``marker`` when unpickled: proof of code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return Path.touch, (self.marker,)


@pytest.fixture
def artifacts(tiny_model: tuple[Path, Path], tmp_path: Path) -> Path:
    """A private copy of the tiny model's artifacts, free to tamper with."""
    return Path(shutil.copytree(tiny_model[1], tmp_path / "artifacts"))


@pytest.fixture
def pin(artifacts: Path) -> str:
    """The pin of the genuine folder, taken before any tampering."""
    return manifest_sha256(artifacts)


def _forbid_unpickling(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Make every unpickling entry point fail and record the attempt (a wrapper may swallow it)."""
    attempts: list[object] = []

    def forbidden(*args: object, **_: object) -> None:
        attempts.append(args)
        raise AssertionError("unpickled a model that is not the pinned one")

    monkeypatch.setattr("fraudscore_adapters.xgb.scorer.joblib.load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    return attempts


def _forge(artifacts: Path, marker: Path) -> None:
    """Do what an attacker with write access would: a hostile pickle, the manifest re-hashed."""
    (artifacts / PREPROCESSOR_FILE).write_bytes(pickle.dumps(_TouchOnUnpickle(marker)))
    path = artifacts / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["artifacts"][PREPROCESSOR_FILE] = sha256_file(artifacts / PREPROCESSOR_FILE)
    path.write_text(json.dumps(manifest, indent=2) + "\n")


def test_manifest_sha256_is_the_sha256_of_the_manifest_bytes(artifacts: Path) -> None:
    expected = hashlib.sha256((artifacts / MANIFEST).read_bytes()).hexdigest()
    assert manifest_sha256(artifacts) == expected


def test_manifest_sha256_of_a_folder_without_manifest_says_so(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match=r"no manifest\.json"):
        manifest_sha256(tmp_path)


def test_the_right_pin_loads_and_scores(artifacts: Path, pin: str) -> None:
    scorer = XGBScorer.load(artifacts, pin=pin)
    unpinned = XGBScorer.load(artifacts)
    probes = probe_applications()
    assert scorer.score(probes).probabilities == unpinned.score(probes).probabilities
    assert len(scorer.score(probes).probabilities) == len(probes)


@pytest.mark.parametrize("spelling", [str.upper, lambda p: f"  {p}\n"])
def test_the_pin_is_read_as_hex_whatever_its_case_or_surrounding_blanks(
    artifacts: Path, pin: str, spelling: Callable[[str], str]
) -> None:
    manifest, _ = read_verified(artifacts, pin=spelling(pin))
    assert manifest.model_version.startswith("xgb-")


def test_a_wrong_pin_is_refused_saying_both_digests(
    artifacts: Path, pin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = _forbid_unpickling(monkeypatch)
    wrong = hashlib.sha256(b"another model").hexdigest()
    with pytest.raises(ModelUnavailable, match="not the pinned model") as refused:
        XGBScorer.load(artifacts, pin=wrong)
    assert attempts == []
    message = str(refused.value)
    assert str(artifacts / MANIFEST) in message
    assert pin[:16] in message
    assert wrong[:16] in message
    assert "FRAUDSCORE_MODEL_SHA256" in message


def test_a_wrong_pin_is_refused_before_any_pickle_is_read(artifacts: Path) -> None:
    """With the pickles gone, the error is still the pin's: they were never reached."""
    for pickled in artifacts.glob("*.pkl"):
        pickled.unlink()
    with pytest.raises(ModelUnavailable, match="not the pinned model"):
        read_verified(artifacts, pin="0" * 64)


def test_a_forged_folder_passes_its_own_manifest_but_not_the_pin(
    artifacts: Path, pin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "payload-ran"
    _forge(artifacts, marker)

    _, blobs = read_verified(artifacts)  # the hole the pin closes: self-attested, accepted
    joblib.load(io.BytesIO(blobs[PREPROCESSOR_FILE]))
    assert marker.exists(), "the forged pickle's payload should run when unpickled"
    marker.unlink()

    attempts = _forbid_unpickling(monkeypatch)
    with pytest.raises(ModelUnavailable, match="not the pinned model"):
        XGBScorer.load(artifacts, pin=pin)
    assert attempts == []
    assert not marker.exists()


def test_a_manifest_edited_alone_is_refused_by_the_pin(artifacts: Path, pin: str) -> None:
    path = artifacts / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["threshold"] = 0.99
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    with pytest.raises(ModelUnavailable, match="not the pinned model"):
        read_verified(artifacts, pin=pin)


@pytest.mark.parametrize("bad", ["abc", "g" * 64, "0" * 63, "0" * 65, "sha256:" + "0" * 64])
def test_a_malformed_pin_is_refused(
    artifacts: Path, bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = _forbid_unpickling(monkeypatch)
    with pytest.raises(ModelUnavailable, match="64 hex digits"):
        XGBScorer.load(artifacts, pin=bad)
    assert attempts == []
    with pytest.raises(ModelUnavailable, match="64 hex digits"):
        required_pins(bad, production=False, allow_unpinned=False)


# --- the policy ----------------------------------------------------------------------------


def test_production_without_a_pin_is_refused_saying_what_to_do() -> None:
    with pytest.raises(ModelUnavailable) as refused:
        required_pins(None, production=True, allow_unpinned=False)
    message = str(refused.value)
    for hint in (
        "FRAUDSCORE_MODEL_SHA256",
        "make train",
        "python -m fraudscore_adapters model-pin",
        "sha256sum data/model_artifacts/current/manifest.json",
        "FRAUDSCORE_ALLOW_UNPINNED_MODEL=on",
    ):
        assert hint in message


def test_production_may_opt_out_of_the_pin() -> None:
    assert required_pins(None, production=True, allow_unpinned=True) is None


@pytest.mark.parametrize("empty", [None, "", "  "])
def test_the_embedded_default_needs_no_pin(empty: str | None) -> None:
    assert required_pins(empty, production=False, allow_unpinned=False) is None


def test_an_empty_pin_counts_as_none_in_production() -> None:
    with pytest.raises(ModelUnavailable, match="FRAUDSCORE_MODEL_SHA256"):
        required_pins("", production=True, allow_unpinned=False)


@pytest.mark.parametrize(("production", "allow"), [(True, False), (True, True), (False, False)])
def test_a_given_pin_is_used_normalized(production: bool, allow: bool) -> None:
    digest = hashlib.sha256(b"model").hexdigest()
    used = required_pins(f" {digest.upper()} ", production=production, allow_unpinned=allow)
    assert used == frozenset({digest})


def test_several_pins_each_let_their_model_load(artifacts: Path, pin: str) -> None:
    """FRAUDSCORE_MODEL_SHA256 may name several manifests (the model a server starts with, the
    one a reload moves to): any of them loads, none other does."""
    other = hashlib.sha256(b"the next model").hexdigest()
    pins = required_pins(f"{other}, {pin.upper()}", production=True, allow_unpinned=False)
    assert pins == frozenset({other, pin})
    assert XGBScorer.load(artifacts, pin=pins).model_version.startswith("xgb-")
    assert XGBScorer.load(artifacts, pin=f"{other},{pin}").model_version.startswith("xgb-")
    third = hashlib.sha256(b"a third").hexdigest()
    with pytest.raises(ModelUnavailable, match="is not a pinned model") as refused:
        read_verified(artifacts, pin=[other, third])
    assert other[:16] in str(refused.value)
    assert third[:16] in str(refused.value)


@pytest.mark.parametrize("bad", [",", " , ", f"{'0' * 64},nope"])
def test_a_pin_list_with_nothing_or_a_bad_pin_in_it_is_refused(bad: str) -> None:
    with pytest.raises(ModelUnavailable, match="SHA-256"):
        required_pins(bad, production=False, allow_unpinned=False)


# --- training hands out the pin ------------------------------------------------------------


def test_training_prints_the_pin(
    tiny_model: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = TrainConfig(seed=3, max_rounds=5, max_depth=2, learning_rate=0.3, n_jobs=1)
    result = train_and_report(tiny_model[0], tmp_path / "out", config)
    line = f"pin this model with FRAUDSCORE_MODEL_SHA256={manifest_sha256(result.out_dir)}"
    assert line in capsys.readouterr().err.splitlines()


def test_the_server_refuses_to_start_on_a_pin_mismatch(
    artifacts: Path, pin: str, tiny_model: tuple[Path, Path]
) -> None:
    """Through the composition root, as production starts: the app's startup fails before
    anything is unpickled, and with the right pin it serves."""
    from litestar.testing import TestClient  # noqa: PLC0415

    from fraudscore_adapters.bootstrap import build_app  # noqa: PLC0415
    from fraudscore_adapters.settings import Settings  # noqa: PLC0415

    data = tiny_model[0]
    wrong = Settings(artifact_dir=artifacts, data_file=data, model_sha256="0" * 64)
    with pytest.raises(BaseExceptionGroup) as refused, TestClient(build_app(wrong)):
        pass  # startup (the lifespan) fails: TestClient raises it in an exception group
    assert refused.group_contains(ModelUnavailable, match="is not the pinned model")
    right = Settings(artifact_dir=artifacts, data_file=data, model_sha256=pin)
    with TestClient(build_app(right)) as client:
        assert client.get("/readyz").json()["checks"]["model"] == "ok"


def test_serve_exits_2_before_any_worker_on_a_pin_mismatch_or_a_missing_pin(
    artifacts: Path,
    tiny_model: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fraudscore_adapters import cli  # noqa: PLC0415

    monkeypatch.setattr("granian.server.Server", _never_called)
    monkeypatch.setenv("FRAUDSCORE_ARTIFACT_DIR", str(artifacts))
    monkeypatch.setenv("FRAUDSCORE_DATA_FILE", str(tiny_model[0]))
    monkeypatch.setenv("FRAUDSCORE_MODEL_SHA256", "f" * 64)
    assert cli.main(["serve"]) == 2
    assert "is not the pinned model" in capsys.readouterr().err
    monkeypatch.delenv("FRAUDSCORE_MODEL_SHA256")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@127.0.0.1:1/none")
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "FRAUDSCORE_MODEL_SHA256" in err
    assert "FRAUDSCORE_ALLOW_UNPINNED_MODEL=on" in err


def _never_called(*_: object) -> None:
    raise AssertionError("the server must not start")
