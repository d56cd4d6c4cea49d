"""A synthetic stand-in for the BAF **Base** file, drawn from aggregate figures of the real one.

The real Bank Account Fraud files (Jesus et al., *Turning the Tables: Biased, Imbalanced, Dynamic
Tabular Datasets for ML Evaluation*, NeurIPS 2022; licence CC BY-NC-SA 4.0) need a Kaggle
account. :func:`generate` draws rows in the Kaggle ``Base.csv`` layout from the figures in
``base_stats.json`` (aggregated from real Base rows; no rows are shipped).

What it models, per class (legit / fraud), so that a model trained here meets the signal real
Base has, and no other:

* month sizes and per-month fraud rates: exact cell counts, overall fraud rate 1.103%;
* every numeric marginal: a piecewise-linear inverse CDF through the quantiles (min and max as
  the 0 and 1 ends) plus the CDF at the ``fraud_rate_by_bin`` edges; value/share tables for the
  discrete columns and the binaries; raw sentinels below the values (``-1``, or a negative
  ``intended_balcon_amount`` spread uniformly over [-16, 0));
* rank correlations through a Gaussian copula over the 25 raw columns of the Spearman figures
  (``month`` included: it carries the monthly drift of the velocities, ``zip_count_4w``,
  ``date_of_birth_distinct_emails_4w``...). Latent correlations are solved so that the *output*
  Spearman matches the figures, ties included (binaries, deciles, sentinel blocks), through the
  Hermite (Mehler) expansion, then repaired to positive definite by eigenvalue clipping;
* monthly drift: on top of the month's rank correlations, the latents of the continuous columns
  without sentinels (velocities, ``zip_count_4w``, ``name_email_similarity``...) get per-month
  offsets fitted to Base's monthly medians (``velocity_4w`` falls from ~6,300 in month 0 to
  ~3,100 in month 7), the same for both classes; the class marginals barely move;
* co-missingness: ``prev_address_months_count``, ``bank_months_count`` and
  ``intended_balcon_amount`` go missing by chained thresholds, P(missing | the earlier ones'
  status), from ``missing_patterns``; each still goes missing at the bottom of its own latent, so
  missingness keeps its rank correlation with the other columns;
* full-Base facts over noisy estimates: fraud rates for age >= 50 and < 50, housing BA, windows,
  employment CC; ``prev_address_months_count`` missing shares.

What it does not model: the five categoricals are independent of every other column within a
class; monthly swings of the missing shares, of the categorical mix and of the columns with
sentinels (beyond their rank correlation with the month); any dependence a Gaussian copula of
pairwise rank correlations cannot carry (tail dependence, interactions); where the negative
``intended_balcon_amount`` values sit within [-16, 0) (no figures); the real row order (rows come
out shuffled). A value or category absent from one class's figures gets the other class's share,
so rare codes carry no invented signal.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray
from scipy.special import ndtr, ndtri  # type: ignore[import-untyped]

__all__ = ["SYNTHETIC_FILE_STEM", "base_stats", "generate"]

SYNTHETIC_FILE_STEM = "baf_synthetic"
"""Stem of any file written from :func:`generate`, so synthetic data is never taken for real."""

Floats = NDArray[np.float64]

_CLASSES = ("legit", "fraud")
_SPEARMAN = {"legit": "overall_raw", "fraud": "fraud_raw"}
_BALCON = "intended_balcon_amount"
_BALCON_LOW = -16.0
_CO_MISSING = ("prev_address_months_count", "bank_months_count", _BALCON)
_GRID = 8192
_TERMS = 60
_EIGEN_FLOOR = 1e-3


def base_stats() -> dict[str, Any]:
    """A copy of the embedded Base figures (aggregate statistics of real Base, with citation)."""
    return copy.deepcopy(_load_stats())


@functools.cache
def _load_stats() -> dict[str, Any]:
    text = resources.files("fraudscore_adapters.baf").joinpath("base_stats.json").read_text()
    stats: dict[str, Any] = json.loads(text)
    return stats


def _phi(z: Floats) -> Floats:
    return np.asarray(ndtr(z), dtype=np.float64)


def _phi_inv(u: Floats) -> Floats:
    return np.asarray(ndtri(u), dtype=np.float64)


# --- marginals --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Marginal:
    """The inverse CDF of one column in one class.

    A block of ``missing`` sentinel rows sits at the bottom of the uniform scale; above it,
    ``step``: a value table, ``cum`` its cumulative shares (last one left out), or else quantile
    knots (``cum``, ``values``) read linearly, rounded when ``integer``. ``sentinel`` is -1, or NaN
    for a negative amount spread over [-16, 0).
    """

    cum: Floats
    values: Floats
    step: bool
    integer: bool = False
    missing: float = 0.0
    sentinel: float = -1.0

    def __call__(self, u: Floats, missing: Floats | None = None) -> Floats:
        if missing is None and self.missing == 0.0:
            return self._values(u)
        share = self.missing if missing is None else missing
        inner = np.clip((u - share) / np.maximum(1.0 - share, 1e-12), 0.0, 1.0)
        return np.where(u < share, self._sentinels(u, share), self._values(inner))

    def _values(self, u: Floats) -> Floats:
        if self.step:
            return self.values[np.searchsorted(self.cum, u, side="right")]
        x = np.interp(u, self.cum, self.values)
        return np.rint(x) if self.integer else x

    def cuts(self) -> tuple[Floats, Floats] | None:
        """A step marginal as latent thresholds and values (sentinel first): no CDF needed."""
        if not self.step:
            return None
        cum = np.concatenate([[self.missing], self.missing + (1 - self.missing) * self.cum])
        values = np.concatenate([[self.sentinel], self.values])
        return _phi_inv(cum), values

    def _sentinels(self, u: Floats, share: Floats | float) -> Floats:
        if not np.isnan(self.sentinel):
            return np.full_like(u, self.sentinel)
        with np.errstate(divide="ignore", invalid="ignore"):
            spread = _BALCON_LOW * (1.0 - u / share)
        return np.minimum(spread, -1e-6)


def _step(values: Sequence[float], shares: Floats) -> _Marginal:
    """A value table; a ``-1`` value becomes the sentinel block below the others."""
    numbers = np.asarray(values, dtype=np.float64)
    shares = shares / shares.sum()
    missing = float(shares[numbers == -1].sum())
    numbers, shares = numbers[numbers != -1], shares[numbers != -1]
    cum = np.cumsum(shares / shares.sum())[:-1]
    return _Marginal(cum, numbers, step=True, missing=missing)


def _neutral_fill(legit: Floats, fraud: Floats) -> tuple[Floats, Floats]:
    """A value seen in one class only gets the other class's share: no invented signal."""
    legit = np.where((legit == 0) & (fraud > 0), fraud, legit)
    fraud = np.where((fraud == 0) & (legit > 0), legit, fraud)
    return legit / legit.sum(), fraud / fraud.sum()


def _set_group(shares: Floats, group: NDArray[np.bool_], total: float) -> Floats:
    """Rescale ``shares`` so that ``group`` holds ``total`` and the rest ``1 - total``."""
    inside = float(shares[group].sum())
    scaled = np.where(group, shares * total / inside, shares * (1 - total) / (1 - inside))
    return np.asarray(scaled, dtype=np.float64)


def _fraud_share_for_rate(legit_share: float, rate: float) -> float:
    """The fraud-class share of a group whose fraud rate is ``rate`` (Bayes, prevalence pi)."""
    pi = _load_stats()["full_base_facts"]["fraud_rate"]
    return float(rate * (1 - pi) * legit_share / (pi * (1 - rate)))


def _apply_rate_fact(
    legit: Floats, fraud: Floats, group: NDArray[np.bool_], rate_pct: float
) -> tuple[Floats, Floats]:
    """Make the group's fraud rate the full-Base fact, keeping the legit shares."""
    target = _fraud_share_for_rate(float(legit[group].sum()), rate_pct / 100)
    return legit, _set_group(fraud, group, target)


def _apply_age_facts(legit: Floats, fraud: Floats, ages: Floats) -> tuple[Floats, Floats]:
    """Ages >= 50: fit both classes' shares to the two full-Base fraud rates (>= 50 and < 50)."""
    facts = _load_stats()["full_base_facts"]
    pi = facts["fraud_rate"]
    high, low = facts["fraud_rate_age_ge_50_pct"] / 100, facts["fraud_rate_age_lt_50_pct"] / 100
    old_share = (pi - low) / (high - low)
    group = ages >= 50
    legit = _set_group(legit, group, old_share * (1 - high) / (1 - pi))
    return legit, _set_group(fraud, group, old_share * high / pi)


_RATE_FACTS = {
    "housing_status": ("BA", "fraud_rate_housing_status_BA_pct"),
    "device_os": ("windows", "fraud_rate_device_os_windows_pct"),
    "employment_status": ("CC", "fraud_rate_employment_status_CC_pct"),
}


def _table_shares(col: str) -> tuple[list[Any], Floats, Floats]:
    """Values and per-class shares of a discrete, binary or categorical column, facts applied."""
    stats = _load_stats()
    if col in stats["categorical"]:
        table = stats["categorical"][col]
        values: list[Any] = list(table)
        legit = np.array([table[v]["share_legit"] for v in values], dtype=np.float64)
        fraud = np.array([table[v]["share_fraud"] for v in values], dtype=np.float64)
    else:
        table = stats["numeric"][col]["values"]
        values = list(table["value"])
        legit = np.array(table["share_legit"], dtype=np.float64)
        fraud = np.array(table["share_fraud"], dtype=np.float64)
    legit, fraud = _neutral_fill(legit, fraud)
    if col == "customer_age":
        legit, fraud = _apply_age_facts(legit, fraud, np.array(values, dtype=np.float64))
    if col in _RATE_FACTS:
        code, fact = _RATE_FACTS[col]
        group = np.array([v == code for v in values])
        legit, fraud = _apply_rate_fact(legit, fraud, group, stats["full_base_facts"][fact])
    return values, legit, fraud


def _discrete_marginal(col: str, cls: str) -> _Marginal:
    stats = _load_stats()
    values, legit, fraud = _table_shares(col)
    if col in stats["categories"]:
        values = [stats["categories"][col].index(v) for v in values]
    numbers = [float(v) for v in values]
    if col == "income":
        reprs = stats["numeric"]["income"]["csv_repr"]
        numbers = [float(reprs[str(v)]) for v in values]
    return _step(numbers, legit if cls == "legit" else fraud)


def _missing_share(col: str, cls: str) -> float:
    """Per-class sentinel share: the full-Base fact if there is one, never zero in one class."""
    stats = _load_stats()
    facts = stats["full_base_facts"]["prev_address_months_count_missing_share"]
    if col == "prev_address_months_count":
        return float(facts[cls])
    shares = stats["numeric"][col]["missing_share"]
    own, other = shares[cls], shares["fraud" if cls == "legit" else "legit"]
    return float(own if own > 0 else other)


def _bin_knots(col: str, cls: str) -> list[tuple[float, float]]:
    """(CDF, value) at the bin edges of ``fraud_rate_by_bin``, non-sentinel values only.

    Legit: the sample counts. Fraud: the counts reweighted by the odds of each bin's fraud rate
    (Bayes). For counts, the knot sits half a unit below the edge, so rounding keeps it exact.
    """
    figures = _load_stats()["numeric"][col]
    bins = figures["fraud_rate_by_bin"]
    shares = np.array(bins["n_legit"], dtype=np.float64)
    if cls == "fraud":
        rate = np.array(bins["rate"], dtype=np.float64)
        shares *= rate / (1 - rate)
    cum = np.cumsum(shares / shares.sum())[:-1]
    shift = 0.5 if figures["kind"] != "numeric_continuous" else 0.0
    return [(float(c), edge - shift) for c, edge in zip(cum, bins["upper_edges"], strict=True)]


def _merge_knots(
    knots: list[tuple[float, float]], extra: list[tuple[float, float]]
) -> tuple[Floats, Floats]:
    """Add each ``extra`` knot that falls strictly between two others, in order; drop the rest."""
    merged = list(knots)
    for p, x in extra:
        below = [v for q, v in knots if q < p]
        above = [v for q, v in knots if q > p]
        if len(below) + len(above) == len(knots) and max(below) <= x <= min(above):
            merged.append((p, x))
    merged.sort()
    return np.array([p for p, _ in merged]), np.array([x for _, x in merged], dtype=np.float64)


def _continuous_marginal(col: str, cls: str) -> _Marginal:
    """Quantile knots (min and max as the 0 and 1 ends) plus bin-edge knots, sentinels below."""
    stats = _load_stats()
    figures = stats["numeric"][col]
    part = figures[cls]
    levels = [0.0, *stats["quantile_levels"], 1.0]
    knots = list(zip(levels, [part["min"], *part["q"], part["max"]], strict=True))
    extra = _bin_knots(col, cls)
    if cls == "legit" and "negative_share_overall" in figures:
        extra.append((figures["negative_share_overall"], 0.0))
    cum, values = _merge_knots(knots, extra)
    sentinel = figures["sentinel"]
    return _Marginal(
        cum,
        values,
        step=False,
        integer=figures["kind"] in ("integer_count", "integer_score"),
        missing=_missing_share(col, cls) if sentinel else 0.0,
        sentinel=float("nan") if sentinel == "<0" else -1.0,
    )


def _marginal(col: str, cls: str, month_shares: Floats) -> _Marginal:
    stats = _load_stats()
    if col == "month":
        return _step(list(range(month_shares.size)), month_shares)
    if col in stats["categorical"] or "values" in stats["numeric"][col]:
        return _discrete_marginal(col, cls)
    return _continuous_marginal(col, cls)


# --- the copula ---------------------------------------------------------------------------------


def _hermite_scores(marginal: _Marginal) -> Floats:
    """Normalised Hermite coefficients of the column's mid-rank as a function of its latent.

    The population Spearman of two copula columns with latent correlation r is then
    ``sum_k r**k a_k b_k`` (Mehler's expansion), ties included.
    """
    u = (np.arange(_GRID) + 0.5) / _GRID
    z = _phi_inv(u)
    x = marginal(u)
    run = np.cumsum(np.r_[True, x[1:] != x[:-1]]) - 1
    midrank = (np.bincount(run, weights=u) / np.bincount(run))[run]
    midrank -= midrank.mean()
    coefficients = np.empty(_TERMS)
    previous, current = np.ones_like(z), z
    for k in range(1, _TERMS + 1):
        coefficients[k - 1] = float(np.mean(midrank * current))
        previous, current = current, (z * current - np.sqrt(k) * previous) / np.sqrt(k + 1)
    spread = float(np.sqrt(np.mean(midrank**2)))
    return coefficients / spread if spread > 0 else coefficients


def _bisect(function: Callable[[Floats], Floats], target: Floats, iterations: int = 50) -> Floats:
    """Solve ``function(r) = target`` elementwise for r in [-1, 1], ``function`` increasing."""
    low, high = -np.ones_like(target), np.ones_like(target)
    for _ in range(iterations):
        middle = (low + high) / 2
        above = function(middle) > target
        high, low = np.where(above, middle, high), np.where(above, low, middle)
    return (low + high) / 2


def _latent_from_spearman(marginals: Sequence[_Marginal], spearman: Floats) -> Floats:
    """Latent Pearson correlations whose copula output has the target Spearman matrix."""
    scores = np.stack([_hermite_scores(m) for m in marginals])
    products = scores[:, None, :] * scores[None, :, :]
    powers = np.arange(1, _TERMS + 1)

    def spearman_of(r: Floats) -> Floats:
        return np.asarray(np.sum(products * r[..., None] ** powers, axis=-1), dtype=np.float64)

    latent = _bisect(spearman_of, spearman)
    np.fill_diagonal(latent, 1.0)
    return latent


def _pattern_shares(cls: str) -> dict[frozenset[str], float]:
    patterns: dict[str, float] = _load_stats()["missing_patterns"][cls]
    total = sum(patterns.values())
    return {
        frozenset() if key == "none" else frozenset(key.split("+")): share / total
        for key, share in patterns.items()
    }


def _co_missing_thresholds(cls: str) -> tuple[Floats, ...]:
    """Chained missing shares of the co-missing columns, from ``missing_patterns``.

    For each column of ``_CO_MISSING`` in turn: P(missing | which earlier ones are missing),
    indexed by those statuses read as a binary number. ``prev_address_months_count`` gets its
    full-Base share.
    """
    joint = np.zeros((2,) * len(_CO_MISSING))
    for columns, share in _pattern_shares(cls).items():
        joint[tuple(int(col in columns) for col in _CO_MISSING)] += share
    first = _missing_share(_CO_MISSING[0], cls)
    joint[1] *= first / joint[1].sum()
    joint[0] *= (1 - first) / joint[0].sum()
    thresholds = []
    for k in range(len(_CO_MISSING)):
        marginal = joint.sum(axis=tuple(range(k + 1, len(_CO_MISSING))))
        thresholds.append((marginal[..., 1] / marginal.sum(axis=-1)).ravel())
    return tuple(thresholds)


def _nearest_correlation(matrix: Floats) -> Floats:
    """Clip eigenvalues to a floor and rescale to a unit diagonal: positive definite."""
    symmetric = (matrix + matrix.T) / 2
    eigenvalues, vectors = np.linalg.eigh(symmetric)
    repaired = (vectors * np.maximum(eigenvalues, _EIGEN_FLOOR)) @ vectors.T
    scale = np.sqrt(np.diag(repaired))
    return np.asarray(repaired / np.outer(scale, scale), dtype=np.float64)


# --- monthly drift ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Drift:
    """Month offsets of one latent, and the exact CDF of the shifted latent (a normal mixture).

    ``(z + offsets[month]) / scale`` is read through ``cdf`` (tabulated on ``grid``), so the
    column's uniforms stay exactly uniform: the class marginal does not move.
    """

    offsets: Floats
    scale: float
    grid: Floats
    cdf: Floats

    def uniforms(self, latent: Floats, month: NDArray[np.int64]) -> Floats:
        shifted = (latent + self.offsets[month]) / self.scale
        return np.asarray(np.interp(shifted, self.grid, self.cdf), dtype=np.float64)


def _month_edges(shares: Floats) -> Floats:
    """The latent cut points between months of these shares (-inf and inf at the ends)."""
    return _phi_inv(np.clip(np.concatenate([[0.0], np.cumsum(shares)[:-1], [1.0]]), 0, 1))


def _month_latent_means(shares: Floats) -> Floats:
    """E[z | month] when a standard normal latent is cut into months of these shares."""
    edges = _month_edges(shares)
    density = np.exp(-(edges**2) / 2) / np.sqrt(2 * np.pi)
    return np.asarray((density[:-1] - density[1:]) / shares, dtype=np.float64)


def _offsets(target: Floats, linear: Floats, weights: Floats) -> tuple[Floats, float]:
    """Solve ``(linear + d) / s = target`` up to a constant, with ``s**2 = 1 + sum(w d**2)``."""
    scale = 1.0
    offsets = np.zeros_like(target)
    for _ in range(20):
        offsets = scale * target - linear
        offsets -= weights @ offsets
        scale = float(np.sqrt(1 + weights @ offsets**2))
    return offsets, scale


@functools.cache
def _drift_fit() -> dict[int, tuple[Floats, float]]:
    """Month offsets and scale per drifting latent, fitted on the legit class to Base's medians.

    The copula already moves each column with the month's latent (a linear drift in latent
    space); the offsets (weighted mean 0) add what the monthly medians show beyond it. Only
    continuous columns without sentinels drift this way; both classes share the offsets.
    """
    stats = _load_stats()
    columns = stats["spearman"]["columns"]
    marginals, correlation = _copula("legit")
    months = _month_shares("legit")
    linear = correlation[columns.index("month")][:, None] * _month_latent_means(months)
    fitted = {}
    for col, medians in stats["by_month"]["median_overall"].items():
        j = columns.index(col)
        if marginals[j].step or stats["numeric"][col]["sentinel"]:
            continue
        target = _phi_inv(np.interp(medians, marginals[j].values, marginals[j].cum))
        fitted[j] = _offsets(target, linear[j], months)
    return fitted


def _drift_cdf(offsets: Floats, scale: float, r: float, months: Floats) -> _Drift:
    """Tabulate P((z + offsets[month]) / scale <= y), z the latent, r its month correlation."""
    t = np.linspace(-8.0, 8.0, 801)
    weight = np.exp(-(t**2) / 2) * (t[1] - t[0]) / np.sqrt(2 * np.pi)
    shift = offsets[np.clip(np.searchsorted(_month_edges(months), t) - 1, 0, months.size - 1)]
    grid = np.linspace(-7.0, 7.0, 401)
    spread = np.sqrt(1 - r**2)
    cdf = _phi((scale * grid[:, None] - shift - r * t) / spread) @ weight
    return _Drift(offsets, scale, grid, np.clip(cdf / cdf[-1], 0.0, 1.0))


# --- per-class model ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ClassModel:
    """Everything needed to draw rows of one class."""

    columns: tuple[str, ...]
    marginals: tuple[_Marginal, ...]
    cholesky: Floats
    thresholds: tuple[Floats, ...]
    cuts: tuple[tuple[Floats, Floats] | None, ...]
    categoricals: dict[str, _Marginal]
    drift: dict[int, _Drift]


def _month_shares(cls: str) -> Floats:
    month = _load_stats()["month"]
    rows = np.array(month["rows"], dtype=np.float64)
    frauds = np.array(month["frauds_approx"], dtype=np.float64)
    per_class = frauds if cls == "fraud" else rows - frauds
    return np.asarray(per_class / per_class.sum(), dtype=np.float64)


@functools.cache
def _copula(cls: str) -> tuple[tuple[_Marginal, ...], Floats]:
    """The class's marginals and latent correlation matrix (positive definite)."""
    stats = _load_stats()
    columns = stats["spearman"]["columns"]
    months = _month_shares(cls)
    marginals = [_marginal(col, cls, months) for col in columns]
    implied = _implied_shares(_co_missing_thresholds(cls))
    for col, share in zip(_CO_MISSING, implied, strict=True):
        at = columns.index(col)
        marginals[at] = dataclasses.replace(marginals[at], missing=share)
    latent = _latent_from_spearman(marginals, np.array(stats["spearman"][_SPEARMAN[cls]]))
    trio = [columns.index(col) for col in _CO_MISSING]
    for a, b in itertools.permutations(trio, 2):
        latent[a, b] = 0.0
    return tuple(marginals), _nearest_correlation(latent)


@functools.cache
def _class_model(cls: str) -> _ClassModel:
    """Marginals, copula, co-missing thresholds and drift of one class, built once per process."""
    stats = _load_stats()
    columns = tuple(stats["spearman"]["columns"])
    marginals, correlation = _copula(cls)
    cholesky = np.asarray(np.linalg.cholesky(correlation), dtype=np.float64)
    cuts = tuple(
        None if col in _CO_MISSING else m.cuts() for col, m in zip(columns, marginals, strict=True)
    )
    month_row = correlation[columns.index("month")]
    drift = {
        j: _drift_cdf(offsets, scale, float(month_row[j]), _month_shares(cls))
        for j, (offsets, scale) in _drift_fit().items()
    }
    categoricals = {col: _discrete_marginal(col, cls) for col in stats["categories"]}
    thresholds = _co_missing_thresholds(cls)
    return _ClassModel(columns, marginals, cholesky, thresholds, cuts, categoricals, drift)


def _implied_shares(thresholds: Sequence[Floats]) -> list[float]:
    """Marginal missing share of each chained column."""
    status = np.array([1.0])
    shares = []
    for conditional in thresholds:
        shares.append(float(status @ conditional))
        status = np.stack([status * (1 - conditional), status * conditional], axis=1).ravel()
    return shares


def _cell_counts(n_rows: int) -> NDArray[np.int64]:
    """Rows per (month, class), summing to ``n_rows``: largest remainders of the expectations."""
    month = _load_stats()["month"]
    rows = np.array(month["rows"], dtype=np.float64)
    rate = np.array(month["frauds_approx"], dtype=np.float64) / rows
    expected = (n_rows * rows / rows.sum())[:, None] * np.stack([1 - rate, rate], axis=1)
    counts = np.floor(expected).astype(np.int64)
    short = n_rows - int(counts.sum())
    order = np.argsort(-(expected - counts), axis=None, kind="stable")[:short]
    counts.flat[order] += 1
    return np.asarray(counts, dtype=np.int64)


def _chained_missing(model: _ClassModel, latent: Floats) -> dict[str, tuple[Floats, Floats]]:
    """Uniforms and per-row missing shares of the co-missing columns, chained in order."""
    status = np.zeros(latent.shape[1], dtype=np.int64)
    out = {}
    for col, conditional in zip(_CO_MISSING, model.thresholds, strict=True):
        uniforms = _phi(latent[model.columns.index(col)])
        out[col] = (uniforms, conditional[status])
        status = 2 * status + (uniforms < out[col][1])
    return out


def _column(model: _ClassModel, j: int, latent: Floats, month: NDArray[np.int64]) -> Floats:
    """One copula column from its latent row: thresholds for tables, the CDF otherwise."""
    if j in model.drift:
        return model.marginals[j](model.drift[j].uniforms(latent, month))
    cuts = model.cuts[j]
    if cuts is None:
        return model.marginals[j](_phi(latent))
    thresholds, values = cuts
    return values[np.searchsorted(thresholds, latent, side="right")]


def _months(latent: Floats, month_counts: NDArray[np.int64]) -> NDArray[np.int64]:
    """Exact month counts, handed out in the order of the month latent."""
    month = np.empty(latent.size, dtype=np.int64)
    order = np.argsort(latent, kind="stable")
    month[order] = np.repeat(np.arange(month_counts.size), month_counts)
    return month


def _draw_class(
    model: _ClassModel, month_counts: NDArray[np.int64], rng: np.random.Generator
) -> dict[str, Floats]:
    """Raw columns of one class: copula columns, month by latent rank, categoricals apart."""
    n = int(month_counts.sum())
    latent = model.cholesky @ rng.standard_normal((len(model.columns), n))
    month = _months(latent[model.columns.index("month")], month_counts)
    out = {
        col: model.marginals[j](*chained)
        for col, chained in _chained_missing(model, latent).items()
        for j in [model.columns.index(col)]
    }
    for j, col in enumerate(model.columns):
        if col not in out:
            out[col] = _column(model, j, latent[j], month)
    out["month"] = month.astype(np.float64)
    for col, marginal in model.categoricals.items():
        out[col] = marginal(rng.random(n))
    return out


def _to_frame(parts: Sequence[dict[str, Floats]], order: NDArray[np.int64]) -> pl.DataFrame:
    """The Kaggle ``Base.csv`` layout (column order, dtypes, category codes), rows in ``order``."""
    stats = _load_stats()
    sizes = [part["month"].size for part in parts]
    labels = np.repeat(np.arange(len(parts), dtype=np.int64), sizes)[order]
    series = [pl.Series("fraud_bool", labels, dtype=pl.Int64)]
    for col in stats["columns"][1:]:
        if col == "device_fraud_count":
            series.append(pl.Series(col, np.zeros(order.size, dtype=np.int64)))
            continue
        values = np.concatenate([part[col] for part in parts])[order]
        if col in stats["categories"]:
            codes = pl.Series(stats["categories"][col], dtype=pl.String)
            series.append(codes.gather(values.astype(np.int64)).alias(col))
        elif stats["csv_dtype"][col] == "int64":
            series.append(pl.Series(col, values.astype(np.int64), dtype=pl.Int64))
        else:
            series.append(pl.Series(col, values, dtype=pl.Float64))
    return pl.DataFrame(series)


def generate(n_rows: int = 1_000_000, *, seed: int = 42) -> pl.DataFrame:
    """Draw ``n_rows`` synthetic BAF Base rows, deterministic for a given ``seed``.

    The frame has the Kaggle ``Base.csv`` layout: 32 columns, ``fraud_bool`` first and ``month``
    last; Int64, Float64 and String columns as Base writes them, with raw sentinels (``-1``, or a
    negative ``intended_balcon_amount``) for missing values. Rows come out shuffled.
    """
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    rng = np.random.default_rng(seed)
    counts = _cell_counts(n_rows)
    parts = [_draw_class(_class_model(cls), counts[:, i], rng) for i, cls in enumerate(_CLASSES)]
    return _to_frame(parts, rng.permutation(n_rows))
