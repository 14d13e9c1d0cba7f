"""The served model for people: a page to draw or photograph a digit, and its JSON endpoints.

    GET  /            the page (src/inference/page/: plain HTML, CSS and JS, nothing from a CDN)
    GET  /model       which model answers: {"name", "version", "alias", "uri", "run_url"}
    POST /digit       the bytes of one image (image/png, image/jpeg, ...; or a multipart form
                      with one file) -> {"digit", "probabilities", "model", "image"}, where
                      "image" is the 28x28 the model saw, as 28 rows of pixels 0..255
    POST /feedback    only with a collection: {"image": that 28x28, "label": 0-9} -> stored

Every other path goes to MLflow's scoring app (/invocations, /ping, ...). Bad input gets a 4xx
{"error_code", "message"} with one short line that never echoes it, and the server serves on.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route

from common import files
from inference import feedback, imaging

PAGE = Path(__file__).with_name("page")
ASSETS = {"/": "index.html", "/page.js": "page.js", "/page.css": "page.css"}
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}
Predict = Callable[[np.ndarray], np.ndarray]  # (N, 28, 28, 1) uint8 -> (N, 10) probabilities


def build(
    predict: Predict,
    model: dict[str, Any],
    scoring: Any,
    collection: feedback.Collection | None,
) -> Starlette:
    """The page and endpoints in front of MLflow's scoring app `scoring`."""

    async def page_file(request: Request) -> Response:
        name = ASSETS[request.url.path]
        return FileResponse(PAGE / name, media_type=TYPES[Path(name).suffix])

    async def model_card(request: Request) -> Response:
        return JSONResponse({**model, "collecting": collection is not None})

    async def digit(request: Request) -> Response:
        content = await image_bytes(request)
        try:
            seen = await run_in_threadpool(imaging.bytes_to_mnist, content, "the image")
        except imaging.ImageError as err:
            return refusal(422, "UNREADABLE_IMAGE", str(err))
        probabilities = np.asarray(await run_in_threadpool(predict, seen[np.newaxis]))[0]
        return JSONResponse(
            {
                "digit": int(probabilities.argmax()),
                "probabilities": [round(float(p), 6) for p in probabilities],
                "model": answered_by(model, "name", "version", "uri"),
                "image": seen[..., 0].tolist(),
            }
        )

    async def correction(request: Request) -> Response:
        if collection is None:
            return refusal(404, "NOT_COLLECTING", "this server collects no corrections")
        try:
            image, label = feedback.parse(json.loads(await request.body()))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return refusal(400, "BAD_REQUEST", "the body is not valid JSON")
        except feedback.FeedbackError as err:
            return refusal(400, "BAD_REQUEST", str(err))
        answer = int(np.asarray(await run_in_threadpool(predict, image[None, ..., None])).argmax())
        entry = feedback.Correction(
            image, label, answer, {k: model[k] for k in ("name", "version")}
        )
        try:
            added = await run_in_threadpool(collection.add, entry)
        except feedback.FeedbackError as err:
            return refusal(507, "COLLECTION_FULL", str(err))
        except files.DiskFullError as err:  # the whole line (paths included) is for the log
            print(f"error: correction not stored: {err}", file=sys.stderr, flush=True)
            return refusal(507, "DISK_FULL", "not stored: the server has no room left for it")
        return JSONResponse({"stored": added, "label": label, "answer": answer})

    routes = [
        *(Route(path, page_file, methods=["GET"]) for path in ASSETS),
        Route("/model", model_card, methods=["GET"]),
        Route("/digit", digit, methods=["POST"]),
        Route("/feedback", correction, methods=["POST"]),
        Mount("/", app=scoring),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


def answered_by(model: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The part of the model card an answer or a stored correction names."""
    return {key: model[key] for key in keys}


async def image_bytes(request: Request) -> bytes:
    """The upload: the body itself, or the one file of a multipart form."""
    kind = request.headers.get("content-type", "")
    if not kind.startswith("multipart/form-data"):
        return await request.body()
    async with request.form(max_files=1, max_fields=10) as form:
        uploads = [value for value in form.values() if isinstance(value, UploadFile)]
        if not uploads:
            raise HTTPException(400, "the form holds no file: attach one image")
        return await uploads[0].read()


async def http_error(request: Request, err: Exception) -> Response:
    """Starlette's own refusals (a malformed form, too many files) in this app's format."""
    assert isinstance(err, HTTPException)
    detail = err.detail if isinstance(err.detail, str) else "bad request"
    return refusal(err.status_code, "BAD_REQUEST", detail)


def refusal(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error_code": code, "message": message}, status_code=status)
