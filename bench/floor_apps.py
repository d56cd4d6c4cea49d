"""The floors under the HTTP benchmark: what the server and the framework cost on their own.

Served by granian like the service (``bench/http_load.py --floors``), answering every
``POST /predict/{route}/{user_id}`` with a fixed prediction-shaped body, no I/O, no model:

- ``raw_asgi``: a plain ASGI callable (the server's own cost per request);
- ``bare_litestar``: one Litestar route returning a msgspec struct (server plus framework).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Litestar, get, post

BODY = msgspec.json.encode(
    {"user_id": 1, "probability": 0.1, "is_fraud": False, "threshold": 0.5, "model_version": "v",
     "prediction_id": str(uuid.UUID(int=1)), "created_at": "2026-11-27T06:09:23.868595Z"}
)  # fmt: skip
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def raw_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Every HTTP request: 200 with BODY."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


class Out(msgspec.Struct, frozen=True):
    """The shape of a prediction."""

    user_id: int
    probability: float
    is_fraud: bool
    threshold: float
    model_version: str
    prediction_id: uuid.UUID
    created_at: datetime


@post("/predict/{route:str}/{user_id:str}", status_code=200)
async def predict(route: str, user_id: str) -> Out:
    """A prediction-shaped answer."""
    return Out(int(user_id), 0.1, False, 0.5, route, uuid.uuid4(), datetime.now(UTC))


@get("/healthcheck")
async def healthcheck() -> str:
    """Up."""
    return "ok"


bare_litestar = Litestar([predict, healthcheck], openapi_config=None)
