"""Train the XGBoost fraud model on a BAF file and write its artifacts.

    python -m fraudscore_adapters.xgb --data PATH --out DIR [--split random|temporal]
        [--seed 42] [--drop-invalid] [--max-rounds 1000]

Progress goes to stderr; the run ends with a summary table, wall time, peak RSS and the
value to pin the model with (FRAUDSCORE_MODEL_SHA256).
Exit status: 0 on success, 2 when the data cannot train a model.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fraudscore_adapters.baf import DatasetError
from fraudscore_adapters.xgb import versions
from fraudscore_adapters.xgb.artifacts import PIN_SETTING, manifest_sha256
from fraudscore_adapters.xgb.training import (
    TrainConfig,
    TrainingResult,
    stderr_log,
    summary,
    train_file,
)

__all__ = ["main", "train_and_report"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fraudscore_adapters.xgb", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--data", type=Path, required=True, help="BAF .csv or .parquet file")
    parser.add_argument("--out", type=Path, required=True, help="artifact directory")
    parser.add_argument("--split", choices=("random", "temporal"), default="random")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--drop-invalid", action="store_true", help="drop rows failing checks")
    parser.add_argument("--max-rounds", type=int, default=1000, help="boosting rounds at most")
    return parser


def train_and_report(
    data: Path,
    out_dir: Path,
    config: TrainConfig,
    *,
    drop_invalid: bool = False,
    versioned: bool = False,
) -> TrainingResult:
    """Train on ``data`` into ``out_dir``; log the summary table, wall time, peak RSS and pin.

    The pin line hands the operator the manifest's SHA-256 to set in production, so the
    server refuses any other model (see :func:`~fraudscore_adapters.xgb.artifacts.required_pins`).

    With ``versioned``, ``out_dir`` is an artifact root (:mod:`~fraudscore_adapters.xgb.versions`):
    the model is written into a staging folder, published as a new version, and ``current``
    moved to it (the old current becomes ``previous``); a flat model already there is moved
    into ``versions/`` first. A failed run leaves ``current`` as it was. The result's
    ``out_dir`` is the version's folder.

    Raises :class:`DatasetError` when the data cannot train a model (columns or values at
    fault, no labels, a split without both classes) and FileNotFoundError when it is absent.
    """
    started = time.perf_counter()
    target = out_dir
    if versioned:
        adopted = versions.adopt_flat(out_dir)
        if adopted:
            stderr_log(f"moved the flat model of {out_dir} to {versions.VERSIONS}/{adopted}")
        target = versions.stage(out_dir)
    try:
        result = train_file(data, target, config, drop_invalid=drop_invalid)
    except BaseException as exc:
        if versioned:
            shutil.rmtree(target, ignore_errors=True)
        if isinstance(exc, ValueError) and not isinstance(exc, DatasetError):
            # labels, splits: the data cannot train a model
            raise DatasetError([], f"cannot train on {data}: {exc}") from exc
        raise
    if versioned:
        old = versions.pointer(out_dir, versions.CURRENT)
        name = versions.publish(out_dir, target, result.model_version)
        result = dataclasses.replace(result, out_dir=out_dir / versions.VERSIONS / name)
        moved = f"; previous -> {old}" if old else ""
        stderr_log(f"published version {name}: current -> it{moved}")
    wall = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    stderr_log(summary(result))
    stderr_log(f"wall time {wall:.1f}s  peak RSS {peak_mib:,.0f} MiB")
    stderr_log(f"pin this model with {PIN_SETTING}={manifest_sha256(result.out_dir)}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    args = _parser().parse_args(argv)
    config = TrainConfig(seed=args.seed, split=args.split, max_rounds=args.max_rounds)
    try:
        train_and_report(args.data, args.out, config, drop_invalid=args.drop_invalid)
    except (DatasetError, FileNotFoundError) as exc:
        stderr_log(f"error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
