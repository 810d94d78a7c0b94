"""Every error leaves the daemon as JSON ``{"error", "hint", "kind"}``.

- :class:`BangerError` → its ``http_status``, message and hint;
- request validation → 400 naming the field (``body.fail_at: …``);
- unknown route / wrong method → 404 / 405 in the same shape;
- anything else → 500 with a generic message (the traceback goes to the
  daemon log, never to the client).

The OpenAPI document says the same (:func:`document_error_responses`): every
operation answers ``4XX`` with an :class:`ErrorBody`. FastAPI would otherwise
advertise a ``422`` ``HTTPValidationError`` this daemon never sends, and every
client generated from the document (and the schemathesis suite) would be wrong.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from banger.api_models import ErrorBody
from banger.errors import BangerError
from banger.paths import Paths

log = logging.getLogger(__name__)


def error_kind(exc: BangerError) -> str:
    """The nearest class defined in :mod:`banger.errors` (what the client can rebuild)."""
    for cls in type(exc).__mro__:
        if cls.__module__ == "banger.errors":
            return cls.__name__
    return "BangerError"


def error_response(status: int, error: str, hint: str | None, kind: str) -> JSONResponse:
    body = ErrorBody(error=error, hint=hint, kind=kind)
    return JSONResponse(status_code=status, content=body.model_dump())


def validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg")))
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI, paths: Paths) -> None:
    async def on_banger_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BangerError)
        return error_response(exc.http_status, exc.message, exc.hint, error_kind(exc))

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(
            400,
            validation_message(exc),
            "see /openapi.json for the request schema",
            "InvalidArgument",
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
            return error_response(404, message, "see /openapi.json for the API", "NotFound")
        if exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path}"
            return error_response(405, message, "see /openapi.json for the API", "InvalidArgument")
        return error_response(exc.status_code, str(exc.detail), None, "BangerError")

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after we answer, and uvicorn logs the traceback.
        return error_response(
            500,
            f"internal error in bangerd while serving {request.method} {request.url.path}",
            f"this is a bug in banger; the traceback is in {paths.daemon_log}",
            "BangerError",
        )

    app.add_exception_handler(BangerError, on_banger_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
    document_error_responses(app)


_ERROR_REF = "#/components/schemas/ErrorBody"
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def document_error_responses(app: FastAPI) -> None:
    """Make ``/openapi.json`` describe the errors the handlers above really send."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ErrorBody"] = ErrorBody.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        error = {
            "description": "Refused: the body names the problem (and often a hint)",
            "content": {"application/json": {"schema": {"$ref": _ERROR_REF}}},
        }
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                responses["4XX"] = error
        for name in _FASTAPI_VALIDATION_SCHEMAS:
            components.pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
