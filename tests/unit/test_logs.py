"""The log format (FRAUDSCORE_LOG_FORMAT) and the request ids in it: JSON lines that parse,
carry the request id of the request that logged them (and none in a batch), and never the
API key."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime

import pytest
from litestar.testing import TestClient

from fraudscore import Application, FraudscoreError
from fraudscore_adapters import logs
from fraudscore_adapters.logs import REQUEST_ID, JsonFormatter, TextFormatter
from fraudscore_adapters.settings import Settings, SettingsError
from tests.support import DownSink
from tests.unit.test_http import GENERATED_ID, Exploding, World

pytestmark = pytest.mark.unit


def emit(formatter: logging.Formatter, message: str, *args: object, **kwargs: object) -> str:
    """What ``formatter`` makes of one warning logged now (in this context)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    log = logging.getLogger("fraudscore.test")
    log.addHandler(handler)
    try:
        log.warning(message, *args, **kwargs)  # type: ignore[arg-type]
    finally:
        log.removeHandler(handler)
    return stream.getvalue()


def test_a_json_line_has_time_level_logger_message() -> None:
    line = emit(JsonFormatter(), "scored %d\nforged line", 3)
    assert line.count("\n") == 1  # one line, the message's newline escaped
    record = json.loads(line)
    assert set(record) == {"time", "level", "logger", "message"}  # no request: no id
    assert record["level"] == "WARNING"
    assert record["logger"] == "fraudscore.test"
    assert record["message"] == "scored 3\nforged line"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
    assert datetime.fromisoformat(record["time"].replace("Z", "+00:00")).utcoffset() is not None


def test_a_json_line_carries_the_request_id_and_the_traceback() -> None:
    token = REQUEST_ID.set("abc-1")
    try:
        try:
            raise KeyError("boom")
        except KeyError:
            line = emit(JsonFormatter(), "failed", exc_info=True)
        text = emit(TextFormatter(), "failed")
    finally:
        REQUEST_ID.reset(token)
    record = json.loads(line)
    assert record["request_id"] == "abc-1"
    assert record["exc_info"].startswith("Traceback (most recent call last)")
    assert "KeyError: 'boom'" in record["exc_info"]
    assert text.rstrip().endswith("WARNING fraudscore.test failed request_id=abc-1")
    assert "request_id" not in emit(TextFormatter(), "outside a request")


def test_a_request_id_is_taken_only_when_sane() -> None:
    assert logs.accepted(b"a-Z_0.9:x") == "a-Z_0.9:x"
    assert logs.accepted(b"x" * 128) == "x" * 128
    for bad in (b"", b"x" * 129, b"a b", b"a\r\nb", b"a/b", "é".encode(), b'a"b', b"a\x00"):
        assert logs.accepted(bad) is None, bad


def test_new_request_ids_are_unique_cheap_ascii_and_new_in_a_forked_child() -> None:
    ids = [logs.new_request_id() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    assert all(GENERATED_ID.fullmatch(i) and logs.accepted(i.encode()) for i in ids)
    if not hasattr(os, "fork"):
        return
    read, write = os.pipe()
    if (pid := os.fork()) == 0:  # pragma: no cover - the child
        os.write(write, logs.new_request_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    os.close(write)
    assert child.split("-")[0] != ids[0].split("-")[0]  # another prefix


def test_the_log_format_is_a_setting() -> None:
    assert Settings().log_format == "text"
    assert Settings.from_env({"FRAUDSCORE_LOG_FORMAT": "json"}, dotenv=None).log_format == "json"
    with pytest.raises(SettingsError, match="FRAUDSCORE_LOG_FORMAT"):
        Settings.from_env({"FRAUDSCORE_LOG_FORMAT": "yaml"}, dotenv=None)


def test_configure_sets_the_format_once_and_the_servers_loggers_follow() -> None:
    root, server = logging.getLogger(), logging.getLogger("_granian")
    saved, level, saved_server = root.handlers[:], root.level, server.handlers[:]
    root.handlers = []  # pytest's capture put back below
    server.handlers = [logging.StreamHandler(sys.stdout)]  # as granian configures its own
    try:
        logs.configure("json")
        configured = root.handlers[:]
        logs.configure("text")  # once: a configured root is left alone
        again = root.handlers[:]
        followed = server.handlers[:]
    finally:
        root.handlers, server.handlers = saved, saved_server
        root.setLevel(level)
    assert len(configured) == 1
    assert isinstance(configured[0].formatter, JsonFormatter)
    assert again == configured
    assert followed == configured
    with pytest.raises(ValueError, match="log format"):
        logs.formatter("yaml")


# --- Through the app: what a request logs ----------------------------------------------------


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Every record logged, as the JSON lines the server would write."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class Noisy:
    """A store that logs from inside the batch (with the caller's headers at hand nowhere)."""

    def __init__(self, world: World) -> None:
        self.store = world.store

    def latest_many(self, user_ids: Sequence[int]) -> Sequence[Application | FraudscoreError]:
        logging.getLogger("fraudscore.store").warning("reading %d user(s)", len(user_ids))
        return self.store.latest_many(user_ids)


@pytest.mark.parametrize("fast_path", ["on", "off"])
@pytest.mark.parametrize("route", ["sync", "async"])
@pytest.mark.parametrize("fault", ["bug", "store down"])
def test_a_failing_request_logs_json_with_its_request_id_and_never_the_key(
    json_log: io.StringIO, fast_path: str, route: str, fault: str
) -> None:
    world = World()
    if fault == "bug":
        world.features = Exploding()
    else:
        world.sink_port = DownSink()
    with TestClient(world.app(fast_path=fast_path)) as client:
        given = client.post(f"/predict/{route}/1", headers={**world.auth, "X-Request-ID": "r-1"})
        made = client.post(f"/predict/{route}/1", headers={**world.auth, "X-Request-ID": "a b"})
    assert [given.status_code, made.status_code] == [500, 500] if fault == "bug" else [503] * 2
    assert given.headers["x-request-id"] == "r-1"
    new_id = made.headers["x-request-id"]
    assert GENERATED_ID.fullmatch(new_id)
    logged = lines(json_log)
    about = [r for r in logged if r["logger"] == "fraudscore.http" and "POST" in r["message"]]
    assert [r.get("request_id") for r in about] == ["r-1", new_id]
    if fault == "bug":
        assert all("KeyError: 'secret internals'" in r["exc_info"] for r in about)
    text = json_log.getvalue()
    assert world.key not in text
    assert world.key.split("_", 2)[2] not in text  # not even the secret part
    assert "a b" not in text  # a bad request id is never logged


@pytest.mark.parametrize("fast_path", ["on", "off"])
@pytest.mark.parametrize("route", ["sync", "async"])
def test_records_logged_in_a_batch_carry_no_request_id(
    json_log: io.StringIO, fast_path: str, route: str
) -> None:
    """A batch serves many requests: what it logs names none of them (the first request's
    id must not leak into the batch's tasks)."""
    world = World()
    world.features = Noisy(world)
    with TestClient(world.app(fast_path=fast_path)) as client:
        for n in range(3):
            answer = client.post(
                f"/predict/{route}/1", headers={**world.auth, "X-Request-ID": f"q{n}"}
            )
            assert answer.status_code == 200
    batch = [r for r in lines(json_log) if r["logger"] == "fraudscore.store"]
    assert len(batch) == 3
    assert all("request_id" not in r for r in batch)
