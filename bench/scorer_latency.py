"""Latency of XGBScorer (compiled transform + in-place predict) vs the plain sklearn path.

    uv run python bench/scorer_latency.py [--artifacts DIR] [--rows 50000] [--calls 5000]

Without ``--artifacts`` it first trains a model on ``--rows`` synthetic rows (in a temporary
directory). Prints single-application latency p50/p99 (µs), batch-of-256 throughput (rows/s)
for both paths and their ratios, and the parity of both paths. Figures are printed, not
asserted: they depend on the machine.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fraudscore import FEATURE_NAMES, Application
from fraudscore_adapters.baf import clean_frame
from fraudscore_adapters.baf.synthetic import generate
from fraudscore_adapters.xgb import TrainConfig, XGBScorer, features_frame, train_file

BATCH = 256


def applications(rows: int, seed: int) -> list[Application]:
    """Cleaned synthetic applications to score."""
    frame, _ = clean_frame(generate(rows, seed=seed), keep=["fraud_bool", "month"])
    return [Application(row) for row in frame.select(FEATURE_NAMES).iter_rows()]


def train(rows: int, out: Path) -> Path:
    """Train a model on ``rows`` synthetic rows into ``out``; return the artifact dir."""
    data = out / "baf_synthetic_bench.parquet"
    generate(rows, seed=1).write_parquet(data)
    train_file(data, out / "model", TrainConfig(max_rounds=400), log=lambda _: None)
    return out / "model"


def latencies_us(call: Callable[[int], object], calls: int) -> list[float]:
    """Wall time of ``call(i)`` for i in range(calls), in microseconds."""
    gc.collect()
    out = []
    for i in range(calls):
        started = time.perf_counter_ns()
        call(i)
        out.append((time.perf_counter_ns() - started) / 1000)
    return out


def percentiles(samples: Sequence[float]) -> tuple[float, float]:
    """p50 and p99."""
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49], cuts[98]


def throughput(call: Callable[[int], object], batches: int) -> float:
    """Rows per second of ``call(i)`` scoring batch i (of BATCH rows)."""
    gc.collect()
    started = time.perf_counter()
    for i in range(batches):
        call(i)
    return batches * BATCH / (time.perf_counter() - started)


def run(scorer: XGBScorer, apps: list[Application], calls: int) -> None:
    """Measure both paths and print the table."""
    n = len(apps)
    frames = [features_frame([a]) for a in apps[: min(n, 1000)]]
    batches = [apps[i : i + BATCH] for i in range(0, n - BATCH + 1, BATCH)]
    batch_frames = [features_frame(b) for b in batches]
    fast_one = percentiles(latencies_us(lambda i: scorer.score([apps[i % n]]), calls))
    slow_one = percentiles(
        latencies_us(lambda i: scorer.reference(frames[i % len(frames)]), min(calls, 1000))
    )
    fast_rate = throughput(lambda i: scorer.score(batches[i % len(batches)]), 200)
    slow_rate = throughput(lambda i: scorer.reference(batch_frames[i % len(batches)]), 50)
    print(f"model {scorer.model_version}, {n:,} applications, {calls:,} single calls")
    print(f"{'path':<28}{'p50 µs':>10}{'p99 µs':>10}{'batch-256 rows/s':>20}")
    for name, (p50, p99), rate in (
        ("XGBScorer.score", fast_one, fast_rate),
        ("sklearn transform+proba", slow_one, slow_rate),
    ):
        print(f"{name:<28}{p50:>10.1f}{p99:>10.1f}{rate:>20,.0f}")
    print(
        f"{'ratio (sklearn / fast)':<28}{slow_one[0] / fast_one[0]:>10.1f}"
        f"{slow_one[1] / fast_one[1]:>10.1f}{fast_rate / slow_rate:>20.1f}"
    )
    parity(scorer, apps)


def parity(scorer: XGBScorer, apps: list[Application]) -> None:
    """Max abs differences: fast vs sklearn; in-place 'value' vs margin + sigmoid."""
    fast = np.array(scorer.score(apps).probabilities)
    slow = scorer.reference(features_frame(apps))
    margin = scorer.predict(scorer.matrix(apps), margin=True)
    sigmoid = 1 / (1 + np.exp(-margin.astype(np.float64)))
    print(
        f"parity: max |fast - sklearn| = {np.max(np.abs(fast - slow)):.3g};"
        f" max |value - sigmoid(margin)| = {np.max(np.abs(fast - sigmoid)):.3g}"
    )


def main() -> None:
    """Parse the arguments, get a model, measure."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--artifacts", type=Path, help="a trained artifact directory")
    parser.add_argument("--rows", type=int, default=50_000, help="training rows if no artifacts")
    parser.add_argument("--calls", type=int, default=5_000, help="single-application calls")
    parser.add_argument("--threads", type=int, default=1, help="booster threads")
    args = parser.parse_args()
    apps = applications(5_000, seed=99)
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = args.artifacts or train(args.rows, Path(tmp))
        run(XGBScorer.load(artifacts, threads=args.threads), apps, args.calls)


if __name__ == "__main__":
    main()
