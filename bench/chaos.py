"""Chaos benchmark: how the service answers while PostgreSQL, its data or its load misbehave.

    uv run python bench/chaos.py [--rows 1000000] [--only freeze stop ...] [--scale 1.0]
        [--conns 64] [--routes sync async] [--overload-route sync] [--png /tmp/chaos.png]

What it does (bounded in time; everything it starts, it stops, by PID, even on Ctrl-C):
1. starts a throwaway PostgreSQL cluster (``tests/pgcluster.py``, fsync on), never the shared
   server; creates a database, migrates it, COPYs ``--rows`` applications of the dataset and
   inserts poison rows above that id range (one field damaged each: ``1e400`` income, a 3,000
   deep array, a 100 kB category, an object in a field, 29 values, a wrapped object, a string
   for a number, huge integers, an unknown ``feature_version``);
2. for each scenario makes an API key with the command line and the server's environment
   (``keys create``, in the database), starts a fresh ``python -m fraudscore_adapters serve``
   (one worker, pinned to the model with ``FRAUDSCORE_MODEL_SHA256``, the rate limit on but far
   above the load: ``--rate-limit-rps``, default 1e6 per key; log in
   ``/tmp/chaos-server-<scenario>.log``), checks a request with the key gets 200 and one
   without 401, warms it up 2 s, then drives it with ``bench/loadgen.py`` (asyncio + uvloop,
   keep-alive connections sending back to back, random ids, the routes in turn, every request
   with ``Authorization: Bearer <key>``) while it injects the fault: ``baseline`` (none), ``poison``
   (2,000 valid requests with the poison users mixed in, 32 connections), ``freeze``
   (SIGSTOP PostgreSQL 10 s), ``restart`` (``pg_ctl restart -m fast``), ``readonly``
   (``default_transaction_read_only`` on for 10 s), ``stop`` (PostgreSQL down 40 s),
   ``overload`` (4x the requests one route holds, on one route, 15 s) and ``sigterm`` (SIGTERM
   to the server under load, until it exits); ``/readyz`` and ``/healthcheck`` are polled every
   0.5 s on connections of their own during the database faults and the overload;
3. after each scenario checks that every 2xx's ``prediction_id`` has its row in
   ``predictions`` and counts the rows no 2xx reported;
4. prints (stdout, Markdown) one table row per scenario: requests, 2xx, 4xx and 5xx by status
   and problem type, p99 and max latency, client-side errors, the rows check, seconds from the
   end of the fault to the first 2xx of a request sent after it, and the longest gap without a
   2xx; then per scenario the details and each expectation met or missed; progress goes to
   stderr;
5. writes a PNG (``--png``): answers per 250 ms by class over time, one panel per scenario,
   the fault window shaded.

``--scale 0.3`` shortens every phase for a smoke run; ``--only`` runs some scenarios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.*, bench.* as a script

import psycopg
import uvloop
from psycopg import sql

from bench.http_load import (
    auth_banner,
    check_key,
    create_key,
    key_id,
    server_auth_env,
    settled_rows,
    wait_healthy,
)
from bench.loadgen import Answer, Poll, drive, poll, random_requests
from fraudscore import FEATURE_NAMES
from fraudscore_adapters.baf import load_features
from fraudscore_adapters.bulkload import copy_features
from fraudscore_adapters.dataset import dataset_path, log
from fraudscore_adapters.migrate import apply_migrations
from fraudscore_adapters.settings import Settings
from tests.pgcluster import ThrowawayCluster

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("baseline", "poison", "freeze", "restart", "readonly", "stop", "overload", "sigterm")
DATABASE = "chaos"
LATENCY_SLACK_S = 0.5
"""An answer due "within the request timeout" may take this much longer (scheduling)."""
READYZ_DUE_S = 2.5
"""``/readyz`` is due within ~2 s (its probe timeout); this is the bound checked."""
FAULT_GRACE_S = 0.5
"""Probes sent this soon after a fault began are not judged (a reload is applied by each
backend at its next command)."""
RECOVERY_DUE_S = 2.0
"""The first 2xx after a fault ends is due within 1-2 s; this is the bound checked."""
SMALL_BODY = 2048
BIN_S = 0.25


# -- the database ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Poison:
    """A stored row with one thing wrong, and the field its 422 must name."""

    name: str
    user_id: int
    fields: tuple[str, ...]
    """Any of these named in ``problems`` counts as naming the field."""
    stored_bytes: int


_MARK = "\u2603poison\u2603"


def _damaged(valid: list[Any], name: str, raw: str) -> str:
    """The valid array as JSON text with the value of ``name`` replaced by the JSON ``raw``."""
    values = list(valid)
    values[FEATURE_NAMES.index(name)] = _MARK
    return json.dumps(values).replace(json.dumps(_MARK), raw, 1)


def poison_documents(valid: list[Any]) -> list[tuple[str, tuple[str, ...], str, str]]:
    """(name, fields the 422 must name, features JSON, feature_version) of each poison row."""
    v1 = "baf-v1"
    return [
        ("income 1e400", ("income",), _damaged(valid, "income", "1e400"), v1),
        (
            "3,000-deep array",
            ("name_email_similarity",),
            _damaged(valid, "name_email_similarity", "[" * 3000 + "]" * 3000),
            v1,
        ),
        (
            "100 kB category",
            ("payment_type",),
            _damaged(valid, "payment_type", json.dumps("A" * 100_000)),
            v1,
        ),
        (
            "object in a field",
            ("employment_status",),
            _damaged(valid, "employment_status", '{"code": "CA"}'),
            v1,
        ),
        ("29 values", ("features",), json.dumps(valid[:-1]), v1),
        ("wrapped object", ("features", "income"), json.dumps({"features": valid}), v1),
        ("string for a number", ("customer_age",), _damaged(valid, "customer_age", '"fifty"'), v1),
        ("integer 10^30", ("zip_count_4w",), _damaged(valid, "zip_count_4w", "1" + "0" * 30), v1),
        (
            "integer of 5,000 digits",
            ("zip_count_4w",),
            _damaged(valid, "zip_count_4w", "9" * 5000),
            v1,
        ),
        ("unknown feature_version", ("feature_version",), json.dumps(valid), "baf-v999"),
    ]


def insert_poison(url: str, first_id: int) -> list[Poison]:
    """Insert the poison rows from ``first_id`` on (plain INSERTs, parameters only)."""
    inserted = []
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT features::text FROM feature_store WHERE user_id = %s", (0,)
        ).fetchone()
        assert row is not None, "user 0 is not loaded"
        for offset, (name, fields, text, version) in enumerate(
            poison_documents(json.loads(row[0]))
        ):
            user_id = first_id + offset
            try:
                conn.execute(
                    "INSERT INTO feature_store (user_id, features, feature_version)"
                    " VALUES (%s, %s::jsonb, %s)",
                    (user_id, text, version),
                )
            except psycopg.Error as exc:
                log(f"  PostgreSQL refused poison {name!r}: {str(exc).splitlines()[0]}")
                continue
            inserted.append(Poison(name, user_id, fields, len(text)))
    return inserted


def prepare_database(cluster: ThrowawayCluster, data: Path, rows: int) -> tuple[str, list[Poison]]:
    """A migrated database on ``cluster`` with ``rows`` applications and the poison rows."""
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    url = cluster.url(DATABASE)
    apply_migrations(url, ROOT / "migrations")
    started = time.monotonic()
    frame, _ = load_features(data)
    took = time.monotonic() - started
    log(f"read {frame.height:,} applications in {took:.1f} s; loading {rows:,}")

    def progress(done: int, total: int, seconds: float) -> None:
        if done == total or done % 250_000 == 0:
            log(f"  {done:,}/{total:,} rows in {seconds:.1f} s")

    with psycopg.connect(url) as conn:
        copy_features(conn, frame.head(rows), progress=progress)
    log(f"loaded in {time.monotonic() - started:.1f} s (read, COPY, ANALYZE)")
    poison = insert_poison(url, rows + 1000)
    log(f"{len(poison)} poison rows from user {rows + 1000}: " + ", ".join(p.name for p in poison))
    return url, poison


@dataclass
class RowsCheck:
    two_xx: int
    with_row: int
    unreported: int
    """Rows written during the scenario that no 2xx reported."""
    duplicates: int
    no_id: int
    """2xx answers without a readable ``prediction_id``."""
    unreported_as: Counter[str] = field(default_factory=Counter)
    """What the requests behind the unreported rows were answered instead."""

    @property
    def ok(self) -> bool:
        return self.with_row == self.two_xx and not self.duplicates and not self.no_id

    def cell(self) -> str:
        head = "ok" if self.ok else f"MISSING {self.two_xx - self.with_row} of {self.two_xx:,}"
        extra = [f"{self.unreported:+,} unreported"]
        if self.duplicates:
            extra.append(f"{self.duplicates} duplicate ids")
        if self.no_id:
            extra.append(f"{self.no_id} 2xx without id")
        return f"{head} ({', '.join(extra)})"


def check_rows(url: str, answers: Sequence[Answer], before: int, since: datetime) -> RowsCheck:
    """Every 2xx's prediction row, after the writes settle; the rows written since ``since``
    that no 2xx reported, matched to what their user and route were answered."""
    after = settled_rows(url)
    ok = [a for a in answers if 200 <= a.status < 300]
    ids = []
    for answer in ok:
        with contextlib.suppress(ValueError):
            ids.append(uuid.UUID(answer.prediction_id))
    unique = set(ids)
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM predictions WHERE id = ANY(%s::uuid[])", (list(unique),)
        ).fetchone()
    found = int(row[0]) if row else 0
    check = RowsCheck(
        len(ok),
        found + len(ids) - len(unique),
        after - before - found,
        len(ids) - len(unique),
        len(ok) - len(ids),
    )
    if check.unreported:
        check.unreported_as = unreported_rows(url, since, answers)
    return check


def unreported_rows(url: str, since: datetime, answers: Sequence[Answer]) -> Counter[str]:
    """For each row written since ``since`` that no 2xx reported: the first other answer of
    the same user and route (class and detail), counted."""
    reported = {a.prediction_id for a in answers if 200 <= a.status < 300}
    others: dict[tuple[int, str], Answer] = {}
    for a in answers:
        if not 200 <= a.status < 300:
            others.setdefault((a.user_id, a.route), a)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id::text, user_id, route FROM predictions WHERE created_at >= %s", (since,)
        ).fetchall()
    counts: Counter[str] = Counter()
    for prediction_id, user_id, route in rows:
        if prediction_id not in reported:
            other = others.get((user_id, route))
            counts[_explained(other) if other else "no other answer for this user and route"] += 1
    return counts


def _explained(answer: Answer) -> str:
    try:
        detail = str(json.loads(answer.body).get("detail", ""))
    except (ValueError, AttributeError):
        detail = ""
    return f"{klass(answer)}: {detail[:120]}" if detail else klass(answer)


# -- the server -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(
    db_url: str, port: int, settings: Settings, data: Path, rate_limit_rps: float
) -> dict[str, str]:
    """The environment of a served worker (and of the command line that makes its key): the
    default settings but these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSCORE_")}
    env.pop("MIGRATIONS_DATABASE_URL", None)
    return (
        env
        | {
            "DATABASE_URL": db_url,
            "FRAUDSCORE_PORT": str(port),
            "FRAUDSCORE_WORKERS": "1",
            "FRAUDSCORE_ARTIFACT_DIR": str(settings.artifact_dir.resolve()),
            "FRAUDSCORE_DATA_FILE": str(data.resolve()),
        }
        | server_auth_env(settings.artifact_dir.resolve(), rate_limit_rps)
    )


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    key: str = field(repr=False)
    """The API key every request to it carries."""
    stop_s: float = math.nan
    """How long it took to stop after this script's SIGTERM (nan: it had exited before)."""

    @property
    def pid(self) -> int:
        return self.process.pid


def _stop(server: Server) -> None:
    """SIGTERM its session, SIGKILL after 20 s; then whatever of the session is left."""
    if server.process.poll() is None:
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            log(f"  server {server.pid} still up 20 s after SIGTERM: SIGKILL")
            os.killpg(server.pid, signal.SIGKILL)
            server.process.wait(timeout=10)
        server.stop_s = time.monotonic() - started
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)  # stray workers of an exited server


@contextlib.contextmanager
def serving(env: dict[str, str], port: int, label: str) -> Iterator[Server]:
    """``python -m fraudscore_adapters serve`` in its own session until the block ends, with
    a key made for it first (by the command line, with its environment)."""
    key = create_key(env, ROOT, f"chaos-{label}")
    log(f"  API key {key_id(key)} made with `keys create`")
    log_path = Path(f"/tmp/chaos-server-{label}.log")
    command = [sys.executable, "-m", "fraudscore_adapters", "serve"]
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(process, port, log_path, key)
    try:
        wait_healthy(process, port, log_path, "server")
        yield server
    finally:
        _stop(server)


# -- faults ---------------------------------------------------------------------------------


@dataclass
class Fault:
    """``begin``, ``hold_s``, then ``end`` (blocking calls, run in a thread)."""

    label: str
    begin: Callable[[], object]
    hold_s: float = 0.0
    end: Callable[[], object] | None = None


def _read_only(cluster: ThrowawayCluster, on: bool) -> None:
    # a session of its own that is not read-only, whatever the server's default is now
    options = "-c default_transaction_read_only=off"
    with psycopg.connect(cluster.url(), autocommit=True, options=options) as conn:
        if on:
            conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        else:
            conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
        conn.execute("SELECT pg_reload_conf()")


def _frozen(cluster: ThrowawayCluster) -> None:
    log(f"  SIGSTOP to {len(cluster.processes())} PostgreSQL processes")
    cluster.freeze()


# -- a run ----------------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    label: str
    routes: tuple[str, ...]
    conns: int
    t0: float
    t_end: float = 0.0
    answers: list[Answer] = field(default_factory=list)
    polls: list[Poll] = field(default_factory=list)
    window: tuple[float, float] | None = None
    """When the fault began and ended (monotonic), for the shading."""
    recover_from: float | None = None
    """When the fault ended, for the time to recover (None: nothing to recover from)."""
    notes: dict[str, Any] = field(default_factory=dict)
    rows: RowsCheck | None = None
    client_cpu: float = math.nan
    server: Server | None = None


@dataclass
class Context:
    cluster: ThrowawayCluster
    url: str
    rows: int
    poison: list[Poison]
    env: Callable[[int], dict[str, str]]
    settings: Settings
    args: argparse.Namespace

    def seconds(self, base: float) -> float:
        return base * float(self.args.scale)


def klass(answer: Answer) -> str:
    """The class an answer is counted in: 2xx, ``503 store-unavailable``, ``client reset``."""
    if answer.status == 0:
        return f"client {answer.kind}"
    if 200 <= answer.status < 300:
        return "2xx"
    return f"{answer.status} {answer.kind}"


async def _progress(run: Run, stop: asyncio.Event, every_s: float = 3.0) -> None:
    seen = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        new = run.answers[seen:]
        seen += len(new)
        counts = Counter(klass(a) for a in new).most_common()
        shown = ", ".join(f"{k} {v:,}" for k, v in counts) or "no answers"
        log(f"  [{run.name}] t={time.monotonic() - run.t0:5.1f} s  {shown}")


async def _apply(fault: Fault, run: Run) -> None:
    start = time.monotonic()
    log(f"  fault at t={start - run.t0:.1f} s: {fault.label}")
    ended = False
    try:
        await asyncio.to_thread(fault.begin)
        if fault.end is not None:
            took = time.monotonic() - start
            log(f"  fault in place after {took:.2f} s; holding {fault.hold_s:g} s")
            await asyncio.sleep(fault.hold_s)
            await asyncio.to_thread(fault.end)
        ended = True
    finally:
        if not ended and fault.end is not None:
            fault.end()  # never leave the fault behind
    end = time.monotonic()
    log(f"  fault over at t={end - run.t0:.1f} s ({end - start:.2f} s after it began)")
    run.window, run.recover_from = (start, end), end


def _streams(ctx: Context, conns: int, routes: Sequence[str]) -> list[Iterator[tuple[str, int]]]:
    seed = ctx.args.seed
    return [random_requests(seed * 100_003 + i, ctx.rows, routes, i) for i in range(conns)]


async def _loaded(
    run: Run,
    server: Server,
    streams: Sequence[Iterator[tuple[str, int]]],
    middle: Callable[[], Awaitable[None]],
    *,
    polls: bool = False,
) -> Run:
    """Drive ``streams`` while ``middle`` runs (it sets ``stop`` or returns), then wait for the
    requests in flight."""
    stop = asyncio.Event()
    port = server.port
    tasks = [asyncio.create_task(drive(port, streams, stop, run.answers, server.key))]
    tasks.append(asyncio.create_task(_progress(run, stop)))
    if polls:
        tasks += [
            asyncio.create_task(poll(port, path, 0.5, stop, run.polls))
            for path in ("/readyz", "/healthcheck")
        ]
    try:
        await middle()
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        run.t_end = time.monotonic()
    return run


async def timed(
    ctx: Context,
    server: Server,
    run: Run,
    before_s: float,
    *,
    fault: Fault | None = None,
    after_s: float = 0.0,
    polls: bool = False,
) -> Run:
    """``before_s`` of load, the fault, ``after_s`` more."""

    async def middle() -> None:
        await asyncio.sleep(ctx.seconds(before_s))
        if fault is not None:
            await _apply(fault, run)
        await asyncio.sleep(ctx.seconds(after_s))

    streams = _streams(ctx, run.conns, run.routes)
    return await _loaded(run, server, streams, middle, polls=polls)


async def warm_up(ctx: Context, server: Server) -> None:
    run = Run("warm-up", "", tuple(ctx.args.routes), ctx.args.conns, time.monotonic())
    await _loaded(run, server, _streams(ctx, run.conns, run.routes), lambda: asyncio.sleep(2.0))
    bad = Counter(klass(a) for a in run.answers if klass(a) != "2xx")
    log(f"  warm-up: {len(run.answers):,} requests" + (f", not 2xx: {dict(bad)}" if bad else ""))


# -- the scenarios --------------------------------------------------------------------------


def _run(ctx: Context, name: str, label: str, conns: int | None = None) -> Run:
    routes = tuple(ctx.args.routes)
    return Run(name, label, routes, conns or ctx.args.conns, time.monotonic())


async def baseline(ctx: Context, server: Server) -> Run:
    return await timed(ctx, server, _run(ctx, "baseline", "no fault"), 10)


async def freeze(ctx: Context, server: Server) -> Run:
    c = ctx.cluster
    fault = Fault("PostgreSQL frozen (SIGSTOP)", lambda: _frozen(c), ctx.seconds(10), c.thaw)
    run = _run(ctx, "freeze", "PostgreSQL frozen 10 s (SIGSTOP, then SIGCONT)")
    return await timed(ctx, server, run, 5, fault=fault, after_s=10, polls=True)


async def restart(ctx: Context, server: Server) -> Run:
    fault = Fault("pg_ctl restart -m fast", lambda: ctx.cluster.restart("fast"))
    run = _run(ctx, "restart", "PostgreSQL restarted (pg_ctl restart -m fast)")
    return await timed(ctx, server, run, 5, fault=fault, after_s=10, polls=True)


async def stop_start(ctx: Context, server: Server) -> Run:
    c = ctx.cluster
    hold = ctx.seconds(40)
    fault = Fault(f"pg_ctl stop -m fast, {hold:g} s down, pg_ctl start", c.stop, hold, c.start)
    run = _run(ctx, "stop", f"PostgreSQL stopped {hold:g} s, then started")
    return await timed(ctx, server, run, 5, fault=fault, after_s=10, polls=True)


async def read_only(ctx: Context, server: Server) -> Run:
    c = ctx.cluster
    fault = Fault(
        "ALTER SYSTEM SET default_transaction_read_only = on; pg_reload_conf()",
        lambda: _read_only(c, True),
        ctx.seconds(10),
        lambda: _read_only(c, False),
    )
    run = _run(ctx, "readonly", "default_transaction_read_only on 10 s (ALTER SYSTEM, reload)")
    return await timed(ctx, server, run, 5, fault=fault, after_s=10, polls=True)


async def overload(ctx: Context, server: Server) -> Run:
    route = ctx.args.overload_route
    conns = ctx.args.overload_conns or 4 * capacity(ctx.settings)
    run = Run(
        "overload",
        f"{conns:,} connections on /predict/{route} (4x capacity {capacity(ctx.settings)})",
        (route,),
        conns,
        time.monotonic(),
    )
    return await timed(ctx, server, run, 15, polls=True)


def capacity(settings: Settings) -> int:
    """The requests one route holds at once (per worker): its queue and its batches."""
    return settings.max_queue + settings.max_batch * settings.batch_concurrency


def poison_plan(ctx: Context) -> list[tuple[str, int]]:
    """The valid requests and each poison user several times, shuffled, routes in turn."""
    rng = random.Random(ctx.args.seed)
    ids = [rng.randrange(ctx.rows) for _ in range(ctx.args.poison_valid)]
    ids += [p.user_id for p in ctx.poison for _ in range(ctx.args.poison_repeats)]
    rng.shuffle(ids)
    routes = ctx.args.routes
    return [(routes[i % len(routes)], user_id) for i, user_id in enumerate(ids)]


async def poison(ctx: Context, server: Server) -> Run:
    plan = poison_plan(ctx)
    run = _run(
        ctx,
        "poison",
        f"{ctx.args.poison_valid:,} valid requests and "
        f"{len(ctx.poison)} poison users x{ctx.args.poison_repeats}, shuffled",
        ctx.args.poison_conns,
    )
    run.notes["poison"] = {p.user_id: (p.name, p.fields) for p in ctx.poison}
    shared = iter(plan)  # every connection takes the next request of one plan
    streams = [shared] * run.conns

    async def middle() -> None:
        deadline = time.monotonic() + 300
        while len(run.answers) < len(plan) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    return await _loaded(run, server, streams, middle)


async def sigterm(ctx: Context, server: Server) -> Run:
    run = _run(ctx, "sigterm", "SIGTERM to the server's main process under load")

    async def middle() -> None:
        await asyncio.sleep(ctx.seconds(5))
        signalled = time.monotonic()
        log(f"  SIGTERM to {server.pid} at t={signalled - run.t0:.1f} s")
        os.kill(server.pid, signal.SIGTERM)
        try:
            code = await asyncio.to_thread(server.process.wait, 30)
        except subprocess.TimeoutExpired:
            code = None
        exited = time.monotonic()
        log(f"  server exit code {code} at t={exited - run.t0:.1f} s")
        run.window = (signalled, exited)
        run.notes["exit"] = (code, exited - signalled, _session_left(server.pid))

    streams = _streams(ctx, run.conns, run.routes)
    return await _loaded(run, server, streams, middle)


def _session_left(session: int) -> int:
    """Processes still in ``session`` (workers that outlived the main process)."""
    left = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            left += int(stat[stat.rindex(")") + 2 :].split()[3]) == session
    return left


RUNNERS: dict[str, Callable[[Context, Server], Coroutine[Any, Any, Run]]] = {
    "baseline": baseline,
    "poison": poison,
    "freeze": freeze,
    "restart": restart,
    "readonly": read_only,
    "stop": stop_start,
    "overload": overload,
    "sigterm": sigterm,
}


def listen_drops() -> int:
    """The kernel's count of connections dropped at a full listen queue (TcpExt
    ListenOverflows, in this network namespace)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in itertools.pairwise(lines):
        if names.startswith("TcpExt:") and values.startswith("TcpExt:"):
            table = dict(zip(names.split(), values.split(), strict=True))
            return int(table.get("ListenOverflows", 0))
    return 0


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_scenario(ctx: Context, name: str) -> Run:
    """A fresh server, a warm-up, the scenario, the server stopped, the rows checked."""
    port = free_port()
    log(f"== {name}")
    with serving(ctx.env(port), port, name) as server:
        check_key(port, server.key)
        uvloop.run(warm_up(ctx, server))
        before, since = settled_rows(ctx.url), datetime.now(UTC)
        cpu, wall, drops = cpu_s(), time.monotonic(), listen_drops()
        run = uvloop.run(RUNNERS[name](ctx, server))
        run.client_cpu = (cpu_s() - cpu) / (time.monotonic() - wall)
        run.notes["listen overflows"] = listen_drops() - drops
    run.server = server
    run.rows = check_rows(ctx.url, run.answers, before, since)
    log(
        f"  {len(run.answers):,} requests; rows {run.rows.cell()}; server stopped in "
        f"{server.stop_s:.2f} s; log {server.log_path}"
    )
    return run


# -- figures --------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (nan for none)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:,.0f}"


def recovery_s(run: Run) -> float | None:
    """From the end of the fault to the first 2xx of a request sent after it (inf: none)."""
    if run.recover_from is None:
        return None
    after = [a.done for a in run.answers if a.status == 200 and a.sent >= run.recover_from]
    return min(after) - run.recover_from if after else math.inf


def longest_gap_s(run: Run) -> float:
    """The longest time without a 2xx answer, from the first request to the last answer."""
    end = run.window[0] if run.name == "sigterm" and run.window else run.t_end
    times = sorted(a.done for a in run.answers if 200 <= a.status < 300 and a.done <= end)
    edges = [run.t0, *times, end]
    return max(b - a for a, b in itertools.pairwise(edges))


def _groups(answers: Sequence[Answer], low: int, high: int) -> Counter[str]:
    return Counter(f"{a.status} {a.kind}" for a in answers if low <= a.status < high)


def _cell(counts: Counter[str]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())) or "0"


def five_xx_cell(answers: Sequence[Answer]) -> str:
    counts = _groups(answers, 500, 600)
    text = _cell(counts)
    if text != "0" and not any(k.startswith("500 ") for k in counts):
        text += "; 500: 0"
    bare = sum(1 for a in answers if a.status == 503 and not a.retry_after)
    return text + (f" ({bare:,} 503 without Retry-After)" if bare else "")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return "never" if math.isinf(value) else f"{value:.2f}"


def table_row(run: Run) -> str:
    answered = [a.latency for a in run.answers if a.status]
    client = Counter(a.kind for a in run.answers if a.status == 0)
    wall = max(run.t_end - run.t0, 1e-9)
    two_xx = sum(1 for a in run.answers if 200 <= a.status < 300)
    gap = "-" if run.name == "sigterm" else f"{longest_gap_s(run):.2f}"
    cells = [
        run.name,
        "+".join(run.routes),
        f"{run.conns:,}",
        f"{len(run.answers):,}",
        f"{two_xx:,} ({two_xx / wall:,.0f}/s)",
        _cell(_groups(run.answers, 400, 500)),
        five_xx_cell(run.answers),
        ms(percentile(answered, 99)),
        ms(max(answered, default=math.nan)),
        _cell(client),
        run.rows.cell() if run.rows else "-",
        _seconds(recovery_s(run)),
        gap,
    ]
    return "| " + " | ".join(cells) + " |"


TABLE_HEAD = (
    "| scenario | routes | conns | requests | 2xx | 4xx | 5xx | p99 ms | max ms | client errors"
    " | rows | recover s | longest gap s |\n|" + " --- |" * 13
)


# -- expectations ---------------------------------------------------------------------------


Check = tuple[bool, str]


def _sent_in(run: Run, start: float, end: float) -> list[Answer]:
    return [a for a in run.answers if start <= a.sent <= end]


def _all_503_retry(answers: Sequence[Answer], what: str) -> Check:
    bad = Counter(
        klass(a) for a in answers if a.status != 200 and not (a.status == 503 and a.retry_after)
    )
    return not bad, f"every non-2xx {what} is a 503 with Retry-After" + (
        f"; others: {dict(bad)}" if bad else ""
    )


def _within(answers: Sequence[Answer], bound: float, what: str) -> Check:
    slow = [a for a in answers if a.status == 0 or a.latency > bound]
    worst = max((a.latency for a in answers), default=0.0)
    return not slow, (
        f"every request {what} answered within {bound:.1f} s: max {worst:.2f} s"
        + (f"; {len(slow):,} not (incl. client errors)" if slow else "")
    )


def _recovered(run: Run) -> Check:
    took = recovery_s(run)
    return (
        took is not None and took <= RECOVERY_DUE_S,
        f"first 2xx {_seconds(took)} s after the fault ended (due within {RECOVERY_DUE_S:g} s)",
    )


def _rows_ok(run: Run) -> Check:
    return bool(
        run.rows and run.rows.ok
    ), f"every 2xx has its row: {run.rows.cell() if run.rows else '-'}"


def _no_client_errors(run: Run) -> Check:
    client = Counter(a.kind for a in run.answers if a.status == 0)
    return not client, f"no client-side errors ({_cell(client)})"


def _polls(run: Run, path: str, start: float = -math.inf, end: float = math.inf) -> list[Poll]:
    return [p for p in run.polls if p.path == path and start <= p.sent <= end]


def _health_checks(run: Run) -> list[Check]:
    health = _polls(run, "/healthcheck")
    worst = max((p.latency for p in health), default=math.nan)
    statuses = Counter(p.status for p in health)
    return [
        (set(statuses) == {200}, f"/healthcheck stays 200: {dict(statuses)}, max {ms(worst)} ms")
    ]


def _readyz_during(run: Run, due_s: float, word: str | None = None) -> Check:
    assert run.window is not None
    polls = _polls(run, "/readyz", run.window[0] + FAULT_GRACE_S, run.window[1] - due_s)
    good = [
        p
        for p in polls
        if p.status == 503
        and p.latency <= due_s
        and (word is None or word in p.body.decode(errors="replace"))
    ]
    worst = max((p.latency for p in polls), default=math.nan)
    statuses = dict(Counter(p.status for p in polls))
    named = f" naming {word!r}" if word else ""
    return (
        bool(polls) and len(good) == len(polls),
        f"/readyz sent during the fault (from {FAULT_GRACE_S:g} s in to {due_s:g} s before its "
        f"end): 503{named} within {due_s:g} s: {len(good)} of "
        f"{len(polls)} (statuses {statuses}, max {ms(worst)} ms)",
    )


def expectations(run: Run, timeout_s: float) -> list[Check]:
    due = timeout_s + LATENCY_SLACK_S
    checks = EXPECTATIONS[run.name](run, due)
    return [*checks, _rows_ok(run)]


def _expect_baseline(run: Run, due: float) -> list[Check]:
    bad = Counter(klass(a) for a in run.answers if a.status != 200)
    return [(not bad, f"every request 2xx ({dict(bad) or 'yes'})")]


def _expect_freeze(run: Run, due: float) -> list[Check]:
    return [
        _within(run.answers, due, "of the run"),
        _all_503_retry(run.answers, "of the run"),
        _readyz_during(run, READYZ_DUE_S),
        *_health_checks(run),
        _recovered(run),
    ]


def _expect_restart(run: Run, due: float) -> list[Check]:
    return [
        _recovered(run),
        _all_503_retry(run.answers, "of the run"),
        _no_client_errors(run),
        _within(run.answers, due, "of the run"),
    ]


def _expect_stop(run: Run, due: float) -> list[Check]:
    assert run.window is not None
    outage = _sent_in(run, *run.window)
    return [
        _within(outage, due, "sent during the outage"),
        _all_503_retry(outage, "sent during the outage"),
        _all_503_retry(run.answers, "of the run"),
        _no_client_errors(run),
        _recovered(run),
    ]


def _expect_readonly(run: Run, due: float) -> list[Check]:
    bad = Counter(
        klass(a)
        for a in run.answers
        if a.status not in (200, 503)
        or (a.status == 503 and (a.kind != "store-unavailable" or not a.retry_after))
    )
    return [
        (
            not bad,
            f"every non-2xx is a 503 store-unavailable with Retry-After ({dict(bad) or 'yes'})",
        ),
        _readyz_during(run, READYZ_DUE_S, "read-only"),
        *_health_checks(run),
        _recovered(run),
    ]


def _expect_overload(run: Run, due: float) -> list[Check]:
    ok = [a.latency for a in run.answers if a.status == 200]
    over = [a for a in run.answers if a.status == 503 and a.kind == "overloaded"]
    third = (run.t_end - run.t0) / 3
    early = [a.latency for a in run.answers if a.status == 200 and a.sent < run.t0 + third]
    late = [a.latency for a in run.answers if a.status == 200 and a.sent > run.t_end - third]
    return [
        (
            bool(over) and all(a.retry_after for a in over),
            f"the excess gets 503 overloaded with Retry-After: {len(over):,}",
        ),
        (percentile(ok, 99) <= due, f"2xx p99 {ms(percentile(ok, 99))} ms within {due:g} s"),
        (
            percentile(late, 99) <= 1.5 * percentile(early, 99) + 0.05,
            f"2xx latency not growing: p99 first third {ms(percentile(early, 99))} ms, last third "
            f"{ms(percentile(late, 99))} ms",
        ),
        _within(run.answers, due, "of the run"),
        _all_503_retry(run.answers, "of the run"),
        _no_client_errors(run),
    ]


def _expect_sigterm(run: Run, due: float) -> list[Check]:
    code, took, left = run.notes.get("exit", (None, math.nan, 0))
    five = Counter(klass(a) for a in run.answers if a.status >= 500)
    return [
        (not five, f"no 5xx ({dict(five) or 'none'})"),
        (
            code is not None and not left,
            f"the server exited (code {code}) {took:.2f} s after SIGTERM, {left} processes left",
        ),
    ]


def _expect_poison(run: Run, due: float) -> list[Check]:
    poison_ids = set(run.notes["poison"])
    valid_bad = Counter(
        klass(a) for a in run.answers if a.user_id not in poison_ids and a.status != 200
    )
    checks = [(not valid_bad, f"0 of the valid requests fail ({dict(valid_bad) or 'none'})")]
    for user_id, (name, fields) in run.notes["poison"].items():
        mine = [a for a in run.answers if a.user_id == user_id]
        checks.append(_poison_check(name, fields, mine))
    return checks


def _poison_check(name: str, fields: tuple[str, ...], answers: Sequence[Answer]) -> Check:
    statuses = dict(Counter(klass(a) for a in answers))
    named = all(_names_field(a.body, fields) for a in answers)
    good = all(a.status == 422 and a.kind == "invalid-stored-features" for a in answers)
    size = max((a.size for a in answers), default=0)
    said = _problems_text(answers[0].body) if answers else ""
    return (
        bool(answers) and good and named and size < SMALL_BODY,
        f"poison {name!r}: {statuses}, names {'/'.join(fields)}: {named}, body <= {size:,} B;"
        f" problems: {said}",
    )


def _problems_text(body: bytes) -> str:
    try:
        problems = json.loads(body).get("problems") or []
    except (ValueError, AttributeError):
        return body[:160].decode(errors="replace")
    text = "; ".join(f"{p.get('field')}: {p.get('problem')}" for p in problems[:3])
    more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
    return (text[:240] + ("..." if len(text) > 240 else "")) + more


def _names_field(body: bytes, fields: tuple[str, ...]) -> bool:
    try:
        problems = json.loads(body).get("problems") or []
    except (ValueError, AttributeError):
        return False
    return any(p.get("field") in fields for p in problems if isinstance(p, dict))


EXPECTATIONS: dict[str, Callable[[Run, float], list[Check]]] = {
    "baseline": _expect_baseline,
    "poison": _expect_poison,
    "freeze": _expect_freeze,
    "restart": _expect_restart,
    "readonly": _expect_readonly,
    "stop": _expect_stop,
    "overload": _expect_overload,
    "sigterm": _expect_sigterm,
}


# -- details --------------------------------------------------------------------------------


def latency_lines(run: Run) -> list[str]:
    by: dict[str, list[float]] = {}
    for a in run.answers:
        by.setdefault(klass(a), []).append(a.latency)
    return [
        f"  - {k}: {len(v):,}, p50 {ms(percentile(v, 50))} ms, p99 {ms(percentile(v, 99))} ms,"
        f" max {ms(max(v))} ms"
        for k, v in sorted(by.items())
    ]


def poll_lines(run: Run) -> list[str]:
    lines = []
    for path in ("/readyz", "/healthcheck"):
        polls = _polls(run, path)
        if not polls:
            continue
        worst = max(polls, key=lambda p: p.latency)
        lines.append(
            f"  - {path}: {dict(Counter(p.status for p in polls))}, max {ms(worst.latency)}"
            f" ms (sent at t={worst.sent - run.t0:.1f} s)"
        )
        for status in sorted({p.status for p in polls} - {200}):
            first = next(p for p in polls if p.status == status)
            body = first.body.decode(errors="replace")[:240]
            lines.append(f"    first {status} at t={first.sent - run.t0:.1f} s: {body}")
    return lines


def example_lines(run: Run) -> list[str]:
    seen: dict[str, Answer] = {}
    for a in run.answers:
        if a.status not in (0, 200):
            seen.setdefault(klass(a), a)
    return [
        f"  - {k} (POST /predict/{a.route}/{a.user_id} at t={a.sent - run.t0:.2f} s, "
        f"{a.latency * 1000:.0f} ms): {a.body.decode(errors='replace')[:300]}"
        for k, a in sorted(seen.items())
    ]


def sigterm_lines(run: Run) -> list[str]:
    if run.window is None:
        return []
    signalled = run.window[0]
    after = [a for a in run.answers if a.done >= signalled and a.status]
    failed = Counter(a.kind for a in run.answers if a.status == 0 and a.done >= signalled)
    in_flight = [a for a in run.answers if a.sent < signalled <= a.done]
    return [
        f"  - answered after the signal: {_cell(Counter(klass(a) for a in after))}; last at "
        f"+{max((a.done for a in after), default=signalled) - signalled:.2f} s",
        f"  - in flight at the signal: {len(in_flight)}: "
        f"{_cell(Counter(klass(a) for a in in_flight))}",
        f"  - client-side after the signal: {_cell(failed)} (each connection retries every 0.1 s)",
    ]


def overload_lines(run: Run) -> list[str]:
    ok = [a.latency for a in run.answers if a.status == 200]
    over = [a.latency for a in run.answers if a.status == 503]
    lines = [
        f"- 2xx p50 {ms(percentile(ok, 50))} ms, p99 {ms(percentile(ok, 99))} ms; "
        f"503 p50 {ms(percentile(over, 50))} ms, p99 {ms(percentile(over, 99))} ms",
        "- by second of sending (2xx n p50/p99 ms | 503 n p50/p99 ms | client errors | "
        "answers slower than 3.5 s):",
    ]
    for second in range(math.ceil(run.t_end - run.t0)):
        sent = _sent_in(run, run.t0 + second, run.t0 + second + 1)
        lines.append(f"  - {second:>3} s: " + _second(sent))
    return lines


def _second(sent: Sequence[Answer]) -> str:
    ok = [a.latency for a in sent if a.status == 200]
    over = [a.latency for a in sent if a.status == 503]
    failed = sum(1 for a in sent if a.status == 0)
    slow = sum(1 for a in sent if a.latency > 3.5)
    return (
        f"2xx {len(ok):,} {ms(percentile(ok, 50))}/{ms(percentile(ok, 99))} | 503 {len(over):,} "
        f"{ms(percentile(over, 50))}/{ms(percentile(over, 99))} | {failed} | {slow:,}"
    )


_STAMP = re.compile(r"^\S+ \S+ |\d+")


def log_lines(path: Path, limit: int = 8) -> list[str]:
    """The server log's warnings and errors, grouped (numbers blanked), most frequent first,
    and its first traceback."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    noisy = [line for line in text if re.search(r"WARNING|ERROR|CRITICAL|Traceback|panic", line)]
    groups = Counter(_STAMP.sub("#", line)[:160] for line in noisy)
    first: dict[str, str] = {}
    for line in noisy:
        first.setdefault(_STAMP.sub("#", line)[:160], line)
    lines = [f"    {n:,}x {first[k][:300]}" for k, n in groups.most_common(limit)]
    start = next((i for i, line in enumerate(text) if line.startswith("Traceback")), None)
    if start is not None:
        lines.append(
            "    first traceback:\n" + "\n".join(f"      {x}" for x in text[start - 1 : start + 30])
        )
    return lines


def details(run: Run, timeout_s: float) -> list[str]:
    wall = run.t_end - run.t0
    out = [
        f"\n### {run.name}: {run.label}\n",
        f"- {len(run.answers):,} requests in {wall:.1f} s ({len(run.answers) / wall:,.0f}/s), "
        f"{run.conns:,} connections, routes {'+'.join(run.routes)}; load generator CPU "
        f"{run.client_cpu:.0%} of a core",
    ]
    if run.window:
        out.append(
            f"- fault from t={run.window[0] - run.t0:.2f} s to t={run.window[1] - run.t0:.2f} s"
        )
    if run.name != "sigterm":
        out.append(f"- longest time without a 2xx: {longest_gap_s(run):.2f} s")
    out.append(f"- connections dropped at a full listen queue: {run.notes['listen overflows']}")
    if run.rows and run.rows.unreported:
        out.append(f"- {run.rows.unreported:,} rows no 2xx reported; what their requests got:")
        out += [f"  - {n:,}x {what}" for what, n in run.rows.unreported_as.most_common(6)]
    out += ["- latency by class:", *latency_lines(run)]
    out += ["- probes:", *p] if (p := poll_lines(run)) else []
    out += ["- first answer of each error class:", *e] if (e := example_lines(run)) else []
    out += sigterm_lines(run) if run.name == "sigterm" else []
    out += overload_lines(run) if run.name == "overload" else []
    if run.server:
        out.append(
            f"- server log {run.server.log_path}; stopped {run.server.stop_s:.2f} s after "
            "this script's SIGTERM (nan: it had exited)"
        )
        out += log_lines(run.server.log_path)
    out.append("- expectations:")
    out += [
        f"  - [{'x' if ok else ' '}] {'meets' if ok else 'MISSES'}: {text}"
        for ok, text in expectations(run, timeout_s)
    ]
    return out


# -- the picture ----------------------------------------------------------------------------

COLOURS = {
    "2xx": "tab:green",
    "4xx": "tab:purple",
    "503 store-unavailable": "tab:orange",
    "503 timeout": "tab:red",
    "503 overloaded": "tab:brown",
    "503 shutting-down": "tab:pink",
    "503 model-unavailable": "tab:olive",
    "500": "black",
    "client errors": "tab:gray",
}


def plot_class(answer: Answer) -> str:
    if answer.status == 0:
        return "client errors"
    if 400 <= answer.status < 500:
        return "4xx"
    if answer.status >= 500 and answer.status != 503:
        return str(answer.status)
    return klass(answer)


def plot(runs: Sequence[Run], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(len(runs), 1, figsize=(12, 2.8 * len(runs)), squeeze=False)
    for ax, run in zip(axes[:, 0], runs, strict=True):
        _panel(ax, run)
    axes[-1, 0].set_xlabel("seconds since the load started")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _panel(ax: Any, run: Run) -> None:
    bins = max(1, math.ceil((run.t_end - run.t0) / BIN_S))
    series: dict[str, list[int]] = {}
    for a in run.answers:
        slot = min(bins - 1, int((a.done - run.t0) / BIN_S))
        series.setdefault(plot_class(a), [0] * bins)[slot] += 1
    xs = [i * BIN_S for i in range(bins)]
    for name, counts in sorted(series.items(), key=lambda kv: -sum(kv[1])):
        ax.step(
            xs,
            counts,
            where="post",
            label=f"{name} ({sum(counts):,})",
            color=COLOURS.get(name),
            linewidth=1.2,
        )
    if run.window:
        label = "SIGTERM to exit" if run.name == "sigterm" else "fault"
        ax.axvspan(
            run.window[0] - run.t0, run.window[1] - run.t0, color="tab:red", alpha=0.12, label=label
        )
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylim(bottom=0)
    ax.set_xlim(0, bins * BIN_S)
    ax.set_title(f"{run.name}: {run.label}", fontsize=10, loc="left")
    ax.set_ylabel("answers / 250 ms")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


# -- main -----------------------------------------------------------------------------------


def report(runs: Sequence[Run], timeout_s: float, png: Path, rate_limit_rps: float) -> None:
    print("\n## Chaos benchmark\n")
    print(f"{auth_banner(rate_limit_rps)}.\n")
    print(TABLE_HEAD)
    for run in runs:
        print(table_row(run))
    for run in runs:
        print("\n".join(details(run, timeout_s)))
    plot(runs, png)
    log(f"figure: {png}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every phase's duration (0.3: a smoke run)",
    )
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument("--routes", nargs="+", choices=["sync", "async"], default=["sync", "async"])
    parser.add_argument("--overload-route", choices=["sync", "async"], default="sync")
    parser.add_argument("--overload-conns", type=int, help="default: 4x one route's capacity")
    parser.add_argument("--poison-valid", type=int, default=2000)
    parser.add_argument("--poison-repeats", type=int, default=8)
    parser.add_argument("--poison-conns", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--png", type=Path, default=Path("/tmp/chaos.png"))
    parser.add_argument(
        "--rate-limit-rps",
        type=float,
        default=1e6,
        help="FRAUDSCORE_RATE_LIMIT_RPS of the servers: on, and high enough never to refuse the"
        " load (the overload scenario's thousands of connections share one key)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    log(auth_banner(args.rate_limit_rps))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # thousands of sockets
    settings = Settings.from_env(os.environ)
    data = dataset_path(settings)
    served = Settings.from_env({}, dotenv=ROOT / ".env")  # what the server's defaults will be
    runs: list[Run] = []
    with ThrowawayCluster(fsync=True) as cluster:
        log(f"throwaway PostgreSQL on port {cluster.port} ({cluster.root})")
        url, poisoned = prepare_database(cluster, data, args.rows)
        ctx = Context(
            cluster,
            url,
            args.rows,
            poisoned,
            lambda port: server_env(url, port, settings, data, args.rate_limit_rps),
            served,
            args,
        )
        try:
            for name in (s for s in SCENARIOS if s in args.only):
                try:
                    runs.append(run_scenario(ctx, name))
                except Exception as exc:  # the other scenarios still run; say why this one did not
                    log(f"  scenario {name} failed: {exc!r}")
                    traceback.print_exc()
        finally:
            if runs:
                report(runs, served.request_timeout_s, args.png, args.rate_limit_rps)


if __name__ == "__main__":
    main()
