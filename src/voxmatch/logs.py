"""Log lines that carry the request and correlation ids of the work they describe."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
correlation_id_var: ContextVar[str] = ContextVar("correlation_id", default="-")

LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [request_id=%(request_id)s "
    "correlation_id=%(correlation_id)s] %(message)s"
)


class _RequestIds(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.correlation_id = correlation_id_var.get()
        return True


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(_RequestIds())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


@contextmanager
def request_ids(request_id: str | None, correlation_id: str | None) -> Iterator[None]:
    """Run a block (a task, say) under the ids of the request that caused it."""
    request_token = request_id_var.set(request_id or "-")
    correlation_token = correlation_id_var.set(correlation_id or "-")
    try:
        yield
    finally:
        request_id_var.reset(request_token)
        correlation_id_var.reset(correlation_token)
