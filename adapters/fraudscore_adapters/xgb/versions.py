"""The artifact folder's layout: one folder per trained model, and two pointers into them.

::

    data/model_artifacts/
      versions/20251130T210501.042Z-xgb-786735760a74/   manifest.json, model.pkl, ...
      versions/20251201T080000.512Z-xgb-0f1e2d3c4b5a/
      current  -> versions/20251201T080000.512Z-xgb-0f1e2d3c4b5a   what servers load
      previous -> versions/20251130T210501.042Z-xgb-786735760a74   where a rollback goes

A version's name is the UTC time it was published and its model version: sortable, and
unique (a clash gets a ``-2`` suffix). Training writes into a hidden
staging folder under ``versions/``, renames it to its final name once every file is written
(so a version folder is never seen half-written), then moves the pointers.

A pointer is a *relative* symlink (the folder can be mounted or copied elsewhere, a container's
``/app/model``, and still resolve), moved atomically: created under a temporary name, then
renamed over the old one (``os.replace``, one ``rename(2)``), so a reader finds the old target
or the new one, never none. ``previous`` is moved before ``current``: a crash between the two
leaves both naming the old model, which still loads.

Readers resolve ``current`` once per load (:func:`locate`) and read every file from the folder
it named, so a pointer moved during a load cannot mix two models (and the manifest's
checksums would refuse the mix anyway). A *flat* folder, ``manifest.json`` directly in the
artifact folder (the layout before versions), still loads as the one model; ``current`` wins
when both exist. Training over a flat folder first moves its model into ``versions/`` and
points ``current`` at it (:func:`adopt_flat`), so it becomes the version to roll back to.

Old versions: publishing keeps the :data:`KEEP` newest, and never deletes what ``current`` or
``previous`` names.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fraudscore import FraudscoreError, ModelUnavailable
from fraudscore_adapters.xgb.artifacts import MANIFEST, read_manifest

__all__ = [
    "CURRENT",
    "KEEP",
    "PREVIOUS",
    "VERSIONS",
    "Located",
    "VersionError",
    "adopt_flat",
    "has_model",
    "locate",
    "locate_version",
    "pointer",
    "prune",
    "publish",
    "rollback",
    "stage",
    "use",
    "version_name",
    "versions",
]

VERSIONS = "versions"
CURRENT = "current"
PREVIOUS = "previous"
KEEP = 5
"""Versions kept when a new one is published (the newest by name), besides whatever
``current`` and ``previous`` name: a rollback target is never deleted."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
"""A version name: one plain path segment, not hidden (staging folders start with a dot)."""


class VersionError(FraudscoreError):
    """A version or pointer that cannot be used as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class Located:
    """Where one model's files are: the folder holding its manifest, and its version name."""

    path: Path
    version: str | None
    """Its name under ``versions/``; None for a flat folder."""


def version_name(model_version: str, at: datetime) -> str:
    """``20251130T210501.042Z-xgb-786735760a74``: the UTC time to the millisecond (two models
    trained within a second still sort in the order they were published), then the model
    version."""
    utc = at.astimezone(UTC)
    return f"{utc:%Y%m%dT%H%M%S}.{utc.microsecond // 1000:03d}Z-{model_version}"


def _checked_name(version: str) -> str:
    if not _NAME.fullmatch(version) or version in (CURRENT, PREVIOUS):
        raise VersionError(f"{version!r} is not a version name (see `model list`)")
    return version


def versions(root: Path) -> list[str]:
    """The version names under ``root/versions``, oldest first (names sort by time)."""
    folder = root / VERSIONS
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def pointer(root: Path, name: str) -> str | None:
    """The version ``root/name`` (``current`` or ``previous``) names; None when absent."""
    link = root / name
    if link.is_symlink():
        return Path(os.readlink(link)).name
    return name if link.is_dir() else None


def locate(root: Path) -> Located:
    """The folder of the model ``root`` serves, resolved once: ``current``'s target, else a
    flat folder's own; raise ModelUnavailable when there is neither."""
    current = root / CURRENT
    if current.is_symlink() or current.is_dir():
        try:
            path = current.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise ModelUnavailable(f"{current} names a folder that is not there: {exc}") from exc
        return Located(path, path.name)
    if (root / MANIFEST).is_file():
        return Located(root, None)
    raise ModelUnavailable(
        f"no model in {root}: no {MANIFEST} and no {CURRENT} pointer (run `make train`)"
    )


def locate_version(root: Path, version: str) -> Located:
    """The folder of version ``version``; raise VersionError when there is none."""
    path = root / VERSIONS / _checked_name(version)
    if not path.is_dir():
        raise VersionError(f"no version {version!r} in {root / VERSIONS} (see `model list`)")
    return Located(path, version)


def has_model(root: Path) -> bool:
    """Whether ``root`` holds a model to serve (a ``current`` pointer or a flat manifest)."""
    return (root / CURRENT).exists() or (root / MANIFEST).is_file()


def _fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in ``folder`` durable (best effort: not every
    filesystem lets a directory be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _point(root: Path, name: str, version: str) -> None:
    """Make ``root/name`` a relative symlink to ``versions/<version>``, atomically."""
    link = root / name
    if link.is_dir() and not link.is_symlink():
        raise VersionError(f"{link} is a folder, not a pointer: move it away first")
    temporary = root / f".{name}-{secrets.token_hex(4)}"
    os.symlink(f"{VERSIONS}/{version}", temporary)
    try:
        os.replace(temporary, link)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_dir(root)


def use(root: Path, version: str) -> tuple[str | None, str]:
    """Point ``current`` at ``version`` and ``previous`` at what ``current`` named; the old
    and the new current. Nothing moves when ``version`` is current already."""
    locate_version(root, version)
    old = pointer(root, CURRENT)
    if old == version:
        return old, version
    if old is not None:
        _point(root, PREVIOUS, old)
    _point(root, CURRENT, version)
    return old, version


def rollback(root: Path) -> tuple[str | None, str]:
    """Point ``current`` at what ``previous`` names, and ``previous`` at the old current (a
    second rollback goes forward again); the old and the new current."""
    previous = pointer(root, PREVIOUS)
    if previous is None:
        raise VersionError(f"no previous version in {root} to roll back to")
    return use(root, previous)


def stage(root: Path) -> Path:
    """A new, hidden, empty folder under ``root/versions`` to write a model into."""
    folder = root / VERSIONS
    folder.mkdir(parents=True, exist_ok=True)
    staged = folder / f".incoming-{secrets.token_hex(6)}"
    staged.mkdir()  # the umask's mode, not mkdtemp's 0700: servers may run as another user
    return staged


def _unique(root: Path, name: str) -> Path:
    path, n = root / VERSIONS / name, 1
    while path.exists():
        n += 1
        path = root / VERSIONS / f"{name}-{n}"
    return path


def publish(root: Path, staged: Path, model_version: str, *, at: datetime | None = None) -> str:
    """Give a fully written staging folder its version name, make it current (the old current
    becomes previous), prune old versions; the new version's name."""
    final = _unique(root, version_name(model_version, at or datetime.now(UTC)))
    os.rename(staged, final)
    _fsync_dir(final.parent)
    use(root, final.name)
    prune(root)
    return final.name


def prune(root: Path, keep: int = KEEP) -> list[str]:
    """Delete the versions older than the ``keep`` newest, but never ``current``'s or
    ``previous``'s; the names deleted."""
    protected = {pointer(root, CURRENT), pointer(root, PREVIOUS)}
    names = versions(root)
    doomed = [n for n in names[: max(len(names) - keep, 0)] if n not in protected]
    for name in doomed:
        shutil.rmtree(root / VERSIONS / name)
    return doomed


def adopt_flat(root: Path) -> str | None:
    """Move a flat folder's model (its manifest and the files it lists) into ``versions/``
    and point ``current`` at it; its version name, or None when there is no flat model to
    move (no manifest, a malformed one, or ``current`` exists already). Files the manifest
    does not list (the folder's README.md) stay where they are."""
    if (root / CURRENT).exists() or (root / CURRENT).is_symlink():
        return None
    try:
        manifest = read_manifest(root)
    except ModelUnavailable:
        return None
    at = datetime.fromtimestamp((root / MANIFEST).stat().st_mtime, UTC)
    staged = stage(root)
    for name in (*manifest.artifacts, MANIFEST):
        if (root / name).is_file():
            os.rename(root / name, staged / name)
    final = _unique(root, version_name(manifest.model_version, at))
    os.rename(staged, final)
    _fsync_dir(final.parent)
    _point(root, CURRENT, final.name)
    return final.name
