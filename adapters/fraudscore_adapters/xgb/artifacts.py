"""The artifact directory's manifest: what was trained, with what, and every file's SHA-256.

Loading is checked before anything is unpickled (unpickling runs code): the manifest must
parse, list the pickles, name only plain files of the directory, match the schema's features
and the installed libraries, and every listed file must exist with the recorded SHA-256. The
pickles are hashed from the very bytes that are then unpickled, so a file swapped between
the check and the load is never used.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import polars as pl
import sklearn
import xgboost

from fraudscore import FEATURE_NAMES, ModelUnavailable

__all__ = [
    "MANIFEST",
    "MODEL_FILE",
    "PREPROCESSOR_FILE",
    "Manifest",
    "library_versions",
    "read_manifest",
    "read_verified",
    "sha256_bytes",
    "sha256_file",
    "version_problems",
    "write_manifest",
]

MANIFEST = "manifest.json"
MODEL_FILE = "model.pkl"
PREPROCESSOR_FILE = "preprocessor.pkl"
PICKLES = (PREPROCESSOR_FILE, MODEL_FILE)

_MUST_MATCH = {"xgboost": 2, "scikit-learn": 2, "numpy": 1}
"""Leading version parts that must match to load: pickles of these do not travel across them."""


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Installed versions of Python and of the libraries the artifacts depend on."""
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "xgboost": xgboost.__version__,
        "joblib": joblib.__version__,
        "polars": pl.__version__,
    }


def version_problems(recorded: Mapping[str, str], installed: Mapping[str, str]) -> list[str]:
    """Why artifacts made with ``recorded`` versions cannot load under ``installed`` ones."""
    problems = []
    for name, parts in _MUST_MATCH.items():
        was, now = recorded.get(name, "?"), installed.get(name, "?")
        if was.split(".")[:parts] != now.split(".")[:parts]:
            scope = "major.minor" if parts == 2 else "major"
            problems.append(f"{name} {was} was used to train, {now} is installed ({scope} differ)")
    return problems


@dataclass(frozen=True, slots=True)
class Manifest:
    """The checked fields of a manifest; ``fields`` holds all of it as parsed."""

    model_version: str
    threshold: float
    artifacts: dict[str, str]
    versions: dict[str, str]
    fields: dict[str, Any]


def write_manifest(out_dir: Path, fields: Mapping[str, object], files: Iterable[str]) -> Path:
    """Write ``manifest.json``: ``fields`` plus library versions and each file's SHA-256."""
    content = {
        **fields,
        "versions": library_versions(),
        "artifacts": {name: sha256_file(out_dir / name) for name in files},
    }
    path = out_dir / MANIFEST
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    return path


def read_manifest(artifact_dir: Path) -> Manifest:
    """Parse and check the manifest's structure (not the files); raise ModelUnavailable."""
    path = artifact_dir / MANIFEST
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelUnavailable(f"no {MANIFEST} in {artifact_dir}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelUnavailable(f"cannot read {path}: {exc}") from exc
    try:
        return _checked(fields)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelUnavailable(f"{path} is malformed: {exc!r}") from exc


def _checked(fields: Any) -> Manifest:
    artifacts = {str(k): str(v) for k, v in fields["artifacts"].items()}
    versions = {str(k): str(v) for k, v in fields["versions"].items()}
    bad_names = [n for n in artifacts if Path(n).name != n or n in ("", ".", "..")]
    if bad_names or not set(PICKLES) <= set(artifacts):
        raise ValueError(f"artifacts must list {list(PICKLES)} as plain file names: {artifacts}")
    if tuple(fields["features"]) != FEATURE_NAMES:
        raise ValueError("its feature list is not this schema's")
    model_version, threshold = str(fields["model_version"]), float(fields["threshold"])
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold {threshold} is not a probability")
    return Manifest(model_version, threshold, artifacts, versions, dict(fields))


def read_verified(artifact_dir: Path) -> tuple[Manifest, dict[str, bytes]]:
    """The manifest and the pickles' bytes, after every check; raise ModelUnavailable.

    Checks, in order: the manifest, library versions, that every listed file exists, and that
    every listed file has its recorded SHA-256. Nothing is unpickled here.
    """
    manifest = read_manifest(artifact_dir)
    problems = version_problems(manifest.versions, library_versions())
    if problems:
        raise ModelUnavailable(f"{artifact_dir}: " + "; ".join(problems))
    missing = [n for n in manifest.artifacts if not (artifact_dir / n).is_file()]
    if missing:
        raise ModelUnavailable(f"{artifact_dir} lacks {', '.join(missing)}")
    blobs = {name: (artifact_dir / name).read_bytes() for name in PICKLES}
    for name, expected in manifest.artifacts.items():
        got = sha256_bytes(blobs[name]) if name in blobs else sha256_file(artifact_dir / name)
        if got != expected:
            raise ModelUnavailable(
                f"{artifact_dir / name} fails its integrity check: SHA-256 {got[:16]}...,"
                f" manifest says {expected[:16]}..."
            )
    return manifest, blobs
