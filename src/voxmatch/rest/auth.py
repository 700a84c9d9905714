"""API keys over REST: 401 without a valid key, and the key's owner for task isolation.

A client sends its key as `x-api-key: KEY` or `Authorization: Bearer KEY`. The middleware is
plain ASGI, like the others in middleware.py, so it answers before any body is read and does
not buffer uploads. The owner (the key's NAME in the key file) travels in a context variable:
the route code that creates and finds tasks reads it, and it reaches the worker threads of
`run_in_threadpool`, which copy the context.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from voxmatch.api_keys import KeyRing
from voxmatch.rest.errors import ApiError, detail_item
from voxmatch.rest.middleware import send_error

UNAUTHORIZED_TYPE = "request.unauthorized"

OPEN_PATHS = frozenset(
    {"/", "/api/system/info", "/openapi.json", "/docs", "/health/live", "/health/ready"}
)
"""Answered without a key: the web page, the version, the API's description (public anyway),
and the probes that orchestrators call without credentials. Everything else needs a key."""

OPEN_PATH_PREFIXES = ("/docs/", "/web/")
"""The documentation page's own assets and OAuth redirect page, and the web page's files (it
asks for a key when the API answers 401 and sends it with its API requests)."""

requester_var: ContextVar[str | None] = ContextVar("voxmatch_api_key_owner", default=None)
"""The NAME of the key of the request being answered; None when keys are off."""


def visible_to_requester(owner: str | None) -> bool:
    """Whether the request's key may see a task of `owner`. Without keys every task is
    visible; with keys only the creator's, so tasks made before keys were on are nobody's."""
    requester = requester_var.get()
    return requester is None or requester == owner


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PATH_PREFIXES)


def install_api_keys(app: FastAPI, keys: KeyRing) -> None:
    """Require a key of `keys` on every route but the open ones, and describe that in the
    OpenAPI document, so that /docs offers to send a key with its requests."""
    app.add_middleware(ApiKeyMiddleware, keys=keys)
    build_openapi = app.openapi

    def openapi_with_keys() -> dict[str, Any]:
        schema = build_openapi()  # built once and kept by FastAPI; completed here once
        components = schema.setdefault("components", {})
        if "securitySchemes" in components:
            return schema
        components["securitySchemes"] = {
            "ApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            "Bearer": {"type": "http", "scheme": "bearer"},
        }
        schema["security"] = [{"ApiKey": []}, {"Bearer": []}]
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                if is_open(path):
                    operation["security"] = []
                else:
                    operation.setdefault("responses", {})["401"] = {
                        "description": "No valid API key (`request.unauthorized`).",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ErrorBody"}
                            }
                        },
                    }
        return schema

    app.openapi = openapi_with_keys  # type: ignore[method-assign]


def _presented_key(headers: dict[bytes, bytes]) -> str | None:
    raw = headers.get(b"x-api-key")
    if raw is None:
        scheme, _, credentials = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        raw = credentials
    try:
        return raw.decode("utf-8").strip() or None
    except UnicodeDecodeError:
        return None


def _unauthorized(key_given: bool) -> ApiError:
    reason = (
        "the API key is not valid"
        if key_given
        else "an API key is required: send it as the x-api-key header or as Authorization:"
        " Bearer KEY"
    )
    return ApiError(
        401,
        "Authentication required.",
        [detail_item(["header", "x-api-key"], reason, UNAUTHORIZED_TYPE)],
        error_type=UNAUTHORIZED_TYPE,
    )


class ApiKeyMiddleware:
    """Answer 401 (SPE4 body, `www-authenticate: Bearer`) to requests without a valid key."""

    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        key = _presented_key(dict(scope["headers"]))
        owner = self.keys.owner_of(key)
        if owner is None:
            await send_error(
                send, _unauthorized(key is not None), [(b"www-authenticate", b"Bearer")]
            )
            return
        token = requester_var.set(owner)
        try:
            await self.app(scope, receive, send)
        finally:
            requester_var.reset(token)
