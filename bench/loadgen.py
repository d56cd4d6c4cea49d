"""A small asyncio HTTP/1.1 keep-alive load generator, for ``bench/chaos.py``.

Not a general client: each connection sends ``POST /predict/{route}/{user_id}`` requests (no
body; with an API key, ``Authorization: Bearer <key>``) back to back on one keep-alive
socket, reads the status line, the headers and a ``Content-Length`` (or chunked) body, and
records one :class:`Answer` per attempt: when it was sent, how long the answer took, the
status, the problem ``type`` of a non-2xx, whether ``Retry-After`` came with it, the body's
size and the ``prediction_id`` of a 2xx. A socket the server closes is opened again; a
refused connection is retried after a pause. Client-side failures are answers with status 0
and a ``kind``: ``refused``, ``reset``, ``closed`` (EOF before any byte of the answer),
``truncated``, ``timeout`` (no answer within :data:`CLIENT_TIMEOUT_S`), ``connect-timeout``,
or an errno name.

:func:`poll` asks a GET route at a steady interval on its own connection (readiness, liveness).
Run it on uvloop (``uvloop.run``): the generator is CPU-bound Python and must stay well below
the server's rate (``bench/chaos.py`` prints what it reached on its baseline).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import msgspec

__all__ = [
    "CLIENT_TIMEOUT_S",
    "Answer",
    "Poll",
    "drive",
    "poll",
    "random_requests",
]

HOST = "127.0.0.1"
CLIENT_TIMEOUT_S = 15.0
"""A request unanswered this long is a client-side ``timeout`` (the socket is dropped)."""
RECONNECT_PAUSE_S = 0.1
"""After a failed connect, a connection waits this long before the next attempt."""
POLL_TIMEOUT_S = 10.0


class _Ok(msgspec.Struct):
    prediction_id: str = ""


class _Problem(msgspec.Struct):
    type: str = ""


_OK = msgspec.json.Decoder(_Ok)
_PROBLEM = msgspec.json.Decoder(_Problem)
_UNREADABLE = (msgspec.DecodeError, msgspec.ValidationError)


@dataclass(slots=True)
class Answer:
    """One request: sent at ``sent`` (``time.monotonic()``), answered ``latency`` s later."""

    sent: float
    latency: float
    status: int
    """HTTP status, 0 for a client-side failure (see ``kind``)."""
    kind: str
    """The problem type's last segment for a non-2xx (``store-unavailable``), the failure for
    status 0 (``refused``), empty for a 2xx."""
    retry_after: bool
    size: int
    prediction_id: str
    route: str
    user_id: int
    body: bytes
    """Kept for non-2xx answers only (evidence, the poison checks)."""

    @property
    def done(self) -> float:
        """When the answer (or the failure) arrived."""
        return self.sent + self.latency


@dataclass(slots=True)
class Poll:
    """One GET of a probe route (``/readyz``, ``/healthcheck``)."""

    path: str
    sent: float
    latency: float
    status: int
    """HTTP status, 0 when no answer came (``body`` says why)."""
    body: bytes


@dataclass(slots=True)
class _Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


async def _read_response(reader: asyncio.StreamReader) -> _Response:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name:
            headers[name.strip().lower()] = value.strip()
    if b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = await _read_chunked(reader)
    else:
        body = await reader.read()
    return _Response(status, headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers are sent here
            return b"".join(parts)
        parts.append(await reader.readexactly(size + 2))
        parts[-1] = parts[-1][:-2]


class _Connection:
    """One keep-alive socket to the server, opened on demand."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(HOST, self.port)

    async def exchange(self, request: bytes) -> _Response:
        assert self._reader is not None
        assert self._writer is not None
        self._writer.write(request)
        response = await _read_response(self._reader)
        if response.headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return response

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


def _failure(exc: BaseException) -> str:
    """The client-side failure kind of ``exc``."""
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "truncated" if exc.partial else "closed"
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno)).lower()
    return type(exc).__name__


def _answer(sent: float, response: _Response, route: str, user_id: int) -> Answer:
    latency = time.monotonic() - sent
    retry_after = b"retry-after" in response.headers
    if 200 <= response.status < 300:
        try:
            prediction_id = _OK.decode(response.body).prediction_id
        except _UNREADABLE:
            prediction_id = ""
        return Answer(sent, latency, response.status, "", retry_after, len(response.body),
                      prediction_id, route, user_id, b"")  # fmt: skip
    try:
        kind = _PROBLEM.decode(response.body).type.rsplit("/", 1)[-1] or "untyped"
    except _UNREADABLE:
        kind = "not-json"
    return Answer(sent, latency, response.status, kind, retry_after, len(response.body), "",
                  route, user_id, response.body)  # fmt: skip


def _failed(sent: float, kind: str, route: str, user_id: int) -> Answer:
    return Answer(sent, time.monotonic() - sent, 0, kind, False, 0, "", route, user_id, b"")


async def _connect(conn: _Connection, route: str, user_id: int) -> Answer | None:
    """Open ``conn``; the failure as an answer if it cannot be."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(CLIENT_TIMEOUT_S):
            await conn.open()
    except TimeoutError:
        return _failed(started, "connect-timeout", route, user_id)
    except OSError as exc:
        return _failed(started, _failure(exc), route, user_id)
    return None


def _authorization(key: str | None) -> str:
    """The header lines that carry ``key`` (none without one)."""
    return f"Authorization: Bearer {key}\r\n" if key else ""


async def _request(conn: _Connection, route: str, user_id: int, auth: str = "") -> Answer:
    if not conn.is_open:
        refused = await _connect(conn, route, user_id)
        if refused is not None:
            return refused
    request = (
        f"POST /predict/{route}/{user_id} HTTP/1.1\r\nHost: {HOST}\r\n{auth}"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    sent = time.monotonic()
    try:
        async with asyncio.timeout(CLIENT_TIMEOUT_S):
            response = await conn.exchange(request)
    except TimeoutError:
        conn.close()
        return _failed(sent, "timeout", route, user_id)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        conn.close()
        return _failed(sent, _failure(exc), route, user_id)
    return _answer(sent, response, route, user_id)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _worker(
    port: int,
    requests: Iterator[tuple[str, int]],
    stop: asyncio.Event,
    out: list[Answer],
    auth: str,
) -> None:
    conn = _Connection(port)
    try:
        for route, user_id in requests:
            if stop.is_set():
                break
            answer = await _request(conn, route, user_id, auth)
            out.append(answer)
            if answer.status == 0 and not conn.is_open:
                await _pause(stop, RECONNECT_PAUSE_S if answer.kind != "timeout" else 0)
    finally:
        conn.close()


async def drive(
    port: int,
    streams: Sequence[Iterator[tuple[str, int]]],
    stop: asyncio.Event,
    out: list[Answer],
    key: str | None = None,
) -> None:
    """One connection per stream of ``(route, user_id)``, each sending back to back until its
    stream ends or ``stop`` is set (the request in flight is still awaited); answers to
    ``out``. With ``key``, every request carries ``Authorization: Bearer <key>``."""
    auth = _authorization(key)
    await asyncio.gather(*(_worker(port, stream, stop, out, auth) for stream in streams))


def random_requests(
    seed: int, n_ids: int, routes: Sequence[str], first: int = 0
) -> Iterator[tuple[str, int]]:
    """Endless ``(route, user_id)``: ids uniform in ``[0, n_ids)``, routes in turn from
    ``routes[first]``."""
    rng = random.Random(seed)
    turn = first
    while True:
        yield routes[turn % len(routes)], rng.randrange(n_ids)
        turn += 1


async def poll(port: int, path: str, every_s: float, stop: asyncio.Event, out: list[Poll]) -> None:
    """GET ``path`` every ``every_s`` (or at once after a slower answer) until ``stop``."""
    conn = _Connection(port)
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    next_at = time.monotonic()
    try:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                async with asyncio.timeout(POLL_TIMEOUT_S):
                    if not conn.is_open:
                        await conn.open()
                    response = await conn.exchange(request)
                out.append(Poll(path, sent, time.monotonic() - sent, response.status,
                                response.body[:300]))  # fmt: skip
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                conn.close()
                kind = "timeout" if isinstance(exc, TimeoutError) else _failure(exc)
                out.append(Poll(path, sent, time.monotonic() - sent, 0, kind.encode()))
            next_at = max(next_at + every_s, time.monotonic())
            await _pause(stop, next_at - time.monotonic())
    finally:
        conn.close()
