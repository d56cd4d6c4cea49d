"""The artifact directory's manifest: what was trained, with what, and every file's SHA-256.

Loading is checked before anything is unpickled (unpickling runs code): the manifest must
parse, list the pickles, name only plain files of the directory, match the schema's features
and the installed libraries, and every listed file must exist with the recorded SHA-256. The
pickles are hashed from the very bytes that are then unpickled, so a file swapped between
the check and the load is never used.

The manifest alone only proves the folder agrees with itself: whoever can write the pickles
can rewrite it too. A *pin* closes that: the SHA-256 of ``manifest.json``, given from outside
the folder (``FRAUDSCORE_MODEL_SHA256``). The manifest holds every artifact's SHA-256, so
pinning it pins every file; a folder that does not match is refused before any pickle is read.
The setting may name several manifests, separated by commas (the models a server may load:
the one it starts with, the one a reload or a rollback moves to).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import platform
import re
from collections.abc import Collection, Iterable, Mapping
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
    "ALLOW_UNPINNED_SETTING",
    "MANIFEST",
    "MODEL_FILE",
    "PIN_SETTING",
    "PREPROCESSOR_FILE",
    "Manifest",
    "library_versions",
    "manifest_sha256",
    "parse_manifest",
    "parse_pins",
    "pinned_sha256",
    "read_manifest",
    "read_verified",
    "required_pins",
    "sha256_bytes",
    "sha256_file",
    "version_problems",
    "write_manifest",
]

MANIFEST = "manifest.json"
MODEL_FILE = "model.pkl"
PREPROCESSOR_FILE = "preprocessor.pkl"
PICKLES = (PREPROCESSOR_FILE, MODEL_FILE)

PIN_SETTING = "FRAUDSCORE_MODEL_SHA256"
"""The setting that pins the model: the expected SHA-256 of ``manifest.json`` (or several,
separated by commas)."""
ALLOW_UNPINNED_SETTING = "FRAUDSCORE_ALLOW_UNPINNED_MODEL"
"""The opt-out letting production start without a pin."""
_HEX64 = re.compile(r"[0-9a-f]{64}")

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
    return parse_manifest(_manifest_bytes(artifact_dir), artifact_dir / MANIFEST)


def _manifest_bytes(artifact_dir: Path) -> bytes:
    """The manifest's bytes, read once: pin check and parsing must see the same bytes."""
    path = artifact_dir / MANIFEST
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelUnavailable(f"no {MANIFEST} in {artifact_dir}") from exc
    except OSError as exc:
        raise ModelUnavailable(f"cannot read {path}: {exc}") from exc


def parse_manifest(data: bytes, path: Path) -> Manifest:
    """Parse and check manifest bytes (``path`` names them in errors); raise ModelUnavailable.

    Takes bytes rather than a path so a caller that hashed them parses exactly what it hashed.
    """
    try:
        fields = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelUnavailable(f"cannot read {path}: {exc}") from exc
    try:
        return _checked(fields)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelUnavailable(f"{path} is malformed: {exc!r}") from exc


def manifest_sha256(artifact_dir: Path) -> str:
    """The value to pin (``FRAUDSCORE_MODEL_SHA256``): lower-case hex SHA-256 of the manifest.

    The manifest records every artifact's SHA-256, so this one digest pins the whole folder.
    """
    return sha256_bytes(_manifest_bytes(artifact_dir))


def _normalized_pin(pin: str) -> str:
    """``pin`` as lower-case hex; refuse anything that is not a SHA-256 (a typo pins nothing)."""
    normalized = pin.strip().lower()
    if not _HEX64.fullmatch(normalized):
        shown = pin if len(pin) <= 80 else pin[:77] + "..."
        raise ModelUnavailable(
            f"{PIN_SETTING} must be a SHA-256: 64 hex digits, got {len(pin)} characters {shown!r}"
        )
    return normalized


def parse_pins(pins: str | Collection[str]) -> frozenset[str]:
    """The pins in ``pins``: one SHA-256, several separated by commas, or a collection of them;
    each as lower-case hex. Blanks around each are ignored; anything that is not a SHA-256 is
    refused (a typo pins nothing)."""
    parts = pins.split(",") if isinstance(pins, str) else list(pins)
    parsed = frozenset(_normalized_pin(part) for part in parts if part.strip())
    if not parsed:
        raise ModelUnavailable(f"{PIN_SETTING} names no SHA-256: {pins!r}")
    return parsed


def pinned_sha256(artifact_dir: Path, pins: str | Collection[str] | None) -> str:
    """The SHA-256 of ``artifact_dir``'s manifest, once it is known to be one of ``pins``
    (any, when None); raise ModelUnavailable saying which pins it is not."""
    data = _manifest_bytes(artifact_dir)
    if pins is not None:
        _check_pin(artifact_dir / MANIFEST, data, parse_pins(pins))
    return sha256_bytes(data)


def _check_pin(path: Path, data: bytes, pins: frozenset[str]) -> None:
    """Refuse manifest bytes whose SHA-256 is none of ``pins`` (constant-time comparisons)."""
    got = sha256_bytes(data)
    if any(hmac.compare_digest(got, pin) for pin in sorted(pins)):
        return
    if len(pins) == 1:
        (pin,) = pins
        raise ModelUnavailable(
            f"{path} is not the pinned model: its SHA-256 is {got[:16]}...,"
            f" {PIN_SETTING} is {pin[:16]}..."
        )
    named = ", ".join(f"{pin[:16]}..." for pin in sorted(pins))
    raise ModelUnavailable(
        f"{path} is not a pinned model: its SHA-256 is {got[:16]}..., the pins are {named}"
    )


def required_pins(
    pins: str | None, *, production: bool, allow_unpinned: bool
) -> frozenset[str] | None:
    """The pins to load with, by policy; raise ModelUnavailable when one is needed but absent.

    A production server (DATABASE_URL set) unpickles whatever sits in its artifact folder, so
    it must be told which models to expect unless the operator opts out; the embedded default
    (a laptop) needs no pin. An empty setting counts as none (an unset variable); a malformed
    pin is refused here, before any file is touched.
    """
    if pins is not None and pins.strip():
        return parse_pins(pins)
    if production and not allow_unpinned:
        raise ModelUnavailable(
            f"DATABASE_URL is set but {PIN_SETTING} is not: a production server will not"
            " unpickle a model it has not been told to expect. Set"
            f" {PIN_SETTING} to the SHA-256 of the model's {MANIFEST} (printed by `make train`,"
            " or by `python -m fraudscore_adapters model-pin`, or"
            f" `sha256sum data/model_artifacts/current/{MANIFEST}`), or set"
            f" {ALLOW_UNPINNED_SETTING}=on to accept any model that passes its own manifest."
        )
    return None


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


def read_verified(
    artifact_dir: Path, *, pin: str | Collection[str] | None = None
) -> tuple[Manifest, dict[str, bytes]]:
    """The manifest and the pickles' bytes, after every check; raise ModelUnavailable.

    Checks, in order: the pin (when given: the manifest's SHA-256, hashed from the very bytes
    then parsed, so no swap can slip between check and use; with several pins, any of them),
    the manifest, library versions, that every listed file exists, and that every listed file
    has its recorded SHA-256. Nothing is unpickled here, and with a wrong pin no pickle is even
    read. ``artifact_dir`` is the folder holding the manifest (a version's, or a flat one; see
    :func:`~fraudscore_adapters.xgb.versions.locate`).
    """
    pins = None if pin is None else parse_pins(pin)
    data = _manifest_bytes(artifact_dir)
    if pins is not None:
        _check_pin(artifact_dir / MANIFEST, data, pins)
    manifest = parse_manifest(data, artifact_dir / MANIFEST)
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
