"""REST side of the metrics: request counts and latency by route template, and GET /metrics."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from fastapi import APIRouter, Request, Response
from fastapi.routing import iter_route_contexts
from prometheus_client.exposition import choose_encoder
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute, Mount, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxmatch.metrics import Metrics

UNMATCHED_ROUTE = "unmatched"
"""The route label of requests no route matches: raw paths would make unbounded label values."""


class RouteTemplates:
    """The template of the route that takes a request (`/api/.../{task_id}`), not its path.

    Matched here from the app's routes rather than read from the scope after routing, so that
    requests answered before routing (413 from the body size limit, say) are labelled by their
    route too.
    """

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self._table: list[tuple[re.Pattern[str], set[str] | None, str]] = []
        for context in iter_route_contexts(routes):
            path = context.path
            if path is None:
                continue
            if isinstance(context.original_route, Mount):
                path += "/{path:path}"
            pattern, template, _ = compile_path(path)
            self._table.append((pattern, context.methods, template))

    def template(self, path: str, method: str) -> str:
        path_only: str | None = None
        for pattern, methods, template in self._table:
            if not pattern.match(path):
                continue
            if methods is None or method in methods:
                return template
            if path_only is None:
                path_only = template  # the path matches, the method does not: a 405 here
        return path_only or UNMATCHED_ROUTE


class RequestMetricsMiddleware:
    """Count each answered request and time it to the end of its response.

    Meant to be the outermost middleware, so that it sees every answer, the ones other
    middleware give (413, 500) included. Requests that end with no response at all (the client
    went away first) are not counted.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        # Built when the app first runs the middleware, with every route in place.
        self.routes = RouteTemplates(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        route = self.routes.template(scope["path"], method)
        status: int | None = None
        began = time.perf_counter()

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            if status is not None:
                self.metrics.http_requests.labels(route, method, str(status)).inc()
                self.metrics.http_request_duration.labels(route, method).observe(
                    time.perf_counter() - began
                )


def metrics_router(metrics: Metrics) -> APIRouter:
    router = APIRouter(tags=["System"])

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        description=(
            "The server's metrics in the Prometheus text format (OpenMetrics when the Accept"
            " header asks for it). See docs/operations.md."
        ),
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def scrape(request: Request) -> Response:
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        # Off the event loop: the scrape reads the task store.
        body = await run_in_threadpool(encode, metrics.registry)
        return Response(body, media_type=content_type)

    return router
