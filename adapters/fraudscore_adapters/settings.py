"""Settings: one frozen object, read once from the environment (and ``.env``) at the root.

Adapters never read ``os.environ``: the composition root builds :class:`Settings` with
:meth:`Settings.from_env` and passes plain values down. The process environment wins over
``.env``; unknown ``FRAUDSCORE_*`` names are an error, so a typo cannot silently fall back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fraudscore_adapters.dburl import url_problem

__all__ = [
    "ENV_PREFIX",
    "PREPARED_STATEMENT_MODES",
    "Settings",
    "SettingsError",
    "check_database_url",
    "read_dotenv",
]

ENV_PREFIX = "FRAUDSCORE_"
PREPARED_STATEMENT_MODES = ("auto", "on", "off")
_CHOICES: dict[str, tuple[str, ...]] = {
    "prepared_statements": PREPARED_STATEMENT_MODES,
    "fast_path": ("on", "off"),
    "split": ("random", "temporal"),
    "server": ("granian", "uvicorn"),
    "allow_unpinned_model": ("on", "off"),
    "log_format": ("text", "json"),
    "reasons": ("flagged", "requested"),
    "reasons_method": ("approx", "exact"),
    "metrics_access": ("open", "admin"),
}
_AT_LEAST_ONE = (
    "workers",
    "max_batch",
    "batch_concurrency",
    "pool_max_size",
    "memory_predictions",
    "max_queue",
    "rate_limit_burst",
    "drift_window",
)
_POSITIVE = (
    "request_timeout_s",
    "pool_timeout_s",
    "keys_refresh_s",
    "rate_limit_rps",
    "model_watch_s",
)


class SettingsError(ValueError):
    """A setting that is malformed or unknown; the message names it."""


def check_database_url(url: str, name: str) -> None:
    """Refuse a malformed database URL here, before anything connects: libpq would misread
    it and put part of the password in its errors and the pool's retry warnings. The message
    names the setting and the rule (:func:`~fraudscore_adapters.dburl.url_problem`), never
    the URL."""
    if problem := url_problem(url):
        raise SettingsError(f"{name} {problem}")


def read_dotenv(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a ``.env`` file (comments, blanks and ``export`` allowed)."""
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key, sep, value = text.removeprefix("export ").partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"{path}:{number}: expected KEY=VALUE")
        values[key.strip()] = value.strip().strip("'\"")
    return values


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable, with defaults that run on a fresh clone with no database."""

    database_url: str | None = field(default=None, repr=False)
    """``DATABASE_URL``: unset means the embedded in-memory store. Kept out of ``repr``."""
    migrations_database_url: str | None = field(default=None, repr=False)
    """``MIGRATIONS_DATABASE_URL``: a direct (non-pooled) endpoint for DDL; default DATABASE_URL."""
    data_dir: Path = Path("data")
    data_file: Path | None = None
    """An explicit dataset; default: a real BAF file in data/raw, else the synthetic set."""
    artifact_dir: Path = Path("data/model_artifacts")
    migrations_dir: Path = Path("migrations")
    synthetic_rows: int = 1_000_000
    seed: int = 42
    split: str = "random"
    """``random`` (stratified 70/15/15) or ``temporal`` (the paper's months 0-5 / 6-7)."""
    pool_min_size: int = 2
    pool_max_size: int = 8
    pool_timeout_s: float = 3.0
    """How long a request waits for a pooled connection before a 503."""
    pool_max_idle_s: float = 300.0
    """Connections above ``pool_min_size`` idle this long are closed."""
    connect_timeout_s: int = 10
    """Bound on opening one connection: room for the cold start of a database that scales to
    zero (Neon: half a second to a few seconds); requests still wait at most pool_timeout_s."""
    statement_timeout_ms: int = 3_000
    """Sent as a startup option; 0 sends none (the server's or the role's setting applies)."""
    prepared_statements: str = "auto"
    """Server-side prepared statements: ``on``, ``off``, or ``auto`` (off at a pooler host,
    one containing ``-pooler``, as Neon's pooled endpoints do)."""
    load_batch_rows: int = 50_000
    host: str = "127.0.0.1"
    port: int = 8000
    server: str = "granian"
    """``granian`` (default, Rust HTTP) or ``uvicorn``."""
    workers: int = 1
    max_batch: int = 128
    """Most requests a predict route serves in one batch (one read, one model call, one
    commit)."""
    batch_concurrency: int = 1
    """Batches in flight at once per predict route (per worker)."""
    fast_path: str = "on"
    """``on``: the predict routes are answered in front of Litestar (half the CPU per request);
    ``off``: Litestar answers them too. Same responses either way."""
    retry_after_s: int = 1
    """The ``Retry-After`` of a 503 (store or model unavailable, timeout, overload)."""
    request_timeout_s: float = 3.0
    """Every predict request is answered within this from its arrival: a 503 with Retry-After
    when the queue, the database or the model take longer (a frozen database included). Also
    each database call's bound outside a request, and how long shutdown waits (plus 1 s)."""
    max_queue: int = 512
    """Requests waiting for a batch, per predict route and worker, at most; one more gets a 503
    ``overloaded`` at once. At the measured ~5,000-7,000 req/s per route a full queue waits
    ~0.1 s."""
    memory_predictions: int = 100_000
    """Without DATABASE_URL: how many of the newest predictions the memory sink keeps."""
    keys_file: Path | None = None
    """Without DATABASE_URL: the API keys file (hashes only); default ``data/api_keys.json``.
    With DATABASE_URL the keys live in the ``api_keys`` table."""
    keys_refresh_s: float = 2.0
    """How often each worker re-reads the API keys: a new or revoked key takes effect within
    this (plus one request timeout when the store is slow)."""
    rate_limit_rps: float = 1000.0
    """Requests per second each API key may make to the predict routes, per worker process
    (a token bucket refilled at this rate)."""
    rate_limit_burst: int = 2000
    """The bucket's size: how many requests a key may make at once after a quiet spell."""
    model_sha256: str | None = field(default=None, repr=False)
    """The pinned models: SHA-256 of a model's ``manifest.json`` (which holds every artifact's
    SHA-256), or several separated by commas. Set, a model that matches none is refused before
    unpickling, at start and on every reload (unless an admin vouched for it: POST
    /admin/reload with its ``sha256``)."""
    allow_unpinned_model: str = "off"
    """``on`` lets a server with DATABASE_URL set start without FRAUDSCORE_MODEL_SHA256
    (production refuses to by default); the embedded default never requires a pin."""
    model_watch_s: float = 1.0
    """How often each worker checks what the artifact folder's ``current`` pointer names, and
    loads it when it changed: every worker serves a new current within this plus a load."""
    run_dir: Path | None = None
    """A private folder (mode 0700, owned by the server's user) the worker processes of one
    server share: the model pins an admin vouched for reach every worker through it. ``serve``
    makes one for each run when unset, and removes it at exit."""
    reasons: str = "flagged"
    """When predictions carry reasons: ``flagged`` (every flagged one, and any asked for with
    ``?explain=true``) or ``requested`` (only those asked for)."""
    reasons_method: str = "approx"
    """How reasons are computed: ``approx`` (Saabas: ~2-3% of throughput at ~6% flagged) or
    ``exact`` (TreeSHAP: ~2-3 ms a row, about half the throughput at ~6% flagged); see
    ``fraudscore_adapters.xgb.reasons``."""
    log_format: str = "text"
    """The server's logs: ``text`` (a line per event) or ``json`` (one JSON object a line:
    time, level, logger, message, the request id when known, the traceback when any)."""
    metrics_access: str = "open"
    """Who may read ``GET /metrics``: ``open`` (anyone who reaches the port, as a Prometheus
    scraper without credentials; keep the port on a private network, as the probes) or
    ``admin`` (an API key with the ``admin`` scope, e.g. Prometheus's ``authorization``
    setting of the scrape job)."""
    drift_window: int = 10_000
    """How many of its latest scores each worker compares with the model's validation scores
    (the PSI of ``fraudscore_score_psi``; NaN until that many were served). Smaller reacts
    sooner and is noisier: the PSI of n scores drawn from the validation distribution itself
    averages about 9 / n with decile bins."""

    @property
    def raw_dir(self) -> Path:
        """Where real BAF files are looked for."""
        return self.data_dir / "raw"

    @property
    def synthetic_dir(self) -> Path:
        """Where the generated stand-in is written."""
        return self.data_dir / "synthetic"

    @property
    def keys_path(self) -> Path:
        """The API keys file of the embedded default."""
        return self.keys_file or self.data_dir / "api_keys.json"

    @property
    def migrations_url(self) -> str | None:
        """The URL migrations run on."""
        return self.migrations_database_url or self.database_url

    @classmethod
    def from_env(cls, environ: Mapping[str, str], dotenv: Path | None = Path(".env")) -> Settings:
        """Settings from ``dotenv`` overlaid by ``environ``: the only place the env is read."""
        env = {**(read_dotenv(dotenv) if dotenv else {}), **environ}
        values: dict[str, object] = {}
        for name in ("DATABASE_URL", "MIGRATIONS_DATABASE_URL"):
            if env.get(name):
                check_database_url(env[name], name)
                values[name.lower()] = env[name]
        known = {f.name: f for f in dataclasses.fields(cls)}
        for key, raw in env.items():
            if not key.startswith(ENV_PREFIX):
                continue
            name = key.removeprefix(ENV_PREFIX).lower()
            if name not in known or name.endswith("database_url"):
                raise SettingsError(f"unknown setting {key}; known: {_known_names(known)}")
            values[name] = _convert(key, raw, cls.__annotations__[name])
            if name in _CHOICES and raw not in _CHOICES[name]:
                raise SettingsError(f"{key}={raw!r}: use one of {', '.join(_CHOICES[name])}")
            if name in _AT_LEAST_ONE and values[name] < 1:  # type: ignore[operator]
                raise SettingsError(f"{key}={raw!r}: must be at least 1")
            if name in _POSITIVE and values[name] <= 0:  # type: ignore[operator]
                raise SettingsError(f"{key}={raw!r}: must be more than 0")
        return cls(**values)  # type: ignore[arg-type]


def _known_names(known: Mapping[str, object]) -> str:
    return ", ".join(ENV_PREFIX + n.upper() for n in known if not n.endswith("database_url"))


def _convert(key: str, raw: str, annotation: str) -> object:
    try:
        if annotation.startswith("int"):
            return int(raw.replace("_", ""))
        if annotation.startswith("float"):
            return float(raw)
    except ValueError:
        raise SettingsError(f"{key}={raw!r} is not a number") from None
    if "Path" in annotation:
        return Path(raw) if raw else None
    return raw
