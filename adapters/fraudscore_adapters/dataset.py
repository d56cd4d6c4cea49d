"""Which dataset the project runs on, and progress lines for long work.

A real BAF file in ``data/raw`` wins; without one, the synthetic stand-in is generated once
(seeded, named ``baf_synthetic_n<rows>_seed<seed>.parquet``) and reused.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from fraudscore_adapters.settings import Settings

__all__ = ["dataset_path", "log", "progress_printer"]


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
    # here, not at the top: polars and scipy take seconds to import, and commands that need
    # no dataset (`keys`, `model-pin`) import this module for `log`
    from fraudscore_adapters.baf import find_real_dataset  # noqa: PLC0415
    from fraudscore_adapters.baf.synthetic import SYNTHETIC_FILE_STEM, generate  # noqa: PLC0415

    real = find_real_dataset(settings.raw_dir)
    if real is not None:
        return real
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
