# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exploratory data analysis: Bank Account Fraud (BAF)
#
# What a data scientist looks at before modelling, on whatever dataset the project runs on: the
# real Kaggle `Base.csv` in `data/raw/` when present, else the seeded synthetic stand-in (or the
# file named by `FRAUDSCORE_DATA_FILE`). The data is found and loaded by the project's own code
# (`Settings`, `dataset_path`, `baf.read_table`, `baf.load_features`), so what is analysed here
# is what training sees.
#
# Every conclusion below is **generated from the numbers computed in the cell above it**, so it
# stays true when the notebook runs on other data. Each section ends with the decision it feeds
# in the training pipeline (`fraudscore_adapters.xgb`), read off the pipeline's own code.
#
# Sections: 1. shape, types, memory and the schema check; 2. missing values (BAF sentinels);
# 3. label balance overall and per month; 4. numeric features by class; 5. categorical and
# binary features; 6. fraud rate by age group; 7. rank correlations; 8. decisions.

# %%
# %matplotlib inline
# %config InlineBackend.print_figure_kwargs = {"bbox_inches": None}
import inspect
import itertools
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import polars.selectors as cs
from IPython.display import Markdown, display

from fraudscore import FEATURES, Kind, Missing
from fraudscore_adapters.baf import DatasetError, load_features, read_table
from fraudscore_adapters.baf.synthetic import SYNTHETIC_FILE_STEM
from fraudscore_adapters.dataset import dataset_path
from fraudscore_adapters.settings import Settings
from fraudscore_adapters.xgb.pipeline import (
    CATEGORICAL_FEATURES,
    NULLABLE_FEATURES,
    NUMERIC_FEATURES,
    build_preprocessor,
)
from fraudscore_adapters.xgb.training import LABEL, MONTH, OLDER_AGE, TrainConfig, fit_model

# Settings hold paths relative to the repository root (data/, .env): run from there, wherever
# the notebook was opened.
ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "src" / "fraudscore").is_dir())
os.chdir(ROOT)
SETTINGS = Settings.from_env(os.environ)
DATA = dataset_path(SETTINGS, create=True)
SYNTHETIC = DATA.name.startswith(SYNTHETIC_FILE_STEM)
if not DATA.is_file():
    raise FileNotFoundError(f"no dataset at {DATA} (from FRAUDSCORE_DATA_FILE, or data/raw)")

pl.Config.set_tbl_rows(60)
pl.Config.set_tbl_cols(-1)
pl.Config.set_fmt_str_lengths(120)
pl.Config.set_tbl_hide_dataframe_shape(True)
plt.rcParams.update(
    {
        "figure.dpi": 100,
        "figure.constrained_layout.use": True,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.titlesize": 11,
        "axes.labelsize": 9,
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
        "legend.fontsize": 8,
    }
)
CLASS = {0: "legitimate", 1: "fraud"}
COLOR = {0: "#4C72B0", 1: "#DD8452"}
FRAUD = pl.col(LABEL) == 1
UNITS = {
    "income": "income decile (0.1 to 0.9)",
    "name_email_similarity": "similarity (0 to 1)",
    "prev_address_months_count": "months",
    "current_address_months_count": "months",
    "customer_age": "years (rounded down to the decade)",
    "days_since_request": "days",
    "intended_balcon_amount": "amount (anonymised units)",
    "zip_count_4w": "applications in 4 weeks",
    "velocity_6h": "applications per hour",
    "velocity_24h": "applications per hour",
    "velocity_4w": "applications per hour",
    "bank_branch_count_8w": "applications in 8 weeks",
    "date_of_birth_distinct_emails_4w": "e-mails in 4 weeks",
    "credit_risk_score": "score (internal units)",
    "bank_months_count": "months",
    "proposed_credit_limit": "credit limit (anonymised currency)",
    "session_length_in_minutes": "minutes",
    "device_distinct_emails_8w": "e-mails in 8 weeks",
    "device_fraud_count": "fraudulent applications",
}


def say(text: str) -> None:
    """Show generated Markdown (the conclusions)."""
    display(Markdown(text))


def pct(share: float | None, digits: int = 2) -> str:
    """A share as a percentage; n/a when undefined."""
    return "n/a" if share is None or math.isnan(share) else f"{100 * share:.{digits}f}%"


def z_two_rates(k1: int, n1: int, k2: int, n2: int) -> float | None:
    """Two-proportion z statistic of k1/n1 against k2/n2 (None when undefined)."""
    if min(n1, n2) == 0:
        return None
    pooled = (k1 + k2) / (n1 + n2)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return None if spread == 0 else (k1 / n1 - k2 / n2) / spread


def rate_errors(frauds, rows):
    """Error bars (2 x n, in %) of the Wilson 95% interval of frauds/rows, for plt.bar(yerr=)."""
    bars = []
    for k, n in zip(frauds, rows, strict=True):
        if not n:
            bars.append((0.0, 0.0))
            continue
        rate, z2 = k / n, 1.96**2
        centre = (rate + z2 / (2 * n)) / (1 + z2 / n)
        half = 1.96 * math.sqrt(rate * (1 - rate) / n + z2 / (4 * n * n)) / (1 + z2 / n)
        bars.append((100 * (rate - (centre - half)), 100 * (centre + half - rate)))
    return np.array(bars).T


if SYNTHETIC:
    kind = "SYNTHETIC"
    about = (
        "the generated stand-in for the Kaggle Base file (its name starts with"
        f" `{SYNTHETIC_FILE_STEM}`): it reproduces aggregate figures of real Base, so the"
        " findings below describe the generator, not real fraud."
    )
else:
    in_raw = DATA.resolve().parent == SETTINGS.raw_dir.resolve()
    kind = "REAL" if in_raw else "REAL (assumed)"
    about = (
        "a real BAF file from `data/raw` (Feedzai, NeurIPS 2022; itself privacy-preserving"
        " generated data; licence CC BY-NC-SA 4.0)."
        if in_raw
        else f"taken as real BAF data: its name does not start with `{SYNTHETIC_FILE_STEM}`."
    )
source = "FRAUDSCORE_DATA_FILE" if SETTINGS.data_file else "the project's default lookup"
say(
    f"**Data: {kind}** - `{DATA}` ({DATA.stat().st_size / 1e6:,.1f} MB on disk, chosen by"
    f" {source}), {about}"
)

# %% [markdown]
# ## 1. Shape, column types, memory, and the schema check
#
# `read_table` reads the file as it is (sentinels intact); `load_features` validates it against
# the core schema (`fraudscore.FEATURES`: ranges, closed category lists, missing-value rules)
# and cleans it: sentinels become nulls, counts `Int32`, binaries `Int8`, categoricals polars
# `Enum`s, and `fraud_bool` and `month` are kept beside the features.

# %%
raw = read_table(DATA)
try:
    clean, report = load_features(DATA)
    check = "passes the schema check: every feature present, typed and in range"
except DatasetError as error:
    say(f"**Schema check failed**; rows at fault are dropped below.\n\n```\n{error}\n```")
    clean, report = load_features(DATA, drop_invalid=True)
    check = f"fails the schema check; {report.dropped:,} invalid rows dropped for the analysis"
missing_labels = [c for c in (LABEL, MONTH) if c not in clean.columns]
if missing_labels:
    raise ValueError(f"the EDA needs the label columns {missing_labels}: {DATA} has none")

ROWS = clean.height
FRAUDS = int(clean[LABEL].sum())
RATE = FRAUDS / ROWS
by_kind = {k: [f for f in FEATURES if f.kind is k] for k in Kind}


def describe(feature):
    if feature.kind is Kind.CATEGORICAL:
        return ", ".join(feature.categories)
    return f"[{feature.low:g}, {feature.high:g}]"


columns = pl.DataFrame(
    [
        {
            "column": f.name,
            "kind": f.kind.value,
            "raw dtype": str(raw.schema[f.name]),
            "cleaned dtype": str(clean.schema[f.name]),
            "valid values": describe(f),
            "missing marker": {Missing.NEVER: "", Missing.MINUS_ONE: "-1", Missing.NEGATIVE: "< 0"}[
                f.missing
            ],
            "description": f.doc,
        }
        for f in FEATURES
    ]
)
display(columns)
say(
    f"- **{ROWS:,} rows** x {len(FEATURES)} features, plus `{LABEL}` and `{MONTH}`"
    f" (months {clean[MONTH].min()} to {clean[MONTH].max()}).\n"
    + "".join(f"- {len(v)} {k.value} features\n" for k, v in by_kind.items())
    + f"- Memory: {raw.estimated_size('mb'):,.1f} MB as read, {clean.estimated_size('mb'):,.1f} MB"
    " cleaned (narrow integer types and Enums; plus the `user_id` row number).\n"
    f"- The file **{check}** (rows in {report.rows_in:,}, rows kept {report.rows_out:,})."
)

# %% [markdown]
# ## 2. Missing values
#
# BAF has (almost) no nulls: it marks a missing value with `-1` in five count/duration columns
# and with *any negative number* in `intended_balcon_amount`. A naive `null_count()` on the raw
# file misses all of them. Below: the share missing per column, overall and per class, and
# whether missingness carries signal (fraud rate when missing vs present; z is the
# two-proportion z statistic, |z| >= 3 taken as more than noise).

# %%
NULLABLE = [f for f in FEATURES if f.nullable]


def is_missing(feature):
    value = pl.col(feature.name)
    marker = value == -1 if feature.missing is Missing.MINUS_ONE else value < 0
    return value.is_null() | marker


flags = raw.select(pl.col(LABEL).cast(pl.Int8), *(is_missing(f).alias(f.name) for f in NULLABLE))
naive_nulls = int(raw.null_count().sum_horizontal().item())
records = []
for f in NULLABLE:
    m = pl.col(f.name)
    s = flags.select(
        missing=m.sum(),
        legit=m.filter(~FRAUD).mean(),
        fraud=m.filter(FRAUD).mean(),
        fraud_missing=FRAUD.filter(m).sum(),
        fraud_present=FRAUD.filter(~m).sum(),
    ).row(0, named=True)
    n_missing, n_present = s["missing"], ROWS - s["missing"]
    rate_missing = s["fraud_missing"] / n_missing if n_missing else None
    rate_present = s["fraud_present"] / n_present if n_present else None
    z = z_two_rates(s["fraud_missing"], n_missing, s["fraud_present"], n_present)
    records.append(
        {
            "column": f.name,
            "marker": "-1" if f.missing is Missing.MINUS_ONE else "< 0",
            "naive nulls": raw[f.name].null_count(),
            "missing rows": n_missing,
            "missing %": 100 * n_missing / ROWS,
            "missing % (legit)": 100 * s["legit"],
            "missing % (fraud)": 100 * s["fraud"],
            "fraud rate % when missing": None if rate_missing is None else 100 * rate_missing,
            "fraud rate % when present": None if rate_present is None else 100 * rate_present,
            "rate ratio": (
                None if rate_missing is None or not rate_present else rate_missing / rate_present
            ),
            "z": z,
        }
    )
missing = pl.DataFrame(records).sort("missing %", descending=True)
display(missing.with_columns(cs.float().round(3)))

# The project's cleaning must turn exactly these sentinels into nulls.
if report.dropped == 0:
    nulls = clean.select(pl.col(NULLABLE_FEATURES).null_count()).row(0, named=True)
    counted = dict(zip(missing["column"], missing["missing rows"], strict=True))
    assert nulls == counted, (nulls, counted)

any_missing = pl.any_horizontal([pl.col(f.name) for f in NULLABLE])
overall = flags.select(
    cells=pl.sum_horizontal([pl.col(f.name).sum() for f in NULLABLE]),
    rows_any=any_missing.sum(),
    legit_any=any_missing.filter(~FRAUD).mean(),
    fraud_any=any_missing.filter(FRAUD).mean(),
).row(0, named=True)
nullable_names = [f.name for f in NULLABLE]
patterns = (
    flags.group_by(nullable_names)
    .agg(rows=pl.len(), frauds=pl.col(LABEL).sum())
    .with_columns(
        missing=pl.concat_list([pl.when(pl.col(n)).then(pl.lit(n)) for n in nullable_names])
        .list.drop_nulls()
        .list.join(", "),
        share_pct=100 * pl.col("rows") / ROWS,
        fraud_rate_pct=100 * pl.col("frauds") / pl.col("rows"),
    )
    .sort("rows", descending=True)
    .select("missing", "rows", "share_pct", "fraud_rate_pct")
    .head(8)
)
print("Most common co-missingness patterns (empty: nothing missing):")
display(patterns.with_columns(cs.float().round(3)))

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
ys = np.arange(missing.height)
height = 0.4
for offset, (label, column) in zip(
    (-height / 2, height / 2), ((0, "missing % (legit)"), (1, "missing % (fraud)")), strict=True
):
    bars = left.barh(ys + offset, missing[column], height, color=COLOR[label], label=CLASS[label])
    left.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
left.set(
    yticks=ys,
    yticklabels=missing["column"],
    xlabel="rows with the value missing (% of the class)",
    title="Missing share per column, by class",
)
left.invert_yaxis()
left.legend(loc="lower right")
for offset, (column, color, label) in zip(
    (-height / 2, height / 2),
    (
        ("fraud rate % when missing", "#C44E52", "value missing"),
        ("fraud rate % when present", "#8C8C8C", "value present"),
    ),
    strict=True,
):
    bars = right.barh(ys + offset, missing[column].fill_null(0), height, color=color, label=label)
    right.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
right.axvline(100 * RATE, color="black", linestyle="--", linewidth=1, label="overall fraud rate")
right.set(xlabel="fraud rate (% of rows)", title="Fraud rate when the value is missing vs present")
right.legend(loc="lower right")
fig.suptitle("Missing values (BAF sentinels: -1, or a negative intended_balcon_amount)")
plt.show()

# %%
top = missing.row(0, named=True)
signal = missing.filter(
    (pl.col("z").abs() >= 3) & ((pl.col("rate ratio") >= 1.25) | (pl.col("rate ratio") <= 0.8))
)
never = missing.filter(pl.col("missing rows") == 0)["column"].to_list()
pre = build_preprocessor()
steps = {name: (step, cols) for name, step, cols in pre.named_steps["columns"].transformers}
imputer = steps["num"][0].named_steps["impute"]
indicator, indicated = steps["missing"]
lines = [
    f"- A naive null count finds **{naive_nulls:,}** missing values; the sentinels mark"
    f" **{overall['cells']:,}** ({pct(overall['cells'] / (ROWS * len(NULLABLE)))} of the"
    f" {len(NULLABLE)} nullable columns' cells). {pct(overall['rows_any'] / ROWS, 1)} of rows"
    f" miss at least one value: {pct(overall['legit_any'], 1)} of legitimate and"
    f" {pct(overall['fraud_any'], 1)} of fraudulent applications.",
    f"- Most often missing: `{top['column']}` ({top['missing %']:.1f}% of rows;"
    f" {top['missing % (legit)']:.1f}% legit vs {top['missing % (fraud)']:.1f}% fraud)."
    + (f" Never missing here: {', '.join(f'`{c}`' for c in never)}." if never else ""),
]
if signal.height:
    lines.append("- Missingness carries signal (|z| >= 3, rate ratio >= 1.25 or <= 0.8) in:")
    lines += [
        f"  - `{r['column']}`: fraud rate {r['fraud rate % when missing']:.2f}% when missing vs"
        f" {r['fraud rate % when present']:.2f}% when present ({r['rate ratio']:.2f}x,"
        f" z = {r['z']:.1f})"
        for r in signal.iter_rows(named=True)
    ]
else:
    lines.append(
        "- No column's missingness moves the fraud rate beyond noise on these rows"
        " (|z| >= 3 and a rate ratio >= 1.25 or <= 0.8)."
    )
lines.append(
    f"- **Pipeline:** numeric features are imputed with the **{imputer.strategy}** (fitted on"
    f" the training split only), and a `MissingIndicator(features='{indicator.features}')` adds"
    f" one 0/1 column per nullable feature ({len(indicated)}: {', '.join(indicated)}), so the"
    " model sees missingness itself, not just the imputed median."
)
say("\n".join(lines))

# %% [markdown]
# ## 3. Label balance, overall and per month
#
# `month` is the application month (0-7); the BAF paper trains on months 0-5 and tests on 6-7.

# %%
by_month = (
    clean.group_by(MONTH)
    .agg(rows=pl.len(), frauds=pl.col(LABEL).sum())
    .sort(MONTH)
    .with_columns(
        share_pct=100 * pl.col("rows") / ROWS,
        fraud_rate_pct=100 * pl.col("frauds") / pl.col("rows"),
    )
)
display(by_month.with_columns(cs.float().round(3)))

fig, ax = plt.subplots(figsize=(9, 4))
ax.bar(by_month[MONTH], by_month["rows"] / 1000, color="#A1C9F4", label="applications")
ax.set(xlabel="month", ylabel="applications (thousands)", xticks=by_month[MONTH].to_list())
ax.grid(False)
rate_ax = ax.twinx()
rate_ax.plot(by_month[MONTH], by_month["fraud_rate_pct"], "o-", color=COLOR[1], label="fraud rate")
rate_ax.axhline(100 * RATE, color="black", linestyle="--", linewidth=1, label="overall rate")
rate_ax.set(ylabel="fraud rate (% of the month's applications)", ylim=(0, None))
handles = ax.get_legend_handles_labels()[0] + rate_ax.get_legend_handles_labels()[0]
ax.legend(handles, [h.get_label() for h in handles], loc="lower left")
ax.set_title("Applications and fraud rate per month")
plt.show()

# %%
config = TrainConfig()
no_reweighting = "scale_pos_weight=1.0" in inspect.getsource(fit_model)
low = by_month.row(by_month["fraud_rate_pct"].arg_min(), named=True)
high = by_month.row(by_month["fraud_rate_pct"].arg_max(), named=True)
late = by_month.filter(pl.col(MONTH) >= 6).select(pl.col("frauds").sum() / pl.col("rows").sum())
early = by_month.filter(pl.col(MONTH) <= 5).select(pl.col("frauds").sum() / pl.col("rows").sum())
split_note = (
    f"the default split (`FRAUDSCORE_SPLIT={SETTINGS.split}`) is stratified 70/15/15, so every"
    f" part keeps the {pct(RATE)} rate: about {0.15 * FRAUDS:,.0f} frauds in validation, where"
    " the threshold is chosen"
    if SETTINGS.split == "random"
    else f"the temporal split (`FRAUDSCORE_SPLIT={SETTINGS.split}`) trains on months 0-4,"
    " validates on month 5 and tests on 6-7, so the per-month rates above differ between parts"
)
say(
    f"- **{FRAUDS:,} frauds in {ROWS:,} applications: {pct(RATE)}**, one in"
    f" {1 / RATE:,.0f}; a model flagging nothing is {pct(1 - RATE)} accurate, so accuracy is"
    " no measure here (ROC-AUC, PR-AUC and recall at a fixed FPR are).\n"
    f"- Per month the rate runs from {low['fraud_rate_pct']:.2f}% (month {low[MONTH]}) to"
    f" {high['fraud_rate_pct']:.2f}% (month {high[MONTH]}),"
    f" {high['fraud_rate_pct'] / low['fraud_rate_pct']:.1f}x; months 6-7 (the paper's test"
    f" months) {pct(late.item())} vs months 0-5 {pct(early.item())}. Month sizes range from"
    f" {by_month['rows'].min():,} to {by_month['rows'].max():,} rows.\n"
    "- **Pipeline:** "
    + (
        "no reweighting: `fit_model` trains with `scale_pos_weight=1.0`, so scores stay honest"
        " probabilities"
        if no_reweighting
        else "`fit_model` no longer sets `scale_pos_weight=1.0`: check how it reweights"
    )
    + f"; the imbalance is handled at the decision: the threshold is the score at"
    f" {config.target_fpr:.0%} FPR on the validation split (the BAF paper's operating point);"
    f" {split_note}."
)

# %% [markdown]
# ## 4. Numeric features by class
#
# Histograms show the share of each class's rows per bin (so the 1% fraud class is comparable),
# over the central 99% of values (0.5th to 99.5th percentile of both classes), missing values
# excluded. The table ranks every non-categorical feature by how well it separates the classes
# on its own: the ROC-AUC of the raw value (0.5 = no separation; below 0.5 = lower in fraud).

# %%
NUMERIC = [f for f in FEATURES if f.kind in (Kind.NUMERIC, Kind.INTEGER)]


def single_auc(name):
    """ROC-AUC of one column as a score (Mann-Whitney, ties averaged), nulls excluded."""
    part = clean.select(name, LABEL).drop_nulls()
    n_fraud = int(part[LABEL].sum())
    n_legit = part.height - n_fraud
    if not n_fraud or not n_legit:
        return None
    ranks = part.select(pl.col(name).rank("average").filter(FRAUD).sum()).item()
    return (ranks - n_fraud * (n_fraud + 1) / 2) / (n_fraud * n_legit)


separation = (
    pl.DataFrame(
        [
            {
                "feature": f.name,
                "kind": f.kind.value,
                "missing %": 100 * clean[f.name].null_count() / ROWS,
                "median legit": clean.filter(~FRAUD)[f.name].median(),
                "median fraud": clean.filter(FRAUD)[f.name].median(),
                "mean legit": clean.filter(~FRAUD)[f.name].mean(),
                "mean fraud": clean.filter(FRAUD)[f.name].mean(),
                "skew": clean[f.name].drop_nulls().skew(),
                "AUC": single_auc(f.name),
            }
            for f in FEATURES
            if f.kind is not Kind.CATEGORICAL
        ]
    )
    .with_columns(pl.col("skew").fill_nan(None), strength=(pl.col("AUC") - 0.5).abs())
    .sort("strength", descending=True, nulls_last=True)
)
display(separation.with_columns(cs.float().round(3)))

# %%
cols = 4
grid_rows = math.ceil(len(NUMERIC) / cols)
fig, axes = plt.subplots(grid_rows, cols, figsize=(15, 2.8 * grid_rows), layout="none")
fig.subplots_adjust(left=0.05, right=0.99, bottom=0.04, top=0.95, hspace=0.6, wspace=0.3)
for ax, f in zip(axes.flat, NUMERIC, strict=False):
    present = clean.select(f.name, LABEL).drop_nulls()
    by_class = {c: present.filter(pl.col(LABEL) == c)[f.name].to_numpy() for c in (0, 1)}
    levels = np.sort(present[f.name].unique().to_numpy())
    if len(levels) <= 12:  # a few distinct values: one pair of bars per value
        xs = np.arange(len(levels))
        for offset, c in ((-0.2, 0), (0.2, 1)):
            counts = np.array([np.count_nonzero(by_class[c] == v) for v in levels])
            ax.bar(
                xs + offset,
                100 * counts / max(by_class[c].size, 1),
                0.4,
                color=COLOR[c],
                alpha=0.75,
                label=CLASS[c],
            )
        ax.set_xticks(xs, [f"{v:g}" for v in levels], rotation=45 if len(levels) > 9 else 0)
    else:  # a histogram over the central 99%
        lo, hi = present.select(
            lo=pl.col(f.name).quantile(0.005, "lower"),
            hi=pl.col(f.name).quantile(0.995, "higher"),
        ).row(0)
        if f.kind is Kind.INTEGER and hi - lo <= 60:
            bins = np.arange(lo - 0.5, hi + 1.5)
        else:
            bins = np.linspace(lo, hi, 41)
        tallest = 0.0
        for c in (0, 1):
            values = by_class[c]
            inside = values[(values >= bins[0]) & (values <= bins[-1])]
            if values.size:
                heights, *_ = ax.hist(
                    inside,
                    bins=bins,
                    weights=np.full(inside.size, 100 / values.size),
                    histtype="stepfilled" if c == 0 else "step",
                    linewidth=1.6,
                    alpha=0.55 if c == 0 else 1.0,
                    color=COLOR[c],
                    label=CLASS[c],
                )
                tallest = max(tallest, float(np.max(heights)))
        if tallest > 40:  # one spike would flatten the rest: log scale
            ax.set_yscale("log")
    null_share = clean[f.name].null_count() / ROWS
    digits = 1 if null_share >= 0.01 else 2
    ax.set_title(
        f.name + (f" ({pct(null_share, digits)} missing)" if null_share else ""), fontsize=9
    )
    ax.set_xlabel(UNITS.get(f.name, f.name))
    ax.set_ylabel("% of the class's rows" + (" (log)" if ax.get_yscale() == "log" else ""))
for ax in list(axes.flat)[len(NUMERIC) :]:
    ax.axis("off")
axes.flat[0].legend()
fig.suptitle(
    "Numeric features by class: share of each class's rows per bin or value"
    " (histograms: central 99% of values; missing values excluded)",
    fontsize=12,
)
plt.show()

# %%
strong = separation.filter(pl.col("strength") >= 0.05)
weak = separation.filter(pl.col("strength") < 0.02)["feature"].to_list()
negative_velocity = int((clean["velocity_6h"] < 0).sum())
lines = [
    f"- {strong.height} of {separation.height} non-categorical features separate the classes"
    " on their own with AUC at least 0.05 away from 0.5; the strongest:"
]
lines += [
    f"  - `{r['feature']}`: AUC {r['AUC']:.3f}, {'higher' if r['AUC'] > 0.5 else 'lower'} in"
    f" fraud (median {r['median fraud']:g} vs {r['median legit']:g}, mean"
    f" {r['mean fraud']:.3g} vs {r['mean legit']:.3g})"
    for r in separation.head(6).iter_rows(named=True)
]
lines.append(
    f"- {len(weak)} features barely separate alone (|AUC - 0.5| < 0.02): "
    + (", ".join(f"`{w}`" for w in weak) or "none")
    + ". Weak alone is not useless: trees combine them."
)
lines.append(
    f"- `velocity_6h` is negative in {negative_velocity:,} rows: allowed by the datasheet"
    " (range from -175), so it is kept as a value, not treated as missing."
)
constant = [f.name for f in FEATURES if clean[f.name].drop_nulls().n_unique() <= 1]
if constant:
    lines.append(
        f"- Constant here (no information): {', '.join(f'`{c}`' for c in constant)}; the"
        " pipeline keeps it (the schema's 30 features are the model's input)."
    )
skewed = separation.filter(
    pl.col("kind").is_in([Kind.NUMERIC.value, Kind.INTEGER.value]) & (pl.col("skew").abs() >= 2)
)["feature"].to_list()
lines.append(
    f"- {len(skewed)} numeric/count features are strongly skewed (|skew| >= 2): "
    + (", ".join(f"`{c}`" for c in skewed) or "none")
    + "."
)
scaler = steps["num"][0].named_steps["scale"]
lines.append(
    f"- **Pipeline:** the {len(NUMERIC_FEATURES)} numeric, count and binary features are"
    f" median-imputed then scaled by `{type(scaler).__name__}`; no log transform, clipping or"
    " outlier removal: gradient-boosted trees split on thresholds, so monotone transforms and"
    " long tails do not change what they can learn."
)
say("\n".join(lines))

# %% [markdown]
# ## 5. Categorical and binary features
#
# Category frequencies over the schema's closed lists (a category absent from the data shows 0
# rows) and the fraud rate per category, with a 95% interval (normal approximation), against
# the overall rate.

# %%
parts = []
for f in CATEGORICAL_FEATURES:
    levels = pl.DataFrame(
        {f.name: pl.Series(list(f.categories), dtype=pl.Enum(list(f.categories)))}
    )
    counts = clean.group_by(f.name).agg(rows=pl.len(), frauds=pl.col(LABEL).sum())
    parts.append(
        levels.join(counts, on=f.name, how="left")
        .fill_null(0)
        .select(
            pl.lit(f.name).alias("feature"),
            pl.col(f.name).cast(pl.String).alias("category"),
            "rows",
            "frauds",
        )
    )
categories = pl.concat(parts).with_columns(
    share_pct=100 * pl.col("rows") / ROWS,
    fraud_rate_pct=pl.when(pl.col("rows") > 0).then(100 * pl.col("frauds") / pl.col("rows")),
)
categories = categories.with_columns(vs_overall=pl.col("fraud_rate_pct") / (100 * RATE))
display(categories.with_columns(cs.float().round(3)))

BINARY = [f.name for f in FEATURES if f.kind is Kind.BINARY]
binary_rows = []
for name in BINARY:
    s = clean.select(
        ones=(pl.col(name) == 1).sum(),
        frauds_one=FRAUD.filter(pl.col(name) == 1).sum(),
        frauds_zero=FRAUD.filter(pl.col(name) == 0).sum(),
    ).row(0, named=True)
    ones, zeros = s["ones"], ROWS - s["ones"]
    binary_rows.append(
        {
            "feature": name,
            "share of 1 %": 100 * ones / ROWS,
            "fraud rate % when 1": 100 * s["frauds_one"] / ones if ones else None,
            "fraud rate % when 0": 100 * s["frauds_zero"] / zeros if zeros else None,
            "z": z_two_rates(s["frauds_one"], ones, s["frauds_zero"], zeros),
        }
    )
binaries = pl.DataFrame(binary_rows).with_columns(
    rate_ratio=pl.col("fraud rate % when 1") / pl.col("fraud rate % when 0")
)
display(binaries.with_columns(cs.float().round(3)))

# %%
fig, axes = plt.subplots(2, len(CATEGORICAL_FEATURES), figsize=(16, 6.4))
for share_ax, rate_ax, f in zip(*axes, CATEGORICAL_FEATURES, strict=True):
    part = categories.filter(pl.col("feature") == f.name)
    share_bars = share_ax.bar(part["category"], part["share_pct"], color="#8DA0CB")
    share_ax.bar_label(share_bars, fmt="%.1f", fontsize=7)
    share_ax.set(title=f"{f.name}: share of rows", ylabel="% of all applications")
    share_ax.tick_params(axis="x", labelrotation=45 if len(f.categories) > 3 else 0)
    rate_ax.tick_params(axis="x", labelrotation=45 if len(f.categories) > 3 else 0)
    rates = part["fraud_rate_pct"].fill_null(np.nan).to_numpy()
    errors = rate_errors(part["frauds"], part["rows"])
    rate_ax.bar(part["category"], rates, yerr=errors, capsize=3, color="#E78AC3")
    rate_ax.axhline(100 * RATE, color="black", linestyle="--", linewidth=1, label="overall")
    rate_ax.set(title=f"{f.name}: fraud rate", ylabel="fraud rate (% of rows, 95% interval)")
axes[1][0].legend(loc="upper left")
fig.suptitle("Categorical features: frequency and fraud rate per category", fontsize=12)
plt.show()

fig, ax = plt.subplots(figsize=(10, 3.6))
xs = np.arange(binaries.height)
for offset, column, color in (
    (-0.2, "fraud rate % when 0", "#8C8C8C"),
    (0.2, "fraud rate % when 1", "#C44E52"),
):
    bars = ax.bar(xs + offset, binaries[column].fill_null(0), 0.4, color=color, label=column)
    ax.bar_label(bars, fmt="%.2f", fontsize=7)
ax.axhline(100 * RATE, color="black", linestyle="--", linewidth=1, label="overall")
ax.set(
    xticks=xs,
    xticklabels=binaries["feature"],
    ylabel="fraud rate (% of rows)",
    title="Binary features: fraud rate when 0 vs when 1",
)
ax.legend()
plt.show()

# %%
encoder = steps["cat"][0]
MIN_ROWS = 100  # a fraud rate over fewer rows is too noisy to rank categories by
lines = []
for f in CATEGORICAL_FEATURES:
    part = categories.filter(pl.col("feature") == f.name)
    seen = part.filter(pl.col("rows") > 0)
    common = seen.sort("rows", descending=True).row(0, named=True)
    sizable = seen.filter(pl.col("rows") >= MIN_ROWS)
    riskiest = (sizable if sizable.height else seen).sort("fraud_rate_pct", descending=True)
    riskiest = riskiest.row(0, named=True)
    rare = seen.filter(pl.col("share_pct") < 1)["category"].to_list()
    absent = part.filter(pl.col("rows") == 0)["category"].to_list()
    lines.append(
        f"- `{f.name}`: {seen.height} of {len(f.categories)} categories present"
        + (f" (absent: {', '.join(absent)})" if absent else "")
        + f"; most common `{common['category']}` ({common['share_pct']:.1f}%); highest fraud"
        f" rate (of categories with >= {MIN_ROWS} rows) `{riskiest['category']}`"
        f" {riskiest['fraud_rate_pct']:.2f}%"
        f" ({riskiest['vs_overall']:.1f}x overall, {riskiest['rows']:,} rows)"
        + (f"; rare (< 1% of rows): {', '.join(rare)}" if rare else "")
        + "."
    )
b = binaries.sort((pl.col("rate_ratio").log()).abs(), descending=True, nulls_last=True).row(
    0, named=True
)
lines.append(
    f"- Binary features: the largest gap is `{b['feature']}`: fraud rate"
    f" {b['fraud rate % when 1']:.2f}% when 1 vs {b['fraud rate % when 0']:.2f}% when 0"
    f" ({b['rate_ratio']:.2f}x, z = {b['z']:.1f})."
)
width = sum(len(c) for c in encoder.categories)
lines.append(
    f"- **Pipeline:** `{type(encoder).__name__}` over the schema's closed category lists"
    f" ({width} columns for {len(CATEGORICAL_FEATURES)} features), `handle_unknown="
    f"'{encoder.handle_unknown}'`: an unknown category is rejected by validation before"
    " scoring, and a category rare or absent in training still has its column. Binaries go"
    " through the numeric branch as 0/1 values."
)
say("\n".join(lines))

# %% [markdown]
# ## 6. Fraud rate by age group
#
# The project's fairness groups are applicants aged 50 or more vs under 50 (`OLDER_AGE` in
# training): the model card reports the ratio of their false-positive rates at the threshold
# (predictive equality, as in the BAF paper).

# %%
age_group = (
    pl.when(pl.col("customer_age") >= OLDER_AGE)
    .then(pl.lit(f">= {OLDER_AGE}"))
    .otherwise(pl.lit(f"< {OLDER_AGE}"))
)
groups = (
    clean.group_by(age_group.alias("age group"))
    .agg(rows=pl.len(), frauds=pl.col(LABEL).sum())
    .sort("age group")
    .with_columns(
        share_pct=100 * pl.col("rows") / ROWS,
        fraud_rate_pct=100 * pl.col("frauds") / pl.col("rows"),
    )
)
by_age = (
    clean.group_by("customer_age")
    .agg(rows=pl.len(), frauds=pl.col(LABEL).sum())
    .sort("customer_age")
    .with_columns(
        share_pct=100 * pl.col("rows") / ROWS,
        fraud_rate_pct=100 * pl.col("frauds") / pl.col("rows"),
    )
)
display(groups.with_columns(cs.float().round(3)))
display(by_age.with_columns(cs.float().round(3)))

fig, (share_ax, rate_ax) = plt.subplots(1, 2, figsize=(12, 3.8))
ages = by_age["customer_age"].to_numpy()
share_ax.bar(ages, by_age["share_pct"], width=8, color="#A1C9F4")
share_ax.set(
    xlabel="customer_age (years, by decade)",
    ylabel="% of all applications",
    title="Applications by age",
    xticks=ages,
)
errors = rate_errors(by_age["frauds"], by_age["rows"])
colors = [COLOR[1] if a >= OLDER_AGE else COLOR[0] for a in ages]
rate_ax.bar(ages, by_age["fraud_rate_pct"], width=8, yerr=errors, capsize=3, color=colors)
for g in groups.iter_rows(named=True):
    rate_ax.axhline(
        g["fraud_rate_pct"],
        color=COLOR[1] if g["age group"].startswith(">=") else COLOR[0],
        linestyle="--",
        linewidth=1,
        label=f"age {g['age group']}: {g['fraud_rate_pct']:.2f}%",
    )
rate_ax.set(
    xlabel="customer_age (years, by decade)",
    ylabel="fraud rate (% of rows)",
    title="Fraud rate by age (95% interval); dashed: group rates",
    xticks=ages,
)
rate_ax.legend(loc="upper left")
plt.show()

# %%
older = groups.filter(pl.col("age group").str.starts_with(">=")).row(0, named=True)
younger = groups.filter(pl.col("age group").str.starts_with("<")).row(0, named=True)
z = z_two_rates(older["frauds"], older["rows"], younger["frauds"], younger["rows"])
say(
    f"- Aged {OLDER_AGE} or more: {older['share_pct']:.1f}% of applications, fraud rate"
    f" **{older['fraud_rate_pct']:.2f}%** vs **{younger['fraud_rate_pct']:.2f}%** under"
    f" {OLDER_AGE}: {older['fraud_rate_pct'] / younger['fraud_rate_pct']:.2f}x"
    f" (z = {z:.1f}).\n"
    "- `customer_age` is a model input, and a score that follows this base-rate gap would also"
    " flag more legitimate older applicants: the model card's FPR ratio between the groups at the"
    " threshold checks it (the BAF paper's usual bar is 0.8 or more)."
)

# %% [markdown]
# ## 7. Rank correlations (Spearman)
#
# Spearman's rank correlation of every pair of non-categorical features, plus `fraud_bool` and
# `month`, on cleaned values (missing values dropped pair by pair), with polars'
# `pl.corr(method="spearman")`. On a large file the pairs are computed on a seeded random sample
# (the standard error of a correlation is about 1/sqrt(n), well under 0.01 here).

# %%
CORR_SAMPLE = 100_000
sample = clean.sample(min(CORR_SAMPLE, ROWS), seed=SETTINGS.seed)
candidates = [LABEL, MONTH, *(f.name for f in FEATURES if f.kind is not Kind.CATEGORICAL)]
dropped = [c for c in candidates if sample[c].drop_nulls().n_unique() <= 1]
names = [c for c in candidates if c not in dropped]
pairs = list(itertools.combinations(names, 2))
rhos = [
    None if rho is None or math.isnan(rho) else rho
    for rho in sample.select(
        pl.corr(a, b, method="spearman").alias(str(i)) for i, (a, b) in enumerate(pairs)
    ).row(0)
]
matrix = np.eye(len(names))
index = {n: i for i, n in enumerate(names)}
for (a, b), rho in zip(pairs, rhos, strict=True):
    matrix[index[a], index[b]] = matrix[index[b], index[a]] = np.nan if rho is None else rho
correlations = pl.DataFrame(
    {"a": [a for a, _ in pairs], "b": [b for _, b in pairs], "rho": rhos},
    schema={"a": pl.String, "b": pl.String, "rho": pl.Float64},
).with_columns(abs_rho=pl.col("rho").abs())

fig, ax = plt.subplots(figsize=(12, 10))
image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
ax.set_yticks(range(len(names)), names, fontsize=8)
ax.grid(False)
for i, j in itertools.product(range(len(names)), repeat=2):
    if i != j and abs(matrix[i, j]) >= 0.3:
        color = "white" if abs(matrix[i, j]) >= 0.6 else "black"
        ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7, color=color)
fig.colorbar(image, ax=ax, shrink=0.8, label=r"Spearman rank correlation $\rho$")
ax.set_title(
    f"Spearman rank correlations ({sample.height:,} rows; |rho| >= 0.3 annotated)", fontsize=12
)
plt.show()

features_only = correlations.filter(~pl.col("a").is_in([LABEL, MONTH]))
print("Strongest feature pairs:")
display(features_only.sort("abs_rho", descending=True, nulls_last=True).head(12))
print(f"Correlation with {MONTH} (drift) and with {LABEL}:")
with_month = correlations.filter(pl.col("a") == MONTH).sort(
    "abs_rho", descending=True, nulls_last=True
)
with_label = correlations.filter((pl.col("a") == LABEL) & (pl.col("b") != MONTH)).sort(
    "abs_rho", descending=True, nulls_last=True
)
display(with_month.head(8))
display(with_label.head(8))

# %%
first = features_only.sort("abs_rho", descending=True, nulls_last=True).row(0, named=True)
strong_pairs = features_only.filter(pl.col("abs_rho") >= 0.5).sort("abs_rho", descending=True)
drifting = with_month.filter(pl.col("abs_rho") >= 0.1)
label_top = with_label.row(0, named=True)
lines = [
    f"- Strongest pair: `{first['a']}` and `{first['b']}` (rho = {first['rho']:.2f});"
    f" {strong_pairs.height} feature pairs have |rho| >= 0.5"
    + (
        ": "
        + "; ".join(
            f"`{r['a']}`/`{r['b']}` {r['rho']:.2f}"
            for r in strong_pairs.head(6).iter_rows(named=True)
        )
        if strong_pairs.height
        else ""
    )
    + ".",
    f"- Drift: {drifting.height} features have |rho| >= 0.1 with `{MONTH}`"
    + (
        ", led by "
        + ", ".join(f"`{r['b']}` ({r['rho']:.2f})" for r in drifting.head(4).iter_rows(named=True))
        if drifting.height
        else ""
    )
    + ". A random split mixes months; `FRAUDSCORE_SPLIT=temporal` measures what drift costs.",
    f"- With `{LABEL}` the largest |rho| is `{label_top['b']}` ({label_top['rho']:.3f}): rank"
    " correlations with a 1% binary label are small by construction; the AUC table of section 4"
    " is the better measure of separation.",
]
if dropped:
    lines.append(f"- Left out as constant in the sample: {', '.join(f'`{d}`' for d in dropped)}.")
lines.append(
    "- **Pipeline:** no feature is dropped for collinearity: boosted trees tolerate correlated"
    " inputs, but correlated features share gain, so"
    " read the model card's importance shares per group, not per feature."
)
say("\n".join(lines))

# %% [markdown]
# ## 8. Decisions for the training pipeline
#
# What the sections above feed into `fraudscore_adapters.xgb` (`pipeline.py`, `training.py`),
# with the numbers behind each decision from this run.

# %%
ranked = categories.filter(pl.col("rows") >= MIN_ROWS)["vs_overall"]
display(
    pl.DataFrame(
        [
            {
                "topic": "missing values",
                "what the data shows": f"{pct(overall['rows_any'] / ROWS, 1)} of rows miss a"
                f" value; missingness moves the fraud rate in {signal.height} of"
                f" {len(NULLABLE)} nullable columns",
                "what the pipeline does": f"{imputer.strategy} imputation (train split) + one"
                f" missing indicator per nullable feature ({len(indicated)})",
            },
            {
                "topic": "categoricals",
                "what the data shows": f"{len(CATEGORICAL_FEATURES)} closed-list features;"
                f" fraud rate per category (>= {MIN_ROWS} rows) from {ranked.min():.2f}x to"
                f" {ranked.max():.1f}x overall",
                "what the pipeline does": f"one-hot over the schema lists ({width} columns),"
                f" unknown categories rejected ({encoder.handle_unknown!r})",
            },
            {
                "topic": "imbalance",
                "what the data shows": f"fraud rate {pct(RATE)} (1 in {1 / RATE:,.0f})",
                "what the pipeline does": (
                    "no reweighting (scale_pos_weight=1.0)"
                    if no_reweighting
                    else "check fit_model's weighting"
                )
                + f"; threshold at {config.target_fpr:.0%} FPR on validation",
            },
            {
                "topic": "numeric scale and tails",
                "what the data shows": f"{strong.height} features with |AUC - 0.5| >= 0.05;"
                f" {len(skewed)} strongly skewed",
                "what the pipeline does": "median impute + standard scaling; no transforms"
                " (trees split on thresholds)",
            },
            {
                "topic": "age fairness",
                "what the data shows": f"fraud rate {older['fraud_rate_pct']:.2f}% (>= 50) vs"
                f" {younger['fraud_rate_pct']:.2f}% (< 50)",
                "what the pipeline does": "reports the FPR ratio of the two groups at the"
                " threshold in the model card",
            },
            {
                "topic": "drift",
                "what the data shows": f"{drifting.height} features correlate with month"
                f" (|rho| >= 0.1); monthly fraud rate {low['fraud_rate_pct']:.2f}% to"
                f" {high['fraud_rate_pct']:.2f}%",
                "what the pipeline does": f"split '{SETTINGS.split}' now; 'temporal' (months"
                " 0-4 / 5 / 6-7) on request",
            },
        ]
    )
)
