"""SPE4 error bodies: `{"type", "message", "detail": [{"location", "message", "type"}]}`.

Every error the REST API can give goes through `ApiError` or one of the handlers registered by
`install_error_handlers`, so no input produces a bare 500 or a framework-shaped body.
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from voxmatch.request_checks import RequestError
from voxmatch.voiceprint import VoiceprintError

Location = list[str | int]
Detail = dict[str, Any]

ERROR_TYPES_BY_STATUS = {
    400: "request.invalid",
    403: "request.forbidden",
    404: "resource.not-found",
    405: "method.invalid",
    413: "request.size-limit-exceeded",
    431: "request.header-fields-too-large",
    422: "request.validation-error",
    429: "request.rate-limit-exceeded",
    507: "storage.capacity-exceeded",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        detail: list[Detail] | None = None,
        *,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail or []
        self.error_type = error_type or ERROR_TYPES_BY_STATUS.get(status, "internal")
        self.headers = headers or {}


def detail_item(
    location: Location, message: str, error_type: str, context: dict[str, Any] | None = None
) -> Detail:
    item: Detail = {"location": location, "message": message, "type": error_type}
    if context:
        item["context"] = context
    return item


def validation_error(
    location: Location, message: str, error_type: str, context: dict[str, Any] | None = None
) -> ApiError:
    """422 `request.validation-error` with one detail item."""
    return ApiError(
        422,
        "Validation of the request failed.",
        [detail_item(location, message, error_type, context)],
    )


def request_error(error: RequestError, location: Location) -> ApiError:
    """422 for a value that broke one of the request rules, found at `location`."""
    return validation_error(location, error.message, error.reason, error.context)


def error_body(error_type: str, message: str, detail: list[Detail]) -> bytes:
    return orjson.dumps({"type": error_type, "message": message, "detail": detail})


def error_response(error: ApiError) -> Response:
    return Response(
        error_body(error.error_type, error.message, error.detail),
        status_code=error.status,
        media_type="application/json",
        headers=error.headers,
    )


def not_found(task_id: str) -> ApiError:
    return ApiError(
        404,
        "Task not found.",
        [
            detail_item(
                ["path", "task_id"],
                f"task {task_id} does not exist: the id is wrong or the task has expired",
                "resource.not-found",
            )
        ],
    )


def queue_full(capacity: int, retry_after: int) -> ApiError:
    return ApiError(
        429,
        "Too many tasks are waiting; retry later.",
        [
            detail_item(
                [],
                f"the task queue is full ({capacity} tasks waiting); retry after {retry_after} s",
                "request.rate-limit-exceeded",
            )
        ],
        headers={
            "retry-after": str(retry_after),
            "x-ratelimit-limit": str(capacity),
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": str(int(time.time()) + retry_after),
        },
    )


def invalid_json(error: msgspec.DecodeError) -> ApiError:
    return ApiError(
        400,
        "Invalid request.",
        [detail_item(["body"], f"the body is not valid JSON: {error}", "json_invalid")],
    )


_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")
_MISSING_FIELD = re.compile(r"Object missing required field `([^`]+)`")


def schema_error(error: msgspec.ValidationError) -> ApiError:
    """Turn msgspec's "<problem> - at `$.field[3]`" into an SPE4 detail with a location."""
    text = str(error)
    problem, _, path = text.partition(" - at `")
    location: Location = ["body"]
    for name, index in _PATH_PART.findall(path.rstrip("`")):
        location.append(int(index) if index else name)
    missing = _MISSING_FIELD.match(problem)
    if missing:
        location.append(missing.group(1))
        kind = "missing"
        problem = "Field required"
    elif "length >=" in problem:
        kind = "too_short"
    elif "length <=" in problem:
        kind = "too_long"
    else:
        kind = "type_error"
    return validation_error(location, problem, kind)


def voiceprint_error(error: VoiceprintError, field: str) -> ApiError:
    return validation_error(
        ["body", field, error.index],
        error.message,
        f"voiceprint.{error.reason}",
        {"reason": error.reason},
    )


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this path (routes are asked, not inspected)."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> Response:
        return error_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
        status = error.status_code
        if status == 404:
            message = f"No such resource: {request.url.path}"
        elif status == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}."
        else:
            message = str(error.detail)
        response = error_response(ApiError(status, message))
        if error.headers:
            response.headers.update(error.headers)
        if status == 405:
            # Starlette names only the methods of the first route of the path; GET and DELETE
            # of a task are two routes.
            response.headers["allow"] = ", ".join(_allowed_methods(request))
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> Response:
        detail = [
            detail_item(
                [part for part in item.get("loc", ()) if isinstance(part, str | int)],
                str(item.get("msg", "invalid")),
                str(item.get("type", "value_error")),
            )
            for item in error.errors()
        ]
        return error_response(ApiError(422, "Validation of the request failed.", detail))
