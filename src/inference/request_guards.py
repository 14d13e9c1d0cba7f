"""Guards in front of MLflow's scoring server for what it does not check in a request itself.

MLflow 3.17's scoring server (what `mlflow models serve` runs) answers a POST without a
Content-Type with HTTP 500, answers a body that is not JSON with a 400 quoting the whole body,
and reads a body of any size into memory. Here, before the request reaches it:
- no Content-Type: 415, naming the header to send;
- more than the size limit: 413, before reading the body when Content-Length announces it,
  else as soon as the streamed body passes the limit;
- JSON that does not parse: 400 saying where it breaks, without the body.
Everything else goes to MLflow's app unchanged (the model checks the pixels: served_model.py).

A plain ASGI middleware, so it wraps MLflow's FastAPI app without depending on its internals.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


MISSING_TYPE = (
    "set the header Content-Type: application/json (for /invocations and /feedback) or the "
    "image's type, e.g. image/png (for /digit)"
)


class BodyTooLargeError(Exception):
    """The request body passed the size limit while being read."""


class RequestGuards:
    def __init__(self, app: App, max_body_bytes: int) -> None:
        self.app = app
        self.max_body = max_body_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])  # ASGI gives lower-case names as bytes
        content_type = headers.get(b"content-type", b"").decode("latin-1").strip()
        if not content_type:
            await refuse(send, 415, MISSING_TYPE)
            return
        announced = headers.get(b"content-length", b"0").decode("latin-1")
        if announced.isdigit() and int(announced) > self.max_body:
            await refuse(send, 413, self.too_large(int(announced)))
            return
        try:
            body = await read_body(receive, self.max_body)
        except BodyTooLargeError:
            await refuse(send, 413, self.too_large(None))
            return
        if content_type.startswith("application/json") and (problem := json_problem(body)):
            await refuse(send, 400, f"the body is not valid JSON: {problem}")
            return
        await self.app(scope, replay(body, receive), send)

    def too_large(self, size: int | None) -> str:
        what = f"the body ({size:,} bytes)" if size is not None else "the body"
        return (
            f"{what} is over this server's limit of {self.max_body:,} bytes; "
            "send fewer images per request, or a smaller photo"
        )


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, or BodyTooLargeError as soon as it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def json_problem(body: bytes) -> str | None:
    """Where the JSON breaks, in words; None when it parses."""
    try:
        json.loads(body)
    except UnicodeDecodeError:
        return "it is not UTF-8 text"
    except json.JSONDecodeError as err:
        return f"{err.msg} at line {err.lineno}, column {err.colno}"
    return None


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body already read, then the client's own messages."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


async def refuse(send: Send, status: int, message: str) -> None:
    """An answer in the scoring server's own error format: {"error_code", "message"}."""
    code = {400: "BAD_REQUEST", 413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}[status]
    body = json.dumps({"error_code": code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
