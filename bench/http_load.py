"""HTTP load benchmark: fraudscore next to the seed stack, same data, same machine, with wrk.

    uv run python bench/http_load.py [--duration 15] [--warmup 3] [--conns 16 64]
        [--workers 1 2] [--rows 1000000] [--no-peer] [--fast-path on off]
        [--batch-concurrency 1 2] [--reasons flagged/approx requested] [--floors]
        [--outage COMMAND] [--reload-every 5] [--routes sync async]
        [--url postgresql://postgres@127.0.0.1/test]

What it does (bounded in time; every server it starts, it stops):
1. installs wrk with apt-get if it is missing;
2. makes sure the dataset (data/raw, else the synthetic 1M set) and the model artifacts exist;
3. loads ``--rows`` applications into its own database ``fraudscore_bench`` (migrated, COPY);
4. for each worker count: makes an API key for the server with its command line and its
   environment (``keys create``, in the database; revoked when the server stops), starts
   ``python -m fraudscore_adapters serve`` on that database, pinned to the model
   (``FRAUDSCORE_MODEL_SHA256``) and with the rate limit on but far above the measured rates
   (``--rate-limit-rps``, default 1e6 per key per worker: what is measured is the cost of
   authentication and rate limiting, not refusals), checks one request with the key gets 200
   and one without gets 401, drives ``/predict/sync`` and ``/predict/async`` at each connection
   count with random user ids (wrk -t1, POST, every request with ``Authorization: Bearer
   <key>``), and checks that every 2xx has its prediction row (rows written minus 2xx must lie
   in [0, connections]: requests still in flight when wrk stops are answered and recorded
   after it counted);
5. the same for the seed stack (``../shared/peers/seed-stack``, copied to /tmp, its own venv and
   model; it has no authentication: its requests carry no key), fed the same applications in
   its own database ``peer``;
6. with ``--floors``, the same wrk runs against a raw ASGI app and a bare Litestar route
   (``bench/floor_apps.py``): what the server and the framework cost on their own;
7. with ``--outage COMMAND``, one more run per route at the most connections with COMMAND run
   5 s in, e.g. ``--outage "pg_ctlcluster --skip-systemctl-redirect 15 main restart -m fast"``
   (every 2xx must still have its row);
8. with ``--reload-every SECONDS``, the fraudscore runs reload the model under load: every
   SECONDS the artifact folder's ``current`` pointer moves to the other of its two newest
   versions and ``POST /admin/reload`` is sent with a key of the ``admin`` scope (the worker
   that gets it loads at once, the others follow the pointer within FRAUDSCORE_MODEL_WATCH_S);
   the server is pinned to both models. Each such run reports the reloads and their
   answers, the errors, that every 2xx has its row, and the rows written by each model
   version; the pointer is put back at the end;
9. prints one table, and the ratio of the two stacks for each row, with the CPU each request
   cost the server (all its processes) and PostgreSQL (all its processes), from /proc.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from math import nan
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import polars as pl
import psycopg
from psycopg import sql

from fraudscore import FEATURE_NAMES
from fraudscore_adapters.baf import load_features, read_table
from fraudscore_adapters.bulkload import copy_features
from fraudscore_adapters.dataset import dataset_path, log
from fraudscore_adapters.migrate import apply_migrations
from fraudscore_adapters.settings import Settings
from fraudscore_adapters.xgb import manifest_sha256, versions

ROOT = Path(__file__).resolve().parents[1]
LUA = ROOT / "bench" / "wrk_random_ids.lua"
PEER_SOURCE = ROOT.parent / "shared" / "peers" / "seed-stack"
PEER_DIR = Path("/tmp/fraudscore-peer")
PORT = 8077


@dataclass
class Run:
    stack: str
    workers: int
    route: str
    conns: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    two_xx: int
    rows: int
    server_us: float
    """Server CPU (every process of its session, user + system) per request, in µs."""
    pg_us: float
    """PostgreSQL CPU (every postgres process) per request, in µs."""
    reloads: list[tuple[int, str]] = field(default_factory=list)
    """With --reload-every: each reload's HTTP status and outcome, in order."""
    by_model: dict[str, int] = field(default_factory=dict)
    """With --reload-every: the rows the run wrote, by model version."""

    @property
    def rows_ok(self) -> bool:
        return 0 <= self.rows - self.two_xx <= self.conns


def with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    log("installing wrk (apt-get install -y wrk)")
    if subprocess.run(["apt-get", "install", "-y", "wrk"], check=False).returncode:
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True)


def ensure_database(server: str, name: str) -> str:
    with psycopg.connect(server, autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_db(server, name)


def prepare_ours(server: str, data: Path, rows: int) -> str:
    url = ensure_database(server, "fraudscore_bench")
    apply_migrations(url, ROOT / "migrations")
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(DISTINCT user_id) FROM feature_store").fetchone()
        if row and row[0] >= rows:
            return url
        frame, _ = load_features(data)
        log(f"loading {rows:,} applications into fraudscore_bench")
        copy_features(conn, frame.head(rows))
    return url


def prediction_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM predictions").fetchone()
    return int(row[0]) if row else 0


def rows_by_model(url: str, since_rows: int) -> dict[str, int]:
    """The prediction rows after the first ``since_rows`` (in id order), by model version."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT model_version, count(*) FROM (SELECT model_version FROM predictions"
            " ORDER BY created_at, id OFFSET %s) AS later GROUP BY model_version ORDER BY 1",
            (since_rows,),
        ).fetchall()
    return {str(version): int(count) for version, count in rows}


def settled_rows(url: str) -> int:
    """The predictions count once the server has answered everything still in flight."""
    last = prediction_rows(url)
    for _ in range(60):
        time.sleep(0.5)
        now = prediction_rows(url)
        if now == last:
            return now
        last = now
    return last


CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone meanwhile
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on


def cpu_seconds(session: int | None) -> float:
    """User + system CPU of the live processes of ``session``, or of every postgres process."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fields = _stat(pid)
        if fields is None:
            continue
        if session is None:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "postgres":
                    total += int(fields[11]) + int(fields[12])
        elif int(fields[3]) == session:
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICK


def wrk(path: str, conns: int, seconds: int, n_ids: int, key: str | None) -> dict[str, float]:
    """One wrk run; with ``key``, every request carries it (the Lua script reads WRK_API_KEY)."""
    env = {k: v for k, v in os.environ.items() if k != "WRK_API_KEY"}
    if key:
        env["WRK_API_KEY"] = key
    result = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "-s", str(LUA),
         f"http://127.0.0.1:{PORT}", "--", path, str(n_ids)],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    parsed: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def fraudscore_cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    """``python -m fraudscore_adapters ARGS`` with a server's environment; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "fraudscore_adapters", *args],
        cwd=cwd, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"`{' '.join(args)}` exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def create_key(env: dict[str, str], cwd: Path, name: str, scope: str = "predict") -> str:
    """A new key (``predict`` scope by default) made by the command line with the server's
    environment (so in the server's database, or its keys file)."""
    key = fraudscore_cli(env, cwd, "keys", "create", "--name", name, "--scope", scope).strip()
    if not key.startswith("fsk_"):
        raise RuntimeError(f"`keys create` printed no key: {key[:20]!r}...")
    return key


def key_id(key: str) -> str:
    """The public id in a key (``fsk_<id>_<secret>``)."""
    return key.split("_")[1]


@contextlib.contextmanager
def api_key(env: dict[str, str], cwd: Path, name: str, scope: str = "predict") -> Iterator[str]:
    """A key for one server, revoked afterwards (the benchmark database outlives the run)."""
    key = create_key(env, cwd, name, scope)
    log(f"  API key {key_id(key)} ({name!r}, scope {scope}) made with `keys create`")
    try:
        yield key
    finally:
        try:
            fraudscore_cli(env, cwd, "keys", "revoke", key_id(key))
        except RuntimeError as exc:
            log(f"  could not revoke API key {key_id(key)}: {exc}")


def check_key(port: int, key: str) -> None:
    """One request with the key must get 200 and one without 401: the load that follows is
    authenticated, and authentication is on."""
    url = f"http://127.0.0.1:{port}/predict/sync/0"
    keyed = httpx.post(url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    bare = httpx.post(url, timeout=10)
    if keyed.status_code != 200 or bare.status_code != 401:
        raise RuntimeError(
            f"with the key {keyed.status_code} (want 200), without {bare.status_code} (want 401):"
            f" {keyed.text[:300]}"
        )
    log("  a request with the key: 200; without: 401")


def server_auth_env(
    artifact_dir: Path, rate_limit_rps: float, also: tuple[str, ...] = ()
) -> dict[str, str]:
    """The settings of a fraudscore server under load: pinned to the model ``current`` names
    and to the versions ``also`` (required on PostgreSQL), rate limit on but above any
    measured rate."""
    folders = [versions.locate(artifact_dir).path]
    folders += [versions.locate_version(artifact_dir, v).path for v in also]
    return {
        "FRAUDSCORE_MODEL_SHA256": ",".join(dict.fromkeys(manifest_sha256(f) for f in folders)),
        "FRAUDSCORE_RATE_LIMIT_RPS": f"{rate_limit_rps:g}",
    }


def auth_banner(rate_limit_rps: float) -> str:
    """What the header of a benchmark says about keys and the rate limit."""
    burst = Settings.from_env({}, dotenv=ROOT / ".env").rate_limit_burst  # the servers' own
    return (
        "fraudscore requests carry an API key (Authorization: Bearer, made by `keys create`);"
        f" rate limit on: FRAUDSCORE_RATE_LIMIT_RPS={rate_limit_rps:g} per key per worker,"
        f" burst {burst:,}"
    )


def wait_healthy(process: subprocess.Popen[bytes], port: int, logfile: Path, label: str) -> None:
    """Return once the server answers /healthcheck; raise if it exits or is not up in 180 s."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{label} exited:\n{logfile.read_text()[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/healthcheck", timeout=1).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{label} not up after 180 s")


@contextlib.contextmanager
def running(command: list[str], cwd: Path, env: dict[str, str], label: str) -> Iterator[int]:
    logfile = Path(f"/tmp/bench-{label}.log")
    with logfile.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_healthy(process, PORT, logfile, label)
        time.sleep(2)  # every worker up
        yield process.pid  # the session id of every process it starts
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


class Reloads:
    """Every ``every_s`` seconds until stopped: point ``current`` at the other of two versions,
    then ``POST /admin/reload`` with an admin key; each answer kept (status, outcome)."""

    def __init__(self, root: Path, pair: tuple[str, str], admin_key: str, every_s: float):
        self.root, self.pair, self.key, self.every_s = root, pair, admin_key, every_s
        self.answers: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Reloads:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        while not self._stop.wait(self.every_s):
            now = versions.pointer(self.root, versions.CURRENT)
            target = self.pair[1] if now == self.pair[0] else self.pair[0]
            versions.use(self.root, target)
            try:
                answer = httpx.post(f"http://127.0.0.1:{PORT}/admin/reload", headers=headers,
                                    timeout=30)  # fmt: skip
            except httpx.HTTPError as exc:
                self.answers.append((0, repr(exc)))
                continue
            body = answer.json()
            outcome = body.get("outcome") or body.get("type", "?")
            self.answers.append((answer.status_code, outcome))
            took, pid = body.get("took_s", "?"), body.get("worker_pid", "?")
            log(
                f"    reload -> {target}: {answer.status_code} {outcome} in {took} s (worker {pid})"
            )


def measure(
    stack: str,
    workers: int,
    session: int,
    db_url: str | None,
    args: argparse.Namespace,
    *,
    key: str | None = None,
    routes: tuple[str, ...] = (),
    conns_list: tuple[int, ...] | None = None,
    during: str | None = None,
    reloads: Callable[[], Reloads] | None = None,
) -> list[Run]:
    """wrk on each route at each connection count; ``db_url`` None: no rows to check.

    ``key``: the API key every request carries (None: no Authorization header).
    ``during``: a shell command run 5 s into each measured wrk run (e.g. restart the database).
    ``reloads``: makes the model reloads to run during each measured wrk run.
    """
    runs = []
    for route in routes or args.routes:
        for conns in conns_list or args.conns:
            path = f"/predict/{route}/"
            wrk(path, conns, args.warmup, args.rows, key)
            before = settled_rows(db_url) if db_url else 0
            cpu = cpu_seconds(session), cpu_seconds(None)
            event = None
            if during:
                event = threading.Timer(
                    5, subprocess.run, (during,), {"shell": True, "check": True}
                )
                event.start()
            with reloads() if reloads else contextlib.nullcontext() as reloading:
                out = wrk(path, conns, args.duration, args.rows, key)
            if event:
                event.join()
            cpu = cpu_seconds(session) - cpu[0], cpu_seconds(None) - cpu[1]
            two_xx = int(out["requests"] - out["non_2xx"])
            rows = settled_rows(db_url) - before if db_url else two_xx
            errors = int(out["non_2xx"] + out["connect"] + out["read"] + out["write"])
            errors += int(out["timeout"])
            # a restarted server's counters start again: no figure rather than a wrong one
            per_request = [1e6 * c / max(out["requests"], 1) if c >= 0 else nan for c in cpu]
            run = Run(stack, workers, route, conns, out["requests"] / out["seconds"],
                      out["p50_ms"], out["p99_ms"], errors, two_xx, rows, per_request[0],
                      per_request[1])  # fmt: skip
            if reloading is not None and db_url:
                run.reloads = reloading.answers
                run.by_model = rows_by_model(db_url, before)
            log(
                f"  {stack:<18} w{workers} {route:<5} c{conns:<3} {run.rps:>8,.0f} req/s  "
                f"p50 {run.p50_ms:.1f} ms  p99 {run.p99_ms:.1f} ms  errors {errors}  "
                f"CPU/req server {run.server_us:,.0f} µs, postgres {run.pg_us:,.0f} µs  "
                f"rows {'ok' if run.rows_ok else 'MISMATCH'} ({rows:,} for {two_xx:,} 2xx)"
            )
            if reloading is not None:
                log(f"  {len(run.reloads)} reloads: {reload_summary(run)}; rows by model"
                    f" {run.by_model}")  # fmt: skip
            runs.append(run)
    return runs


def reload_summary(run: Run) -> str:
    """``6 x 200 loaded``: how the reloads of a run were answered."""
    counts: dict[tuple[int, str], int] = {}
    for answer in run.reloads:
        counts[answer] = counts.get(answer, 0) + 1
    return ", ".join(f"{n} x {status} {outcome}" for (status, outcome), n in counts.items())


def reload_pair(root: Path) -> tuple[str, str]:
    """The version ``current`` names and the newest other one: what --reload-every swaps."""
    current = versions.pointer(root, versions.CURRENT)
    others = [v for v in versions.versions(root) if v != current]
    if current is None or not others:
        raise SystemExit(
            f"--reload-every needs two model versions in {root} (`make models`): train another"
            " with `make train FORCE=1` (another FRAUDSCORE_SEED gives another model)"
        )
    return current, others[-1]


def bench_ours(db_url: str, settings: Settings, data: Path, args: argparse.Namespace) -> list[Run]:
    runs: list[Run] = []
    root = settings.artifact_dir.resolve()
    pair = reload_pair(root) if args.reload_every else None
    for fast_path, bc, reasons, workers in itertools.product(
        args.fast_path, args.batch_concurrency, args.reasons, args.workers
    ):
        stack = "fraudscore" if fast_path == "on" else "fs-litestar"
        if len(args.batch_concurrency) > 1:
            stack += f"/b{bc}"
        if len(args.reasons) > 1:
            stack += f" {reasons}"
        when, _, method = reasons.partition("/")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSCORE_")}
        env |= {
            "DATABASE_URL": db_url,
            "FRAUDSCORE_PORT": str(PORT),
            "FRAUDSCORE_WORKERS": str(workers),
            "FRAUDSCORE_ARTIFACT_DIR": str(settings.artifact_dir.resolve()),
            "FRAUDSCORE_DATA_FILE": str(data.resolve()),
            "FRAUDSCORE_FAST_PATH": fast_path,
            "FRAUDSCORE_BATCH_CONCURRENCY": str(bc),
            "FRAUDSCORE_REASONS": when,
            "FRAUDSCORE_REASONS_METHOD": method or "approx",
        }
        env |= server_auth_env(root, args.rate_limit_rps, pair or ())
        log(f"fraudscore, {workers} worker(s), fast path {fast_path}, {bc} batch(es) in flight")
        command = [sys.executable, "-m", "fraudscore_adapters", "serve"]
        with (
            api_key(env, ROOT, f"bench-http-load-w{workers}") as key,
            api_key(env, ROOT, f"bench-reload-w{workers}", "admin") as admin_key,
            running(command, ROOT, env, f"fraudscore-w{workers}") as session,
        ):
            check_key(PORT, key)
            if pair:
                log(f"  reloading every {args.reload_every:g} s between {pair[0]} and {pair[1]}")
                reloads = functools.partial(Reloads, root, pair, admin_key, args.reload_every)
                try:
                    runs += measure(f"{stack}+reload", workers, session, db_url, args, key=key,
                                    reloads=reloads)  # fmt: skip
                finally:
                    versions.use(root, pair[0])
            else:
                runs += measure(stack, workers, session, db_url, args, key=key)
            if args.outage:
                log(f"  with `{args.outage}` 5 s into each run")
                runs += measure(f"{stack}+outage", workers, session, db_url, args, key=key,
                                conns_list=(max(args.conns),), during=args.outage)  # fmt: skip
    return runs


def bench_floors(args: argparse.Namespace) -> list[Run]:
    """The server alone and the server with Litestar, one worker, no I/O (floor_apps.py)."""
    runs: list[Run] = []
    for stack, target in (("floor: raw ASGI", "raw_asgi"), ("floor: Litestar", "bare_litestar")):
        log(f"{stack}: granian, 1 worker, bench/floor_apps.py:{target}")
        command = [sys.executable, "-m", "granian", "--interface", "asgi", "--workers", "1",
                   "--port", str(PORT), "--no-ws", f"floor_apps:{target}"]  # fmt: skip
        with running(command, ROOT / "bench", dict(os.environ), target) as session:
            runs += measure(stack, 1, session, None, args, routes=("async",))
    return runs


PRIVATE_UV = ROOT / ".tools" / "bin" / "uv"
"""Where the Makefile installs uv when none is on PATH."""


def uv() -> str:
    """The uv the Makefile uses: the one on PATH, else its private copy (installed if need be)."""
    found = shutil.which("uv")
    if found:
        return found
    if not PRIVATE_UV.is_file():
        log("uv not found: installing it into .tools/ from PyPI, as the Makefile does")
        subprocess.run([sys.executable, "-m", "venv", str(ROOT / ".tools")], check=True)
        pip = ROOT / ".tools" / "bin" / "pip"
        subprocess.run([str(pip), "install", "--quiet", "uv"], check=True)
    return str(PRIVATE_UV)


def prepare_peer(server: str, data: Path, rows: int) -> str:
    """The seed stack in /tmp with its own venv and model, fed our applications."""
    if not (PEER_DIR / "pyproject.toml").is_file():
        shutil.copytree(PEER_SOURCE, PEER_DIR)
    subprocess.run([uv(), "sync", "--quiet"], cwd=PEER_DIR, check=True)
    if not (PEER_DIR / "preprocessor.pkl").is_file():
        log("training the seed stack's model (its train.py)")
        subprocess.run([uv(), "run", "python", "train.py"], cwd=PEER_DIR, check=True)
    subprocess.run([uv(), "run", "python", "load.py", "1"], cwd=PEER_DIR, check=True)
    url = with_db(server, "peer")
    raw = read_table(data).head(rows).select(*FEATURE_NAMES, "month")
    encoded = raw.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("user_id"),
        pl.struct(pl.all()).struct.json_encode().alias("features"),
    )
    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE feature_store")
        with conn.cursor().copy("COPY feature_store (user_id, features) FROM STDIN") as copy:
            for row in encoded.iter_rows():
                copy.write_row(row)
    log(f"seed stack: {rows:,} of the same applications loaded into database peer")
    return url


def bench_peer(db_url: str, args: argparse.Namespace) -> list[Run]:
    runs: list[Run] = []
    for workers in args.workers:
        log(f"seed stack, {workers} worker(s)")
        command = [".venv/bin/uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(PORT),
                   "--workers", str(workers), "--no-access-log"]  # fmt: skip
        with running(command, PEER_DIR, dict(os.environ), f"peer-w{workers}") as session:
            runs += measure("seed-stack", workers, session, db_url, args)
    return runs


def report(runs: list[Run], rate_limit_rps: float) -> None:
    peer = {(r.workers, r.route, r.conns): r for r in runs if r.stack == "seed-stack"}
    print(f"\n{auth_banner(rate_limit_rps)}; the seed stack has no authentication (no key)")
    print(f"{'stack':<18}{'w':>2}{'route':>7}{'conns':>6}{'req/s':>9}{'p50 ms':>9}"
          f"{'p99 ms':>9}{'errors':>8}{'rows':>6}{'x seed':>8}"
          f"{'server CPU/req':>16}{'PG CPU/req':>12}")  # fmt: skip
    for r in runs:
        base = peer.get((r.workers, r.route, r.conns))
        ours = r.stack != "seed-stack" and not r.stack.startswith("floor")
        ratio = f"{r.rps / base.rps:.0f}x" if base and ours else ""
        print(f"{r.stack:<18}{r.workers:>2}{r.route:>7}{r.conns:>6}{r.rps:>9,.0f}"
              f"{r.p50_ms:>9.1f}{r.p99_ms:>9.1f}{r.errors:>8}"
              f"{'ok' if r.rows_ok else 'BAD':>6}{ratio:>8}"
              f"{r.server_us:>13,.0f} µs{r.pg_us:>9,.0f} µs")  # fmt: skip
    print("targets: sync >= 1,500 req/s, async >= 3,000 req/s, p99 <= 50 ms at 64 connections")
    for r in runs:
        if r.reloads:
            print(f"{r.stack} w{r.workers} {r.route} c{r.conns}: {len(r.reloads)} reloads"
                  f" ({reload_summary(r)}); {r.errors} errors; rows"
                  f" {'ok' if r.rows_ok else 'MISMATCH'} ({r.rows:,} for {r.two_xx:,} 2xx);"
                  f" rows by model {r.by_model}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--conns", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument(
        "--floors", action="store_true", help="also the raw-ASGI and bare-Litestar floors"
    )
    parser.add_argument(
        "--outage",
        metavar="COMMAND",
        help="also a run at the most connections with COMMAND run 5 s in (e.g. restart the"
        " database: errors, p99 and rows show what an outage costs); it runs as given",
    )
    parser.add_argument(
        "--fast-path",
        nargs="+",
        choices=["on", "off"],
        default=["on"],
        help="off: Litestar answers the predict routes too (rows labelled fs-litestar)",
    )
    parser.add_argument(
        "--batch-concurrency",
        type=int,
        nargs="+",
        default=[1],
        help="batches in flight per route and worker (more than one value labels rows /bN)",
    )
    parser.add_argument(
        "--reasons",
        nargs="+",
        choices=["flagged/approx", "flagged/exact", "requested"],
        default=["flagged/approx"],
        help="FRAUDSCORE_REASONS[/FRAUDSCORE_REASONS_METHOD] of the fraudscore servers;"
        " `requested` computes none (wrk asks for none): the cost of reasons is the difference"
        " (more than one value labels rows)",
    )
    parser.add_argument(
        "--rate-limit-rps",
        type=float,
        default=1e6,
        help="FRAUDSCORE_RATE_LIMIT_RPS of the fraudscore servers: on, per key and worker, and"
        " high enough never to refuse the measured load",
    )
    parser.add_argument(
        "--reload-every",
        type=float,
        metavar="SECONDS",
        help="reload the model under load: every SECONDS, move `current` to the other of the"
        " two newest versions and POST /admin/reload (with an admin key)",
    )
    parser.add_argument("--routes", nargs="+", choices=["sync", "async"], default=["sync", "async"])
    parser.add_argument(
        "--url", default=os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1/test")
    )
    args = parser.parse_args()
    log(auth_banner(args.rate_limit_rps))
    ensure_wrk()
    settings = Settings.from_env(os.environ)
    data = dataset_path(settings)
    if not versions.has_model(settings.artifact_dir):
        subprocess.run([sys.executable, "-m", "fraudscore_adapters", "train"], check=True)
    runs = bench_ours(prepare_ours(args.url, data, args.rows), settings, data, args)
    if args.floors:
        runs += bench_floors(args)
    if not args.no_peer:
        runs += bench_peer(prepare_peer(args.url, data, args.rows), args)
    report(runs, args.rate_limit_rps)


if __name__ == "__main__":
    main()
