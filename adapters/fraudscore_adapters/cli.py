"""Command line of the composition root: ``python -m fraudscore_adapters COMMAND``.

Commands: ``data`` (make sure a dataset exists), ``train``, ``migrate``, ``rollback``,
``load-features``. Settings come from the environment and ``.env`` once, here.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg

from fraudscore import FraudscoreError
from fraudscore_adapters.baf import DatasetError, find_real_dataset, load_features
from fraudscore_adapters.bulkload import copy_features
from fraudscore_adapters.migrate import apply_migrations, rollback_migrations
from fraudscore_adapters.postgres import store_errors
from fraudscore_adapters.settings import Settings, SettingsError

__all__ = ["dataset_path", "main", "progress_printer"]


def log(message: str) -> None:
    """Progress and results go to stderr, one flushed line each."""
    print(message, file=sys.stderr, flush=True)


def progress_printer(what: str) -> Callable[[int, int, float], None]:
    """A progress callback printing done/total, percent and rate."""

    def show(done: int, total: int, seconds: float) -> None:
        rate = done / seconds if seconds > 0 else 0.0
        log(f"{what}: {done:,}/{total:,} rows ({done / max(total, 1):.0%}, {rate:,.0f} rows/s)")

    return show


def dataset_path(settings: Settings, *, create: bool = True) -> Path:
    """The dataset to use: explicit, else real BAF in data/raw, else the synthetic set."""
    if settings.data_file is not None:
        return settings.data_file
    real = find_real_dataset(settings.raw_dir)
    if real is not None:
        return real
    from fraudscore_adapters.baf.synthetic import SYNTHETIC_FILE_STEM, generate  # noqa: PLC0415

    name = f"{SYNTHETIC_FILE_STEM}_n{settings.synthetic_rows}_seed{settings.seed}.parquet"
    path = settings.synthetic_dir / name
    if path.is_file() or not create:
        return path
    log(
        f"no real BAF file in {settings.raw_dir}: generating {settings.synthetic_rows:,} "
        f"synthetic rows (seed {settings.seed})"
    )
    started = time.perf_counter()
    frame = generate(settings.synthetic_rows, seed=settings.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    frame.write_parquet(partial)
    partial.replace(path)
    log(f"wrote {path} in {time.perf_counter() - started:.1f}s")
    return path


def _database_url(settings: Settings, *, migrations: bool = False) -> str:
    url = settings.migrations_url if migrations else settings.database_url
    if not url:
        raise SettingsError("DATABASE_URL is not set (e.g. postgresql://user@host:5432/db)")
    return url


def cmd_data(settings: Settings, _: argparse.Namespace) -> None:
    """Make sure a dataset exists; print its path."""
    print(dataset_path(settings))


def cmd_train(settings: Settings, args: argparse.Namespace) -> None:
    """Train the model unless artifacts exist (or --force)."""
    from fraudscore_adapters.xgb.training import TrainConfig, summary, train_file  # noqa: PLC0415

    manifest = settings.artifact_dir / "manifest.json"
    if manifest.is_file() and not args.force:
        log(f"model artifacts already in {settings.artifact_dir} (make train FORCE=1 to retrain)")
        return
    config = TrainConfig(seed=settings.seed, split=settings.split)  # type: ignore[arg-type]
    result = train_file(dataset_path(settings), settings.artifact_dir, config)
    log(summary(result))


def cmd_migrate(settings: Settings, _: argparse.Namespace) -> None:
    """Apply pending migrations."""
    applied = apply_migrations(_database_url(settings, migrations=True), settings.migrations_dir)
    log(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")


def cmd_rollback(settings: Settings, args: argparse.Namespace) -> None:
    """Roll back the newest migration(s)."""
    url = _database_url(settings, migrations=True)
    undone = rollback_migrations(url, settings.migrations_dir, count=args.count)
    log(f"rolled back {len(undone)} migration(s): {', '.join(undone) or 'none applied'}")


def cmd_load_features(settings: Settings, args: argparse.Namespace) -> None:
    """COPY the cleaned features of the dataset into feature_store, as a new version."""
    path = dataset_path(settings)
    log(f"reading and validating {path}")
    frame, report = load_features(path, drop_invalid=args.drop_invalid)
    if report.dropped:
        log(f"dropped {report.dropped:,} invalid rows: " + "; ".join(map(str, report.problems)))
    started = time.perf_counter()
    with store_errors("connecting"), psycopg.connect(_database_url(settings)) as conn:
        copy_features(
            conn, frame, batch_rows=settings.load_batch_rows, progress=progress_printer("loaded")
        )
    seconds = time.perf_counter() - started
    rate = frame.height / seconds
    log(f"loaded {frame.height:,} applications in {seconds:.1f}s ({rate:,.0f} rows/s)")


COMMANDS = {
    "data": cmd_data,
    "train": cmd_train,
    "migrate": cmd_migrate,
    "rollback": cmd_rollback,
    "load-features": cmd_load_features,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fraudscore_adapters", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in COMMANDS.items():
        sub.add_parser(name, help=(fn.__doc__ or "").strip())
    sub.choices["train"].add_argument("--force", action="store_true", help="retrain anyway")
    sub.choices["rollback"].add_argument("--count", type=int, default=1, help="how many")
    sub.choices["load-features"].add_argument("--drop-invalid", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; domain, data and settings errors exit 2 with a one-line message."""
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
        COMMANDS[args.command](settings, args)
    except (FraudscoreError, DatasetError, SettingsError, FileNotFoundError) as exc:
        log(f"error: {exc}")
        return 2
    return 0
