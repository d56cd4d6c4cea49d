"""How faithful is the synthetic BAF Base generator? Time 1,000,000 rows and compare them with
the embedded figures of real Base (``fraudscore_adapters/baf/base_stats.json``).

Run: ``uv run python bench/synthetic_fidelity.py [n_rows] [seed]``. Every line reads
"generated vs figure". Legit figures come from a 1% sample of Base (about 9,900 rows) and fraud
figures from post-stratified fraud rows (Kish effective size about 600), so differences of a few
percent, and more in the fraud tails, are within the figures' own noise.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Literal

import numpy as np
import polars as pl

from fraudscore_adapters.baf import clean_frame
from fraudscore_adapters.baf.synthetic import base_stats, generate

CLASSES = {"legit": 0, "fraud": 1}
SENTINEL = {"intended_balcon_amount": pl.col("intended_balcon_amount") < 0}


def header(title: str) -> None:
    print(f"\n== {title}")


def is_missing(col: str) -> pl.Expr:
    """True on sentinel rows of ``col``."""
    return SENTINEL.get(col, pl.col(col) == -1)


def mean(series: pl.Series) -> float:
    value = series.cast(pl.Float64).mean()
    return float(value) if isinstance(value, int | float) else 0.0


def rate_pct(frame: pl.DataFrame, condition: pl.Expr) -> float:
    return 100 * mean(frame.filter(condition)["fraud_bool"])


def timed_generate(n_rows: int, seed: int) -> pl.DataFrame:
    for label in ("cold (builds the per-class models)", "warm"):
        start = time.perf_counter()
        frame = generate(n_rows, seed=seed)
        wall = time.perf_counter() - start
        print(f"generate({n_rows:,}) {label}: {wall:.2f} s wall, {n_rows / wall:,.0f} rows/s")
    return frame


def check_schema(frame: pl.DataFrame, stats: dict[str, Any]) -> None:
    header("layout and validation")
    start = time.perf_counter()
    _, report = clean_frame(frame, keep=["fraud_bool", "month"])
    wall = time.perf_counter() - start
    print(f"columns in Kaggle order: {frame.columns == stats['columns']}")
    print(f"clean_frame: {report.rows_out:,} of {report.rows_in:,} rows valid ({wall:.2f} s)")
    print(f"device_fraud_count all 0: {frame['device_fraud_count'].max() == 0}")


def month_table(frame: pl.DataFrame, stats: dict[str, Any]) -> None:
    header("months: row share % and fraud rate % (generated vs Base fact)")
    month = stats["month"]
    total = sum(month["rows"])
    counts = frame.group_by("month").agg(pl.len(), pl.col("fraud_bool").mean()).sort("month")
    for m, n, rate in counts.iter_rows():
        share = 100 * month["rows"][m] / total
        fact = 100 * month["frauds_approx"][m] / month["rows"][m]
        print(
            f"month {m}: share {100 * n / frame.height:5.2f} vs {share:5.2f}   "
            f"fraud rate {100 * rate:4.2f} vs {fact:4.2f}"
        )
    fact = 100 * stats["full_base_facts"]["fraud_rate"]
    print(f"overall fraud rate {100 * mean(frame['fraud_bool']):.3f} vs {fact:.3f}")


def missing_table(frame: pl.DataFrame, stats: dict[str, Any]) -> None:
    header("missing share per class (generated vs figure; prev_address: full-Base fact)")
    facts = stats["full_base_facts"]["prev_address_months_count_missing_share"]
    for col, figures in stats["numeric"].items():
        if not figures["sentinel"]:
            continue
        cells = []
        for cls, label in CLASSES.items():
            rows = frame.filter(pl.col("fraud_bool") == label)
            got = rows.select(is_missing(col).mean()).item()
            want = (
                facts[cls] if col == "prev_address_months_count" else figures["missing_share"][cls]
            )
            cells.append(f"{cls} {got:.4f} vs {want:.4f}")
        print(f"{col:34s} " + "   ".join(cells))


def pattern_key(frame: pl.DataFrame, columns: list[str]) -> pl.Series:
    parts = [pl.when(is_missing(c)).then(pl.lit(c)).otherwise(pl.lit(None)) for c in columns]
    joined = frame.select(pl.concat_str(parts, separator="+", ignore_nulls=True).alias("k"))["k"]
    return joined.replace("", "none")


def pattern_table(frame: pl.DataFrame, stats: dict[str, Any]) -> None:
    header("missing patterns per class: share of rows (generated vs figure)")
    patterns = stats["missing_patterns"]
    for cls, label in CLASSES.items():
        rows = frame.filter(pl.col("fraud_bool") == label)
        keys = pattern_key(rows, patterns["columns"]).value_counts(normalize=True)
        got = dict(zip(keys["k"].to_list(), keys["proportion"].to_list(), strict=True))
        for key, want in patterns[cls].items():
            print(f"{cls:5s} {key:72s} {got.get(key, 0.0):.4f} vs {want:.4f}")


def quantile_table(frame: pl.DataFrame, stats: dict[str, Any]) -> None:
    header("per-class quantiles q01 q05 q10 q25 q50 q75 q90 q95 q99 of non-sentinel values")
    levels = stats["quantile_levels"]
    for col, figures in stats["numeric"].items():
        if "values" in figures:
            continue
        method: Literal["hazen", "inverted_cdf"] = (
            "hazen" if figures["kind"] == "numeric_continuous" else "inverted_cdf"
        )
        for cls, label in CLASSES.items():
            rows = frame.filter((pl.col("fraud_bool") == label) & ~is_missing(col))[col]
            got = np.quantile(np.asarray(rows.to_numpy(), dtype=np.float64), levels, method=method)
            print(f"{col:30s} {cls:5s} gen " + " ".join(f"{v:8.4g}" for v in got))
            print(f"{'':30s} {'':5s} fig " + " ".join(f"{v:8.4g}" for v in figures[cls]["q"]))


def discrete_table(frame: pl.DataFrame, stats: dict[str, Any]) -> None:
    header("discrete columns: largest per-class share gap (points) and class means")
    for col, figures in stats["numeric"].items():
        if "values" not in figures:
            continue
        table = figures["values"]
        for cls, label in CLASSES.items():
            rows = frame.filter(pl.col("fraud_bool") == label)[col].cast(pl.Float64)
            shares = np.array(table[f"share_{cls}"])
            values = np.array(table["value"], dtype=np.float64)
            got = np.array([mean(rows.round(6) == v) for v in values])
            gap = np.abs(got - shares / shares.sum())
            print(
                f"{col:34s} {cls:5s} max gap {100 * gap.max():5.2f} at {values[gap.argmax()]:g}"
                f"   mean {mean(rows):8.4g} vs {float(values @ shares / shares.sum()):8.4g}"
            )


def category_rates(frame: pl.DataFrame, stats: dict[str, Any]) -> None:
    header("fraud rate % by category (generated vs figure estimate)")
    for col, table in stats["categorical"].items():
        rates = frame.group_by(pl.col(col).cast(pl.String)).agg(pl.col("fraud_bool").mean())
        got = dict(zip(rates[col].to_list(), rates["fraud_bool"].to_list(), strict=True))
        cells = [
            f"{cat} {100 * got.get(cat, 0.0):.2f}/{100 * (fig['fraud_rate'] or 0.0):.2f}"
            for cat, fig in table.items()
        ]
        print(f"{col:20s} " + "  ".join(cells))


RATE_FACTS = (
    ("age >= 50", pl.col("customer_age") >= 50, "fraud_rate_age_ge_50_pct"),
    ("age < 50", pl.col("customer_age") < 50, "fraud_rate_age_lt_50_pct"),
    ("housing BA", pl.col("housing_status") == "BA", "fraud_rate_housing_status_BA_pct"),
    ("device_os windows", pl.col("device_os") == "windows", "fraud_rate_device_os_windows_pct"),
    ("employment CC", pl.col("employment_status") == "CC", "fraud_rate_employment_status_CC_pct"),
)
COMPLETE_CASE = (
    "current_address_months_count",
    "bank_months_count",
    "session_length_in_minutes",
    "device_distinct_emails_8w",
)


def fact_table(frame: pl.DataFrame, stats: dict[str, Any]) -> None:
    header("full-Base facts (generated vs fact)")
    facts = stats["full_base_facts"]
    for label, condition, key in RATE_FACTS:
        got = rate_pct(frame, condition)
        print(f"{'fraud rate % ' + label:34s} {got:5.2f} vs {facts[key]:5.2f}")
    prev = facts["prev_address_months_count_missing_share"]
    for cls, value in CLASSES.items():
        rows = frame.filter(pl.col("fraud_bool") == value)
        got = rows.select(is_missing("prev_address_months_count").mean()).item()
        print(f"{'prev_address missing, ' + cls:34s} {got:5.3f} vs {prev[cls]:5.3f}")
    complete = ~pl.any_horizontal(is_missing(c) for c in COMPLETE_CASE)
    got = frame.filter(pl.col("fraud_bool") == 1).select(complete.mean()).item()
    want = facts["complete_case_share_of_frauds"]
    print(f"{'complete-case share of frauds':34s} {got:5.3f} vs {want:5.3f}")


def drift_table(frame: pl.DataFrame, stats: dict[str, Any]) -> None:
    header("monthly medians, months 0..7 (non-sentinel values; generated / figure)")
    medians = stats["by_month"]["median_overall"]
    for col, want in medians.items():
        got = (
            frame.filter(~is_missing(col))
            .group_by("month")
            .agg(pl.col(col).median())
            .sort("month")[col]
            .to_list()
        )
        print(f"{col:32s} " + " ".join(f"{g:.4g}/{w:.4g}" for g, w in zip(got, want, strict=True)))


def spearman_table(frame: pl.DataFrame, stats: dict[str, Any]) -> None:
    header("Spearman inside each class over the 25 copula columns: |generated - figure|")
    columns = stats["spearman"]["columns"]
    upper = np.triu_indices(len(columns), 1)
    for cls, key in (("legit", "overall_raw"), ("fraud", "fraud_raw")):
        rows = frame.filter(pl.col("fraud_bool") == CLASSES[cls]).select(columns)
        ranks = rows.select(pl.all().rank("average")).to_numpy()
        gap = np.abs(np.corrcoef(ranks.T) - np.array(stats["spearman"][key]))[upper]
        worst = np.argsort(-gap)[:3]
        pairs = ", ".join(
            f"{columns[upper[0][i]]}~{columns[upper[1][i]]} {gap[i]:.2f}" for i in worst
        )
        print(f"{cls:5s} mean {gap.mean():.3f}  max {gap.max():.3f}  worst: {pairs}")


def auc_table(frame: pl.DataFrame, stats: dict[str, Any]) -> None:
    header("univariate AUC = P(fraud value > legit value), raw values (generated vs figure)")
    label = frame["fraud_bool"].to_numpy()
    n_fraud = int(label.sum())
    n_legit = label.size - n_fraud
    for col, want in stats["spearman"]["auc"].items():
        ranks = frame[col].rank("average").to_numpy()
        auc = (ranks[label == 1].sum() - n_fraud * (n_fraud + 1) / 2) / (n_fraud * n_legit)
        flag = "" if abs(auc - want) <= 0.02 else "  <-"
        print(f"{col:34s} {auc:.3f} vs {want:.2f}{flag}")


def main() -> None:
    n_rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 42
    stats = base_stats()
    frame = timed_generate(n_rows, seed)
    for table in (
        check_schema,
        month_table,
        fact_table,
        missing_table,
        pattern_table,
        category_rates,
        discrete_table,
        quantile_table,
        drift_table,
        spearman_table,
        auc_table,
    ):
        table(frame, stats)


if __name__ == "__main__":
    main()
