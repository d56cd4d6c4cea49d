"""Model reload without downtime: the scorer the use case holds, and what swaps the model in it.

:class:`SwappableScorer` is the :class:`~fraudscore.ports.Scorer` both predict routes score
through. It holds the serving model as one reference, and :meth:`SwappableScorer.score` reads
that reference once per call: every application of a batch is scored by one model, and every
prediction of the batch carries that model's version. A swap is one assignment, so it falls
between batches by construction: a batch in flight finishes on the model it started with.

:class:`Reloader` decides what the reference holds, in each worker process:

- **Off the request path.** Locating, verifying (pin, manifest, checksums, library versions),
  unpickling and the self-check all run in a worker thread (``asyncio.to_thread``), never on
  the event loop and never in a request's batch. One reload at a time (a lock).
- **The old model keeps serving** unless the new one passes every check; a refusal raises
  :class:`ModelRefused` saying why (the HTTP answer is a 422 problem). The same model (same
  manifest SHA-256) is a no-op: ``already-serving``.
- **Pinned servers** (``FRAUDSCORE_MODEL_SHA256``, one or more pins) load only a manifest one
  of the pins names, or one an admin vouched for in ``POST /admin/reload`` with its
  ``sha256``: the pin always comes from outside the artifact folder. A vouch reaches the
  server's other workers through its private run folder (:class:`Vouches`).
- **Triggers**: ``POST /admin/reload`` (``current``, or a ``version`` it then makes current),
  ``POST /admin/rollback``, ``SIGHUP`` (every worker checks ``current`` now, retrying a model
  it refused before), and the watcher: every ``FRAUDSCORE_MODEL_WATCH_S`` each worker reads
  what ``current`` names (a readlink and a 4 KiB manifest, hashed) and loads it when it
  changed, so every worker converges within that interval plus one load after the pointer
  moved. A model a worker refused is not retried until ``current`` or the vouches change (or a
  SIGHUP or a request asks), so a bad model is logged once, not every second.
- :meth:`Reloader.serve` is the one place a new model starts serving: the swap, then each
  ``on_serving`` callback (where metrics hook in).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import signal
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, cast

from fraudscore import Application, FraudscoreError, ModelUnavailable, Scores
from fraudscore.ports import Scorer
from fraudscore_adapters.xgb import versions
from fraudscore_adapters.xgb.artifacts import MANIFEST, PIN_SETTING, manifest_sha256, pinned_sha256
from fraudscore_adapters.xgb.reasons import DEFAULT_REASONS, ReasonPolicy
from fraudscore_adapters.xgb.scorer import XGBScorer
from fraudscore_adapters.xgb.versions import Located, VersionError

__all__ = [
    "Attempt",
    "Loaded",
    "Loader",
    "ModelRefused",
    "Reloader",
    "Status",
    "SwappableScorer",
    "VersionError",
    "Vouches",
    "load_xgb",
]

log = logging.getLogger("fraudscore.models")

_HEX64 = re.compile(r"[0-9a-f]{64}")


def _now() -> datetime:
    return datetime.now(UTC)


class ModelRefused(FraudscoreError):
    """A new model failed a check (pin, manifest, checksums, library versions, unpickling,
    self-check): the old one keeps serving. The message says why."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """A model that passed every check, and what is known of it."""

    scorer: Scorer
    model_version: str
    threshold: float | None
    sha256: str | None
    """Its manifest's SHA-256 (None: wired in by the embedding code, not loaded)."""
    version: str | None
    """Its folder's name under ``versions/`` (None: a flat folder, or wired in)."""
    path: Path | None
    loaded_at: datetime

    @classmethod
    def wired(cls, scorer: Scorer) -> Loaded:
        """A scorer handed over by the embedding code (``Parts.scorer``): nothing to reload."""
        version = str(getattr(scorer, "model_version", "wired-in"))
        threshold = getattr(scorer, "threshold", None)
        threshold = float(threshold) if isinstance(threshold, int | float) else None
        return cls(scorer, version, threshold, None, None, None, _now())

    def describe(self) -> str:
        """``xgb-... (version V)``, or the folder, for logs and answers."""
        where = f"version {self.version}" if self.version else str(self.path or "wired in")
        return f"{self.model_version} ({where})"

    def released(self) -> Loaded:
        """This record without its model: what a replaced model was, not the model (which
        would otherwise stay in memory until the next reload)."""
        return dataclasses.replace(self, scorer=_Released())


class _Released:
    """In place of a replaced model's scorer in the records."""

    def score(
        self, applications: Sequence[Application], *, explain: Sequence[bool] | None = None
    ) -> Scores:
        """Never called: the model was replaced."""
        raise ModelUnavailable("this model was replaced")


Loader = Callable[[Located, str], Loaded]
"""Verifies and loads the model at a location whose manifest must hash to the given SHA-256;
raises ModelUnavailable saying why not."""


def load_xgb(located: Located, sha256: str, *, reasons: ReasonPolicy = DEFAULT_REASONS) -> Loaded:
    """The XGBoost model at ``located``: its manifest must hash to ``sha256`` (checked on the
    very bytes then parsed, so a manifest swapped since it was looked at is refused), then the
    checksums, library versions, unpickling and self-check of :meth:`XGBScorer.load`; its
    reason codes by ``reasons``."""
    scorer = XGBScorer.load(located.path, pin=sha256, reasons=reasons)
    return Loaded(
        scorer,
        scorer.model_version,
        scorer.threshold,
        sha256,
        located.version,
        located.path,
        _now(),
    )


class _Explaining(Protocol):
    def score(self, applications: Sequence[Application], *, explain: Sequence[bool]) -> Scores:
        """Scores, with reason codes for the applications ``explain`` flags."""
        ...


class SwappableScorer:
    """The Scorer port in front of whichever model serves now; see the module."""

    __slots__ = ("_loaded",)

    def __init__(self, loaded: Loaded) -> None:
        self._loaded = loaded

    @property
    def loaded(self) -> Loaded:
        """The model serving now."""
        return self._loaded

    def score(
        self, applications: Sequence[Application], *, explain: Sequence[bool] | None = None
    ) -> Scores:
        """One probability per application, all from the one model serving when the call
        began (``explain`` is passed on only when given, so a scorer without it works)."""
        scorer = self._loaded.scorer  # read once: the whole batch on one model
        if explain is None:
            return scorer.score(applications)
        return cast(_Explaining, scorer).score(applications, explain=explain)

    def swap(self, loaded: Loaded) -> Loaded:
        """Serve ``loaded`` from the next call on (one assignment); the model it replaces."""
        old, self._loaded = self._loaded, loaded
        return old


class Vouches:
    """Pins an admin vouched for (``POST /admin/reload`` with a ``sha256``), for the server's
    life: a pinned server loads those manifests too.

    Kept in memory, and appended to a file in the server's run folder when it has one
    (``FRAUDSCORE_RUN_DIR``; ``serve`` makes one), so every worker process of the server
    accepts them: another worker's watcher loads a vouched-for ``current`` at its next check.
    The folder must be private (this user's, mode 0700): whoever could write there could vouch.
    """

    FILE = "vouched-model-pins"

    def __init__(self, run_dir: Path | None = None) -> None:
        if run_dir is not None:
            _check_private(run_dir)
        self._path = None if run_dir is None else run_dir / self.FILE
        self._mine: set[str] = set()
        self._shared: frozenset[str] = frozenset()
        self._seen: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def read(self) -> frozenset[str]:
        """Every vouched-for pin (blocking: it may read the shared file)."""
        with self._lock:
            if self._path is not None:
                try:
                    info = self._path.stat()
                except FileNotFoundError:
                    seen, text = None, ""
                else:
                    seen = (info.st_mtime_ns, info.st_size)
                    text = self._path.read_text() if seen != self._seen else ""
                if seen != self._seen:
                    lines = (line.strip() for line in text.splitlines())
                    self._shared = frozenset(line for line in lines if _HEX64.fullmatch(line))
                    self._seen = seen
            return frozenset(self._mine) | self._shared

    def add(self, pin: str) -> None:
        """Vouch for ``pin`` in this process and, through the run folder, in the others."""
        with self._lock:
            self._mine.add(pin)
            if self._path is None:
                return
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, f"{pin}\n".encode())  # one short append: never interleaved
            finally:
                os.close(fd)


def _check_private(folder: Path) -> None:
    try:
        info = folder.stat()
    except OSError as exc:
        raise ModelUnavailable(f"FRAUDSCORE_RUN_DIR {folder}: {exc}") from exc
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ModelUnavailable(
            f"FRAUDSCORE_RUN_DIR {folder} must be a folder of this user's that no one else may"
            " read or write (mode 0700): whoever can write there can vouch for a model"
        )


@dataclass(frozen=True, slots=True)
class _Seen:
    """What ``current`` leads to at one check: the folder, its manifest's SHA-256 (or why it
    could not be read), and the vouches then."""

    path: str
    sha256: str
    vouches: frozenset[str]


@dataclass(frozen=True, slots=True)
class Attempt:
    """What a reload did: when, why, and what serves after it."""

    at: datetime
    trigger: str
    """``start``, ``request``, ``rollback``, ``watch`` or ``SIGHUP``."""
    outcome: str
    """``loaded``, ``already-serving`` or ``refused``."""
    detail: str
    serving: Loaded
    replaced: Loaded | None = None
    took_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Status:
    """What a worker serves, what the artifact folder says, and how the last reload went."""

    serving: Loaded
    current: str | None
    """The version ``current`` names now (None: a flat folder, wired in, or none)."""
    current_sha256: str | None
    """The SHA-256 of the manifest ``current`` names now (None when unreadable)."""
    previous: str | None
    pinned: bool
    pins: int
    """Pins from FRAUDSCORE_MODEL_SHA256 plus vouched-for ones."""
    watch_s: float | None
    last: Attempt | None


class Reloader:
    """Swaps the model of a :class:`SwappableScorer`; one per worker process (see the module)."""

    def __init__(
        self,
        scorer: SwappableScorer,
        *,
        root: Path | None = None,
        pins: frozenset[str] | None = None,
        vouches: Vouches | None = None,
        load: Loader = load_xgb,
    ) -> None:
        self.scorer = scorer
        self._root = root
        self._pins = pins
        self._vouches = vouches or Vouches()
        self._load = load
        self._lock = asyncio.Lock()
        self._stale: _Seen | None = None
        """What ``current`` led to and the vouches when a model was last refused: the
        watcher does not retry that same case."""
        self._tasks: set[asyncio.Task[object]] = set()
        self.watch_s: float | None = None
        self.last: Attempt | None = None
        self.on_serving: list[Callable[[Loaded], None]] = []
        """Called with each model that starts serving (after the swap), e.g. for metrics."""

    @classmethod
    def wired(cls, scorer: Scorer) -> Reloader:
        """A reloader of a scorer handed over by the embedding code: it cannot reload."""
        return cls(SwappableScorer(Loaded.wired(scorer)))

    @classmethod
    async def open(
        cls,
        root: Path,
        *,
        pins: frozenset[str] | None,
        vouches: Vouches | None = None,
        load: Loader = load_xgb,
    ) -> Reloader:
        """A reloader serving the model ``root`` names now (loaded in a thread); raise
        ModelUnavailable when it fails a check: a server does not start without a model. A
        pinned server's worker accepts a model vouched for in the server's run folder too (a
        worker granian respawns after a vouch starts on the vouched-for model)."""
        started = time.perf_counter()

        def first() -> Loaded:
            located = versions.locate(root)
            allowed = pins if pins is None or vouches is None else pins | vouches.read()
            return load(located, pinned_sha256(located.path, allowed))

        loaded = await asyncio.to_thread(first)
        reloader = cls(SwappableScorer(loaded), root=root, pins=pins, vouches=vouches, load=load)
        took = time.perf_counter() - started
        detail = f"serving {loaded.describe()}"
        reloader.last = Attempt(loaded.loaded_at, "start", "loaded", detail, loaded, None, took)
        log.info("model %s loaded in %.2f s", loaded.describe(), took)
        return reloader

    # --- the triggers ------------------------------------------------------------------------

    async def reload(
        self, *, version: str | None = None, sha256: str | None = None, trigger: str = "request"
    ) -> Attempt:
        """Load what ``current`` names (or ``version``, then point ``current`` at it) and serve
        it; with ``sha256``, only a manifest with that SHA-256, which a pinned server then
        accepts (a vouch). Raise ModelRefused (the old model keeps serving) or VersionError."""
        self._require_folder()
        vouched = None if sha256 is None else sha256.strip().lower()
        if vouched is not None and not _HEX64.fullmatch(vouched):
            raise ModelRefused(f"sha256 must be 64 hex digits, not {sha256!r}")
        async with self._lock:
            return await self._reload(version, vouched, trigger)

    async def rollback(self) -> Attempt:
        """Load what ``previous`` names and make it current (``previous`` then names the old
        current); raise like :meth:`reload`, VersionError when there is no previous."""
        root = self._require_folder()
        async with self._lock:
            previous = await asyncio.to_thread(versions.pointer, root, versions.PREVIOUS)
            if previous is None:
                raise VersionError(f"no previous version in {root} to roll back to")
            return await self._reload(previous, None, "rollback")

    async def follow(self, trigger: str = "watch", *, force: bool = False) -> Attempt | None:
        """Load what ``current`` names if it is not what serves (the watcher, SIGHUP); a model
        refused before is retried only when ``force`` or something changed. Never raises a
        refusal: it is logged and kept as :attr:`last`."""
        if self._root is None:
            return None
        async with self._lock:
            seen = await asyncio.to_thread(self._seen)
            if seen.sha256 == self.scorer.loaded.sha256:
                self._stale = None
                return None
            if not force and seen == self._stale:
                return None
            with contextlib.suppress(ModelRefused, VersionError):
                return await self._reload(None, None, trigger)
            return None

    def hangup(self) -> None:
        """SIGHUP: check ``current`` now, retrying a model refused before."""
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(
            self.follow("SIGHUP", force=True)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @contextlib.asynccontextmanager
    async def running(self, watch_s: float) -> AsyncIterator[None]:
        """Watch ``current`` every ``watch_s`` and reload on SIGHUP (when this is the main
        thread, as in a server's worker process) until exit."""
        if self._root is None:
            yield
            return
        self.watch_s = watch_s
        watcher = asyncio.create_task(self._watch(watch_s))
        with _on_sighup(self.hangup):
            try:
                yield
            finally:
                watcher.cancel()
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(watcher, *self._tasks, return_exceptions=True)

    async def _watch(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.follow("watch")
            except Exception:  # the watcher must outlive any surprise; it is logged
                log.exception("checking the model's current pointer failed")

    async def status(self) -> Status:
        """What this worker serves and what the artifact folder says now."""
        current = current_sha = previous = None
        if self._root is not None:
            root = self._root
            current, previous = await asyncio.to_thread(
                lambda: (
                    versions.pointer(root, versions.CURRENT),
                    versions.pointer(root, versions.PREVIOUS),
                )
            )
            seen = await asyncio.to_thread(self._seen)
            current_sha = None if seen.sha256.startswith("error:") else seen.sha256
        pins = (
            None if self._pins is None else self._pins | await asyncio.to_thread(self._vouches.read)
        )
        return Status(
            self.scorer.loaded,
            current,
            current_sha,
            previous,
            pins is not None,
            len(pins or ()),
            self.watch_s,
            self.last,
        )

    # --- the work ----------------------------------------------------------------------------

    def serve(self, loaded: Loaded) -> Loaded:
        """The one place a new model starts serving: the swap, then the ``on_serving``
        callbacks; the model replaced."""
        old = self.scorer.swap(loaded)
        for callback in self.on_serving:
            try:
                callback(loaded)
            except Exception:
                log.exception("an on_serving callback failed for %s", loaded.describe())
        return old

    async def _reload(self, version: str | None, vouched: str | None, trigger: str) -> Attempt:
        started = time.perf_counter()
        serving = self.scorer.loaded
        seen = await asyncio.to_thread(self._seen) if version is None else None
        try:
            located, loaded = await asyncio.to_thread(self._attempt, version, vouched)
            if version is not None:
                await asyncio.to_thread(self._switch, version)
        except VersionError as exc:
            self._refused(trigger, str(exc), serving, started, seen)
            raise
        except (FraudscoreError, OSError) as exc:
            refused = ModelRefused(
                f"refused the new model: {exc}; still serving {serving.describe()}"
            )
            self._refused(trigger, str(refused), serving, started, seen)
            raise refused from exc
        self._stale = None
        took = time.perf_counter() - started
        if loaded is None:
            where = located.version or str(located.path)
            age = (_now() - serving.loaded_at).total_seconds()
            detail = f"already serving {serving.model_version} ({where}), loaded {age:.1f} s ago"
            self.last = Attempt(_now(), trigger, "already-serving", detail, serving, None, took)
            log.info("model reload (%s): %s", trigger, detail)
            return self.last
        if vouched is not None and self._pins is not None and vouched not in self._pins:
            try:
                await asyncio.to_thread(self._vouches.add, vouched)
            except OSError as exc:
                log.warning("the vouch for %s... reaches this worker only: %s", vouched[:16], exc)
        self.serve(loaded)
        detail = f"now serving {loaded.describe()} in place of {serving.describe()}"
        self.last = Attempt(_now(), trigger, "loaded", detail, loaded, serving.released(), took)
        log.info("model reload (%s, %.2f s): %s", trigger, took, detail)
        return self.last

    def _refused(
        self,
        trigger: str,
        detail: str,
        serving: Loaded,
        started: float,
        seen: _Seen | None,
    ) -> None:
        if seen is not None:
            self._stale = seen
        took = time.perf_counter() - started
        self.last = Attempt(_now(), trigger, "refused", detail, serving, None, took)
        log.warning("model reload (%s): %s", trigger, detail)

    def _require_folder(self) -> Path:
        if self._root is None:
            raise VersionError(
                "this server's model was handed to it by the embedding code, not loaded from an"
                " artifact folder: there is nothing to reload"
            )
        return self._root

    def _seen(self) -> _Seen:
        """Where ``current`` leads, its manifest's SHA-256 (or why it cannot be read), and the
        vouches (blocking)."""
        assert self._root is not None
        try:
            located = versions.locate(self._root)
            return _Seen(str(located.path), manifest_sha256(located.path), self._vouches.read())
        except (FraudscoreError, OSError) as exc:
            return _Seen("", f"error: {exc}", self._vouches.read())

    def _attempt(self, version: str | None, vouched: str | None) -> tuple[Located, Loaded | None]:
        """Locate, check and load (blocking); None in place of a model already serving."""
        assert self._root is not None
        if version is not None and not os.access(self._root, os.W_OK):
            raise self._cannot_move(version, "no write access")  # before a load for nothing
        located = (
            versions.locate(self._root)
            if version is None
            else versions.locate_version(self._root, version)
        )
        sha = manifest_sha256(located.path)
        if vouched is not None and sha != vouched:
            raise ModelUnavailable(
                f"{located.path / MANIFEST} has SHA-256 {sha[:16]}..., not the {vouched[:16]}..."
                " asked for"
            )
        if sha == self.scorer.loaded.sha256:
            return located, None
        if self._pins is not None and vouched is None:
            try:
                pinned_sha256(located.path, self._pins | self._vouches.read())
            except ModelUnavailable as exc:
                raise ModelUnavailable(
                    f"{exc} (nor vouched for: an admin may, with POST /admin/reload"
                    f' {{"sha256": "<its SHA-256>"}}, or add it to {PIN_SETTING})'
                ) from exc
        return located, self._load(located, sha)

    def _switch(self, version: str) -> None:
        """Point ``current`` at ``version`` (blocking)."""
        assert self._root is not None
        try:
            versions.use(self._root, version)
        except OSError as exc:
            raise self._cannot_move(version, str(exc.strerror or exc)) from exc

    def _cannot_move(self, version: str, why: str) -> VersionError:
        assert self._root is not None
        return VersionError(
            f"cannot point {self._root / versions.CURRENT} at {version} ({why}): this server"
            " may only read its artifact folder. Move the pointer where the folder is writable"
            " (`python -m fraudscore_adapters model use VERSION` or `model rollback`): every"
            " worker follows within FRAUDSCORE_MODEL_WATCH_S"
        )


@contextlib.contextmanager
def _on_sighup(handler: Callable[[], None]) -> Iterator[None]:
    """Run ``handler`` on the loop at each SIGHUP, when this is the main thread (signals reach
    only it); restore the previous disposition at exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGHUP)
    loop.add_signal_handler(signal.SIGHUP, handler)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        if previous is not None:
            signal.signal(signal.SIGHUP, previous)
