"""What reason codes cost and how far the approximation strays, on the served model.

    uv run python bench/reasons_cost.py [--rows 20000] [--repeats 5]

On the artifacts in ``FRAUDSCORE_ARTIFACT_DIR`` (default ``data/model_artifacts``) and the
first ``--rows`` applications of the dataset (the synthetic 1M set unless a real one is
given), one thread:

1. the share of applications the shipped threshold flags, and what one model call costs
   (matrix and in-place prediction) for batches of 1-64 applications: the work reasons add to;
2. the cost of explaining 1, 2, 4, 8 and 64 rows of a batch three ways: ``approx`` as served
   (walked in numpy below ``HAND_ROWS`` rows, XGBoost from there), XGBoost's own
   ``approx_contribs``, and ``exact`` TreeSHAP;
3. over the flagged applications, how often ``approx`` names exact TreeSHAP's top feature, and
   how many of exact's top four it names in its own top four.

Best of ``--repeats`` timings; figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fraudscore import FEATURE_NAMES, Application
from fraudscore_adapters.baf import load_features
from fraudscore_adapters.dataset import dataset_path
from fraudscore_adapters.settings import Settings
from fraudscore_adapters.xgb import XGBScorer
from fraudscore_adapters.xgb.reasons import HAND_ROWS, MAX_REASONS, ReasonPolicy

SIZES = (1, 2, 4, 8, 64)


def best_us(call: Callable[[], object], repeats: int) -> float:
    """The best of ``repeats`` timings of ``call``, each averaged over enough calls."""
    call()
    times = []
    for _ in range(repeats):
        n, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < 0.2 or n < 3:
            call()
            n += 1
        times.append(elapsed / n)
    return min(times) * 1e6


def score(scorer: XGBScorer, batch: list[Application]) -> object:
    """What a batch's model call does before any reason: the matrix and the prediction."""
    return scorer.predict(scorer.matrix(batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    settings = Settings.from_env(os.environ)
    frame, _ = load_features(dataset_path(settings, create=False))
    rows = frame.select(FEATURE_NAMES).head(args.rows).rows()
    applications = [Application(tuple(r)) for r in rows]
    artifacts = Path(settings.artifact_dir)
    approx = XGBScorer.load(artifacts, reasons=ReasonPolicy(method="approx"))
    exact = XGBScorer.load(artifacts, reasons=ReasonPolicy(method="exact"))
    matrix = approx.matrix(applications)
    probabilities = approx.predict(matrix).astype(np.float64)
    flagged = np.flatnonzero(probabilities >= approx.threshold)
    share = len(flagged) / len(applications)
    print(
        f"model {approx.model_version}: {len(applications):,} applications,"
        f" {share:.1%} flagged at threshold {approx.threshold:.4f}"
    )

    print("\nscoring (matrix + in-place prediction), µs per call:")
    for n in SIZES:
        batch = applications[:n]
        cost = best_us(functools.partial(score, approx, batch), args.repeats)
        print(f"  {n:>3} applications  {cost:8.0f}")

    print(f"\nexplaining n rows, µs per call (approx walks in numpy below {HAND_ROWS} rows):")
    print(f"  {'rows':>4}  {'approx':>8}  {'xgb approx':>10}  {'exact':>8}")
    explained = matrix[flagged]
    for n in SIZES:
        block = explained[:n]
        ours = best_us(functools.partial(approx._explainer.contributions, block), args.repeats)
        theirs = best_us(functools.partial(approx._explainer._by_xgboost, block), args.repeats)
        shap = best_us(functools.partial(exact._explainer.contributions, block), 2)
        print(f"  {n:>4}  {ours:8.0f}  {theirs:10.0f}  {shap:8.0f}")

    by_approx, _ = approx._explainer.contributions(explained)
    by_exact, _ = exact._explainer.contributions(explained)
    top_a = np.argsort(-by_approx, axis=1, kind="stable")[:, :MAX_REASONS]
    top_e = np.argsort(-by_exact, axis=1, kind="stable")[:, :MAX_REASONS]
    first = float(np.mean(top_a[:, 0] == top_e[:, 0]))
    shared = np.mean([len(set(a) & set(e)) for a, e in zip(top_a, top_e, strict=True)])
    print(f"\nover {len(explained):,} flagged applications, approx vs exact TreeSHAP:")
    print(f"  same top feature            {first:.1%}")
    print(f"  shared of the top {MAX_REASONS}          {shared:.2f} of {MAX_REASONS}")


if __name__ == "__main__":
    main()
