"""The versioned artifact folder: training publishes a version and moves ``current``
atomically, a flat folder still loads (and becomes a version), pointers move and roll back,
old versions are pruned; the `model` command and `make train`'s skip. Real tiny models."""

from __future__ import annotations

import os
import re
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from fraudscore import ModelUnavailable
from fraudscore_adapters import cli
from fraudscore_adapters.xgb import TrainConfig, XGBScorer, manifest_sha256, read_manifest, versions
from fraudscore_adapters.xgb.__main__ import train_and_report
from fraudscore_adapters.xgb.artifacts import MANIFEST, MODEL_FILE
from fraudscore_adapters.xgb.versions import Located, VersionError
from tests.support import model_version_of, pin_of, tamper, version_names, versioned

pytestmark = pytest.mark.unit

TINY = TrainConfig(seed=5, max_rounds=5, max_depth=2, learning_rate=0.3, n_jobs=1)
NAME = re.compile(r"^\d{8}T\d{6}\.\d{3}Z-xgb-[0-9a-f]{12}$")


@pytest.fixture
def root(model_root: Path) -> Path:
    return model_root


# --- the layout ------------------------------------------------------------------------------


def test_training_publishes_versions_and_moves_the_pointers(
    tiny_model: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "artifacts"
    first = train_and_report(tiny_model[0], root, TINY, versioned=True)
    second = train_and_report(tiny_model[0], root, replace(TINY, seed=6), versioned=True)
    a, b = versions.versions(root)
    assert NAME.fullmatch(a)
    assert NAME.fullmatch(b)
    assert (first.out_dir, second.out_dir) == (root / "versions" / a, root / "versions" / b)
    assert os.readlink(root / "current") == f"versions/{b}"  # relative: mountable elsewhere
    assert os.readlink(root / "previous") == f"versions/{a}"
    assert versions.locate(root) == Located((root / "versions" / b).resolve(), b)
    assert not [p for p in (root / "versions").iterdir() if p.name.startswith(".")]
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no pointer left behind
    err = capsys.readouterr().err
    assert f"published version {b}: current -> it; previous -> {a}" in err
    assert f"FRAUDSCORE_MODEL_SHA256={manifest_sha256(root / 'current')}" in err


def test_a_failed_training_leaves_current_as_it_was(
    root: Path, tiny_model: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = version_names(root)

    def fail(*_: object, **__: object) -> None:
        raise MemoryError("out of memory halfway")

    monkeypatch.setattr("fraudscore_adapters.xgb.__main__.train_file", fail)
    with pytest.raises(MemoryError):
        train_and_report(tiny_model[0], root, TINY, versioned=True)
    assert versions.pointer(root, "current") == a
    assert len(versions.versions(root)) == 2
    assert not [p for p in (root / "versions").iterdir() if p.name.startswith(".")]


def test_training_over_a_flat_folder_keeps_its_model_as_previous(
    tiny_model: tuple[Path, Path], tmp_path: Path
) -> None:
    root = Path(shutil.copytree(tiny_model[1], tmp_path / "artifacts"))
    (root / "README.md").write_text("the folder's own readme\n")
    flat_pin = manifest_sha256(root)
    train_and_report(tiny_model[0], root, TINY, versioned=True)
    adopted = versions.pointer(root, "previous")
    assert adopted is not None
    assert adopted in versions.versions(root)
    assert manifest_sha256(root / "previous") == flat_pin  # the same bytes, moved
    assert not (root / MANIFEST).exists()
    assert not (root / MODEL_FILE).exists()
    assert (root / "README.md").is_file()  # not the model's: left where it was
    assert versions.pointer(root, "current") != adopted


def test_a_flat_folder_still_loads_and_current_wins_over_it(
    tiny_model: tuple[Path, Path], second_tiny_model: Path, tmp_path: Path
) -> None:
    flat = Path(shutil.copytree(tiny_model[1], tmp_path / "flat"))
    assert versions.locate(flat) == Located(flat, None)
    assert XGBScorer.load(flat).model_version == read_manifest(flat).model_version
    (b,) = versioned(flat, second_tiny_model)
    assert versions.locate(flat).version == b
    with pytest.raises(ModelUnavailable, match=r"no manifest\.json and no current pointer"):
        versions.locate(tmp_path / "empty")


def test_moving_the_pointer_never_leaves_it_missing(root: Path) -> None:
    """A reader resolving `current` while it moves back and forth 300 times sees A or B,
    never an error or a mix."""
    a, b = version_names(root)
    pins = {pin_of(root, a), pin_of(root, b)}
    seen: list[str] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                seen.append(manifest_sha256(versions.locate(root).path))
            except BaseException as exc:
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(300):
            versions.use(root, b if i % 2 == 0 else a)
    finally:
        done.set()
        reader.join()
    assert errors == []
    assert set(seen) <= pins
    assert len(seen) > 10


def test_use_and_rollback_swap_current_and_previous(root: Path) -> None:
    a, b = version_names(root)
    assert versions.rollback(root) == (a, b)
    assert (versions.pointer(root, "current"), versions.pointer(root, "previous")) == (b, a)
    assert versions.rollback(root) == (b, a)  # a second rollback goes forward again
    assert versions.use(root, a) == (a, a)  # already current: nothing moves
    assert versions.pointer(root, "previous") == b


@pytest.mark.parametrize("bad", ["../artifacts", ".incoming-1", "current", "a/b", "", "nope"])
def test_only_an_existing_version_can_be_used(root: Path, bad: str) -> None:
    with pytest.raises(VersionError):
        versions.use(root, bad)


def test_rollback_without_a_previous_version_says_so(
    tiny_model: tuple[Path, Path], tmp_path: Path
) -> None:
    root = tmp_path / "artifacts"
    versioned(root, tiny_model[1])
    with pytest.raises(VersionError, match="no previous version"):
        versions.rollback(root)


def test_pruning_keeps_the_newest_and_never_current_or_previous(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    made = [f"2025010{i}T000000Z-xgb-{i:012x}" for i in range(1, 10)]
    for name in made:
        (root / "versions" / name).mkdir(parents=True)
    versions.use(root, made[1])
    versions.use(root, made[0])  # current: the oldest; previous: the second oldest
    deleted = versions.prune(root, keep=5)
    assert deleted == made[2:4]
    assert versions.versions(root) == [made[0], made[1], *made[4:]]


# --- the command line ------------------------------------------------------------------------


@pytest.fixture
def model_cli(root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FRAUDSCORE_ARTIFACT_DIR", str(root))
    for name in ("FRAUDSCORE_MODEL_SHA256", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return root


def test_model_list_use_rollback_and_pin(
    model_cli: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = model_cli
    a, b = version_names(root)
    capsys.readouterr()
    assert cli.main(["model", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert re.match(rf"^current\s+{a}\s+{model_version_of(root, a)}\s+\d\.\d{{6}}\s+"
                    f"{pin_of(root, a)}$", out[1])  # fmt: skip
    assert out[2].startswith(f"previous  {b}")
    assert cli.main(["model-pin"]) == 0
    assert capsys.readouterr().out == pin_of(root, a) + "\n"
    assert cli.main(["model", "use", b]) == 0
    assert f"current -> {b} (previous -> {a})" in capsys.readouterr().err
    assert cli.main(["model", "rollback"]) == 0
    assert versions.pointer(root, "current") == a
    monkeypatch.setenv("FRAUDSCORE_MODEL_SHA256", pin_of(root, a))
    assert cli.main(["model", "use", b]) == 0
    assert "pinned servers refuse it" in capsys.readouterr().err
    bad = tamper(root, a)
    assert cli.main(["model", "use", bad]) == 2  # junk is not pointed at
    assert "fails its integrity check" in capsys.readouterr().err
    assert versions.pointer(root, "current") == b
    assert cli.main(["model", "use", "nope"]) == 2


def test_make_train_skips_while_a_model_is_current(
    model_cli: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, _ = version_names(model_cli)
    assert cli.main(["train"]) == 0
    assert f"(current -> {a}) (make train FORCE=1" in capsys.readouterr().err
    assert len(versions.versions(model_cli)) == 2
