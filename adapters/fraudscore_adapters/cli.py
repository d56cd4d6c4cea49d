"""Command line of the composition root: ``python -m fraudscore_adapters COMMAND``.

Commands: ``data`` (make sure a dataset exists), ``train``, ``migrate``, ``rollback``,
``load-features``, ``score`` (score a BAF file offline), ``keys`` (create, list, revoke API keys),
``model`` (list the trained versions, use one, roll back), ``model-pin``, ``serve``, ``run``.
Settings come from the environment and ``.env`` once, here.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from fraudscore import FraudscoreError
from fraudscore_adapters.access import SCOPES, ApiKey, FileKeyStore, KeyStore, mint
from fraudscore_adapters.access.keys import KeyProblem, check_id
from fraudscore_adapters.dataset import dataset_path, log, progress_printer
from fraudscore_adapters.settings import Settings, SettingsError

if TYPE_CHECKING:
    from granian.server.mp import MPServer

# Heavier modules (polars, scipy, psycopg, yoyo, the web stack, the model) are imported by the
# commands that use them: `keys` and `model-pin` start in well under a second, not ~8 s.

__all__ = ["main"]


def _database_url(settings: Settings, *, migrations: bool = False) -> str:
    url = settings.migrations_url if migrations else settings.database_url
    if not url:
        raise SettingsError("DATABASE_URL is not set (e.g. postgresql://user@host:5432/db)")
    return url


def cmd_data(settings: Settings, _: argparse.Namespace) -> None:
    """Make sure a dataset exists; print its path."""
    print(dataset_path(settings))


def cmd_train(settings: Settings, args: argparse.Namespace) -> None:
    """Train a new model version and make it current, unless a model exists (or --force);
    print wall time, peak RSS and the pin."""
    from fraudscore_adapters.xgb import versions  # noqa: PLC0415
    from fraudscore_adapters.xgb.__main__ import train_and_report  # noqa: PLC0415
    from fraudscore_adapters.xgb.training import TrainConfig  # noqa: PLC0415

    root = settings.artifact_dir
    if versions.has_model(root) and not args.force:
        current = versions.pointer(root, versions.CURRENT)
        which = f" (current -> {current})" if current else ""
        log(f"model artifacts already in {root}{which} (make train FORCE=1 to train a new version)")
        return
    temporal = settings.split == "temporal"  # Settings allows random or temporal only
    config = TrainConfig(seed=settings.seed, split="temporal" if temporal else "random")
    train_and_report(dataset_path(settings), root, config, versioned=True)


def _warn_if_pooled(url: str) -> None:
    from fraudscore_adapters.postgres import pooled_endpoint  # noqa: PLC0415

    if pooled_endpoint(url):
        log(
            "warning: migrating through a pooler endpoint (-pooler): the advisory lock that "
            "keeps concurrent runs apart needs a session; set MIGRATIONS_DATABASE_URL to the "
            "direct endpoint"
        )


def cmd_migrate(settings: Settings, _: argparse.Namespace) -> None:
    """Apply pending migrations."""
    from fraudscore_adapters.migrate import apply_migrations  # noqa: PLC0415

    url = _database_url(settings, migrations=True)
    _warn_if_pooled(url)
    applied = apply_migrations(url, settings.migrations_dir)
    log(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")


def cmd_rollback(settings: Settings, args: argparse.Namespace) -> None:
    """Roll back the newest migration(s)."""
    from fraudscore_adapters.migrate import rollback_migrations  # noqa: PLC0415

    url = _database_url(settings, migrations=True)
    _warn_if_pooled(url)
    undone = rollback_migrations(url, settings.migrations_dir, count=args.count)
    log(f"rolled back {len(undone)} migration(s): {', '.join(undone) or 'none applied'}")


def cmd_load_features(settings: Settings, args: argparse.Namespace) -> None:
    """COPY the cleaned features of the dataset into feature_store, as a new version."""
    import psycopg  # noqa: PLC0415

    from fraudscore_adapters.baf import load_features  # noqa: PLC0415
    from fraudscore_adapters.bulkload import copy_features  # noqa: PLC0415
    from fraudscore_adapters.postgres import store_errors  # noqa: PLC0415

    path = dataset_path(settings)
    log(f"reading and validating {path}")
    frame, report = load_features(path, drop_invalid=args.drop_invalid)
    if report.dropped:
        log(f"dropped {report.dropped:,} invalid rows: " + "; ".join(map(str, report.problems)))
    started = time.perf_counter()
    # as the owner: the application role may not write feature_store (migration 0004)
    with (
        store_errors("connecting"),
        psycopg.connect(_database_url(settings, migrations=True)) as conn,
    ):
        copy_features(
            conn, frame, batch_rows=settings.load_batch_rows, progress=progress_printer("loaded")
        )
    seconds = time.perf_counter() - started
    rate = frame.height / seconds
    log(f"loaded {frame.height:,} applications in {seconds:.1f}s ({rate:,.0f} rows/s)")


def cmd_score(settings: Settings, args: argparse.Namespace) -> None:
    """Score a BAF file offline into Parquet or CSV (--record: also into PostgreSQL)."""
    from fraudscore_adapters import batchscore  # noqa: PLC0415
    from fraudscore_adapters.xgb import XGBScorer, required_pins, versions  # noqa: PLC0415
    from fraudscore_adapters.xgb.reasons import ReasonPolicy  # noqa: PLC0415

    source, out = Path(args.input), Path(args.out)
    try:  # every argument is checked before the model or the file is read
        batchscore.output_format(out)
    except batchscore.OutputFormatError as exc:
        raise SettingsError(str(exc)) from None
    if args.chunk_rows < 1:
        raise SettingsError(f"--chunk-rows must be at least 1, not {args.chunk_rows}")
    url = _database_url(settings, migrations=True) if args.record else None
    # recording is production: the model must be pinned unless the operator opted out
    pins = required_pins(
        settings.model_sha256,
        production=args.record,
        allow_unpinned=settings.allow_unpinned_model == "on",
    )
    started = time.perf_counter()
    policy = ReasonPolicy(method=settings.reasons_method)
    threads = os.cpu_count() or 1
    model_dir = versions.locate(settings.artifact_dir).path  # what `current` names, once
    scorer = XGBScorer.load(model_dir, threads=threads, pin=pins, reasons=policy)
    log(f"model {scorer.model_version} (threshold {scorer.threshold:.6f}); reading and"
        f" validating {source}")  # fmt: skip
    frame, report = batchscore.read_applications(source, drop_invalid=args.drop_invalid)
    if report.dropped:
        log(f"dropped {report.dropped:,} invalid rows: " + "; ".join(map(str, report.problems)))
    log(f"{report.rows_in:,} rows read, {frame.height:,} valid")
    scoring = time.perf_counter()
    if args.explain:
        log(f"explaining every row ({settings.reasons_method}: FRAUDSCORE_REASONS_METHOD)")
    scored = batchscore.score_frame(
        scorer,
        frame,
        chunk_rows=args.chunk_rows,
        progress=progress_printer("scored"),
        explain=args.explain,
    )
    seconds = time.perf_counter() - scoring
    log(f"scored {scored.height:,} rows in {seconds:.1f}s ({scored.height / seconds:,.0f} rows/s)"
        f"; {int(scored['is_fraud'].sum()):,} flagged as fraud")  # fmt: skip

    def record() -> None:
        if url is None:
            return
        import psycopg  # noqa: PLC0415

        from fraudscore_adapters.postgres import store_errors  # noqa: PLC0415

        recording = time.perf_counter()
        # as the owner, like load-features: COPY in one transaction, committed before the
        # output file is renamed into place
        with store_errors("connecting"), psycopg.connect(url) as conn:
            batchscore.copy_predictions(conn, scored, progress=progress_printer("recorded"))
        took = time.perf_counter() - recording
        log(f"recorded {scored.height:,} predictions (route {batchscore.ROUTE!r}) in"
            f" {took:.1f}s ({scored.height / took:,.0f} rows/s)")  # fmt: skip

    batchscore.write_output(scored, out, before_rename=record)
    log(f"wrote {out} ({scored.height:,} rows) in {time.perf_counter() - started:.1f}s in all")


def _keys(settings: Settings) -> KeyStore:
    """Where keys are managed: the database, as the migration owner (the application role
    may not add or revoke keys), or the local file of the embedded default."""
    url = settings.migrations_url
    if url:
        from fraudscore_adapters.postgres.keys import PostgresKeyStore  # noqa: PLC0415

        return PostgresKeyStore.connecting(url, connect_timeout_s=settings.connect_timeout_s)
    return FileKeyStore(settings.keys_path)


def _where(settings: Settings) -> str:
    return "the database" if settings.migrations_url else str(settings.keys_path)


def _create_key(settings: Settings, name: str, scopes: Sequence[str]) -> tuple[ApiKey, str]:
    store = _keys(settings)
    record, key = mint(name, scopes, taken=(k.id for k in store.all()))
    store.add(record)
    log(f"created API key {record.id} ({record.name!r}, scopes {','.join(record.scopes)}) in"
        f" {_where(settings)}; it is shown once, below: keep it secret")  # fmt: skip
    return record, key


def cmd_keys(settings: Settings, args: argparse.Namespace) -> None:
    """Create, list or revoke API keys (in the database with DATABASE_URL, else data/)."""
    if args.action == "create":
        _, key = _create_key(settings, args.name, args.scope or ["predict"])
        print(key)  # alone on stdout, so `KEY=$(... keys create --name me)` captures it
    elif args.action == "list":
        keys = _keys(settings).all()
        print(f"{'id':12}  {'name':20}  {'scopes':14}  {'created':16}  {'last used':16}  revoked")
        for k in keys:
            print(f"{k.id:12}  {k.name[:20]:20}  {','.join(k.scopes):14}  {_when(k.created_at):16}"
                  f"  {_when(k.last_used_at):16}  {_when(k.revoked_at)}")  # fmt: skip
        log(f"{sum(k.active for k in keys)} active, {len(keys)} in all, in {_where(settings)}")
    else:
        key_id = check_id(args.id)
        revoked = _keys(settings).revoke(key_id, datetime.now(UTC))
        if revoked is None:
            raise SettingsError(f"no API key {key_id} in {_where(settings)} (see `keys list`)")
        when, every = _when(revoked.revoked_at), settings.keys_refresh_s
        log(f"revoked API key {key_id} ({revoked.name!r}) at {when}; servers stop taking it"
            f" within FRAUDSCORE_KEYS_REFRESH_S ({every} s)")  # fmt: skip


def _when(at: datetime | None) -> str:
    return "-" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def cmd_model_pin(settings: Settings, _: argparse.Namespace) -> None:
    """Print the SHA-256 to pin the current model with (FRAUDSCORE_MODEL_SHA256)."""
    from fraudscore_adapters.xgb import versions  # noqa: PLC0415
    from fraudscore_adapters.xgb.artifacts import manifest_sha256, read_verified  # noqa: PLC0415

    model_dir = versions.locate(settings.artifact_dir).path
    read_verified(model_dir)
    print(manifest_sha256(model_dir))


def cmd_model(settings: Settings, args: argparse.Namespace) -> None:
    """List the model versions, or point `current` at one (use VERSION, rollback): running
    servers load it within FRAUDSCORE_MODEL_WATCH_S."""
    from fraudscore_adapters.xgb import versions  # noqa: PLC0415
    from fraudscore_adapters.xgb.artifacts import read_verified  # noqa: PLC0415

    root = settings.artifact_dir
    if args.action == "list":
        _list_models(root)
        return
    target = (
        versions.pointer(root, versions.PREVIOUS) if args.action == "rollback" else args.version
    )
    if target is None:
        raise versions.VersionError(f"no previous version in {root} to roll back to")
    located = versions.locate_version(root, target)
    read_verified(located.path)  # the folder agrees with its manifest: refuse to point at junk
    old, new = versions.use(root, target)
    if old == new:
        log(f"current already names {new}")
    else:
        log(f"current -> {new} (previous -> {old}); running servers load it within"
            f" FRAUDSCORE_MODEL_WATCH_S ({settings.model_watch_s:g} s)")  # fmt: skip
    _warn_if_not_pinned(settings, located.path)


def _list_models(root: Path) -> None:
    from fraudscore_adapters.xgb import versions  # noqa: PLC0415
    from fraudscore_adapters.xgb.artifacts import manifest_sha256, read_manifest  # noqa: PLC0415

    current = versions.pointer(root, versions.CURRENT)
    previous = versions.pointer(root, versions.PREVIOUS)
    located = [versions.locate_version(root, name) for name in versions.versions(root)]
    if not located and (root / "manifest.json").is_file():
        located = [versions.Located(root, None)]  # a flat folder: its one model
    print(f"{'':8}  {'version':34}  {'model':16}  {'threshold':>9}  pin (manifest SHA-256)")
    for found in located:
        name = found.version or "(flat)"
        mark = "current" if name == current or found.version is None else ""
        mark = mark or ("previous" if name == previous else "")
        try:
            manifest = read_manifest(found.path)
            facts = f"{manifest.model_version:16}  {manifest.threshold:>9.6f}"
            facts += f"  {manifest_sha256(found.path)}"
        except FraudscoreError as exc:
            facts = f"unreadable: {exc}"
        print(f"{mark:8}  {name:34}  {facts}")
    log(f"{len(located)} version(s) in {root}")


def _warn_if_not_pinned(settings: Settings, model_dir: Path) -> None:
    from fraudscore_adapters.xgb.artifacts import manifest_sha256, parse_pins  # noqa: PLC0415

    pin = manifest_sha256(model_dir)
    if settings.model_sha256 and pin not in parse_pins(settings.model_sha256):
        log(f"note: its pin {pin} is not in FRAUDSCORE_MODEL_SHA256: pinned servers refuse it"
            ' until an admin vouches for it (POST /admin/reload {"sha256": "<pin>"}) or the'
            " pin is added")  # fmt: skip


APP_FACTORY = "fraudscore_adapters.bootstrap:app_from_env"


def _check_servable(settings: Settings) -> None:
    """Fail before any worker starts if the model (or its pin) or the embedded dataset is
    missing or wrong."""
    from fraudscore_adapters.bootstrap import model_pins  # noqa: PLC0415
    from fraudscore_adapters.xgb import versions  # noqa: PLC0415
    from fraudscore_adapters.xgb.artifacts import read_verified  # noqa: PLC0415

    # raises ModelUnavailable saying what is wrong
    read_verified(versions.locate(settings.artifact_dir).path, pin=model_pins(settings))
    if not settings.database_url and not dataset_path(settings, create=False).is_file():
        raise FileNotFoundError("no dataset for the in-memory store: run `make data` first")


@contextlib.contextmanager
def _run_dir(settings: Settings) -> Iterator[None]:
    """A private folder the server's workers share (FRAUDSCORE_RUN_DIR: vouched-for model
    pins), made for this run unless one is set, and removed at exit."""
    if settings.run_dir is not None:
        yield
        return
    folder = tempfile.mkdtemp(prefix="fraudscore-run-")  # mode 0700, this user's
    os.environ["FRAUDSCORE_RUN_DIR"] = folder  # the workers read their settings from the env
    try:
        yield
    finally:
        os.environ.pop("FRAUDSCORE_RUN_DIR", None)
        shutil.rmtree(folder, ignore_errors=True)


def _hangup_to_workers() -> type[MPServer]:
    """Granian's server, with SIGHUP sent on to each worker process instead of granian's own
    reload: that respawns every worker (a new process, loading the model at its start), and
    one that fails to start (a model that fails its checks) makes granian stop the whole
    server. Each worker reloads in place instead, refusing a bad model while the old one keeps
    serving (:mod:`~fraudscore_adapters.reloading`)."""
    from granian.server.mp import MPServer  # noqa: PLC0415

    class HangupToWorkers(MPServer):
        def signal_handler_reload(self, *args: object, **kwargs: object) -> None:
            for worker in list(self.wrks):
                pid = worker.inner.pid
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGHUP)

    return HangupToWorkers


def cmd_serve(settings: Settings, _: argparse.Namespace) -> None:
    """Serve the HTTP API (granian or uvicorn, FRAUDSCORE_SERVER) until interrupted; SIGHUP
    reloads the model in every worker."""
    # before anything imports prometheus_client (_check_servable does): the workers' metrics
    # go to one private directory, merged by whichever worker answers GET /metrics
    from fraudscore_adapters.monitoring.procdir import shared_metrics_dir  # noqa: PLC0415

    with shared_metrics_dir() as metrics_dir:
        log(f"metrics: the workers share {metrics_dir} (removed on exit)")
        _check_servable(settings)
        with _run_dir(settings):
            _serve(settings)


def _serve(settings: Settings) -> None:
    log(
        f"serving on http://{settings.host}:{settings.port} with {settings.server}, "
        f"{settings.workers} worker(s); docs at http://{settings.host}:{settings.port}/schema/swagger"
    )
    if settings.server == "uvicorn":
        import uvicorn  # noqa: PLC0415

        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=math.ceil(_drain_s(settings)),
        )
        return
    if settings.server != "granian":
        raise SettingsError(f"FRAUDSCORE_SERVER={settings.server!r}: use granian or uvicorn")
    from granian.constants import Interfaces  # noqa: PLC0415
    from granian.server import MPServer, Server  # noqa: PLC0415

    # worker processes (a GIL build): SIGHUP goes on to them; threads: granian's own reload
    server = _hangup_to_workers() if Server is MPServer else Server
    server(
        APP_FACTORY,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        factory=True,
        log_access=False,
        backpressure=_backpressure(settings),
        workers_kill_timeout=math.ceil(_drain_s(settings)) + 1,
    ).serve()


def _drain_s(settings: Settings) -> float:
    """How long a stopping worker may take: every accepted request is answered within the
    request timeout; the second on top closes the pools."""
    return settings.request_timeout_s + 1.0


def _backpressure(settings: Settings) -> int:
    """Connections a granian worker serves at once (its "backpressure"; more wait unread in the
    listen queue, probes included). Granian's default is backlog / workers (1,024): measured,
    with 1,536 keep-alive connections open a new one got no answer, not even /healthcheck, so
    overload showed as silence instead of 503 ``overloaded``. Room for four times what both
    routes hold at once (5,120 by default), so the queues shed load before this limit bites."""
    per_route = settings.max_queue + settings.max_batch * settings.batch_concurrency
    return max(4096, 4 * 2 * per_route)


def cmd_run(settings: Settings, args: argparse.Namespace) -> None:
    """The main job: make sure data and a model exist, show how to call, then serve."""
    from fraudscore_adapters.xgb import versions  # noqa: PLC0415

    path = dataset_path(settings)
    if not versions.has_model(settings.artifact_dir):
        cmd_train(settings, args)
    base = f"http://{settings.host}:{settings.port}"
    log(f"dataset: {path} (user ids are row numbers)")
    key = _local_key(settings)
    log("try, once the server is up:")
    auth = f'-H "Authorization: Bearer {key}"'
    for user_id in (0, 1, 42):
        log(f"  curl -s {auth} -X POST {base}/predict/sync/{user_id}")
    log(f"  curl -s {auth} -X POST {base}/predict/async/42")
    log(f"  curl -s {base}/readyz        # and the API docs: {base}/schema/swagger")
    # Serve from a fresh process image: the server forks its workers, and a fork of a process
    # whose polars/OpenMP thread pools have run (generating data, training) can deadlock in
    # the child. Measured: the worker hung at startup on every fresh-clone `make run`.
    os.execv(sys.executable, [sys.executable, "-m", "fraudscore_adapters", "serve"])


def _local_key(settings: Settings) -> str:
    """The embedded default's key for the curl lines: a new one if no active key can predict
    (shown now, once), else a placeholder (keys are stored hashed: not shown again)."""
    if settings.database_url:
        return "$FRAUDSCORE_KEY"  # production keys are made on purpose: `keys create`
    usable = [k for k in _keys(settings).all() if k.active and "predict" in k.scopes]
    if usable:
        log(f"API keys in {settings.keys_path}: {', '.join(k.id for k in usable)} (shown only"
            " when created; `make key NAME=me` makes another)")  # fmt: skip
        return "$FRAUDSCORE_KEY"
    _, key = _create_key(settings, "local", ["predict"])
    return key


COMMANDS = {
    "data": cmd_data,
    "train": cmd_train,
    "migrate": cmd_migrate,
    "rollback": cmd_rollback,
    "load-features": cmd_load_features,
    "score": cmd_score,
    "keys": cmd_keys,
    "model": cmd_model,
    "model-pin": cmd_model_pin,
    "serve": cmd_serve,
    "run": cmd_run,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fraudscore_adapters", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in COMMANDS.items():
        sub.add_parser(name, help=(fn.__doc__ or "").strip())
    sub.choices["train"].add_argument("--force", action="store_true", help="retrain anyway")
    sub.choices["run"].add_argument("--force", action="store_true", help=argparse.SUPPRESS)
    sub.choices["rollback"].add_argument("--count", type=int, default=1, help="how many")
    sub.choices["load-features"].add_argument("--drop-invalid", action="store_true")
    score = sub.choices["score"]
    score.add_argument("input", help="the BAF file: .csv (Kaggle layout) or .parquet")
    score.add_argument("--out", required=True, help="where to write: .parquet or .csv")
    score.add_argument("--drop-invalid", action="store_true", help="skip invalid rows (reported)")
    score.add_argument(
        "--record", action="store_true", help="also COPY the predictions into PostgreSQL"
    )
    score.add_argument("--chunk-rows", type=int, default=100_000, help="rows scored at a time")
    score.add_argument(
        "--explain", action="store_true", help="add each row's reasons (a JSON column)"
    )
    keys = sub.choices["keys"].add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="mint a key; it is printed once, on stdout")
    create.add_argument("--name", required=True, help="who or what the key is for")
    create.add_argument(
        "--scope", action="append", choices=SCOPES, help="repeatable; default: predict"
    )
    keys.add_parser("list", help="every key: id, name, scopes, created, last used, revoked")
    keys.add_parser("revoke", help="revoke a key by id").add_argument("id")
    model = sub.choices["model"].add_subparsers(dest="action", required=True)
    model.add_parser("list", help="every version: current, previous, model, threshold, pin")
    model.add_parser("use", help="point current at VERSION").add_argument("version")
    model.add_parser("rollback", help="point current at previous (previous at the old current)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; domain, data and settings errors exit 2 with a one-line message."""
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
        COMMANDS[args.command](settings, args)
    except (FraudscoreError, SettingsError, KeyProblem, FileNotFoundError) as exc:
        log(f"error: {exc}")
        return 2
    except Exception as exc:
        from fraudscore_adapters.baf import DatasetError  # noqa: PLC0415

        if not isinstance(exc, DatasetError):
            raise
        log(f"error: {exc}")
        return 2
    return 0
