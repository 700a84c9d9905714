"""The REST application: SPE4 routes, error bodies, ids, size limits."""

from __future__ import annotations

from fastapi import FastAPI

from voxmatch._version import __version__
from voxmatch.api_keys import KeyRing
from voxmatch.config import Settings
from voxmatch.metrics import Metrics
from voxmatch.rest import comparison, conversion, extraction, galleries, merging, system
from voxmatch.rest.auth import install_api_keys
from voxmatch.rest.docs import install_docs
from voxmatch.rest.errors import install_error_handlers
from voxmatch.rest.metrics import RequestMetricsMiddleware, metrics_router
from voxmatch.rest.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from voxmatch.rest.tasks import TaskApi
from voxmatch.rest.web import install_web
from voxmatch.tasks import TaskRunner

# Multipart framing around an uploaded file: boundaries, part headers and a small config field.
_MULTIPART_ALLOWANCE = 64 * 1024


def create_app(
    settings: Settings, runner: TaskRunner, *, api_keys: KeyRing | None, metrics: Metrics
) -> FastAPI:
    app = FastAPI(
        title="voxmatch",
        version=__version__,
        summary="Open speaker identification with the SPE4 REST API.",
        description=(
            "Speaker identification compatible with Phonexia Speech Platform 4 (SPE4): voiceprint"
            " extraction and comparison as asynchronous tasks. Scores are calibrated"
            " log-likelihood ratios: 0 is balanced evidence, positive favours the same speaker."
        ),
        docs_url=None,  # served offline by install_docs
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.runner = runner
    install_error_handlers(app)
    tasks = TaskApi(runner, settings.poll_wait_seconds)
    app.include_router(comparison.comparison_router(settings, tasks))
    app.include_router(extraction.extraction_router(settings, tasks))
    app.include_router(conversion.conversion_router(settings, tasks))
    app.include_router(merging.merging_router(settings, tasks))
    app.include_router(galleries.galleries_router(settings))
    app.include_router(system.router)
    app.include_router(metrics_router(metrics))
    install_docs(app)
    install_web(app, settings)

    def limit_for_path(path: str) -> int:
        if path.endswith("voiceprint-extraction"):
            return settings.max_upload_bytes + _MULTIPART_ALLOWANCE
        return settings.max_request_bytes

    # Added last so that it runs first: ids are attached even to 413 answers.
    app.add_middleware(BodySizeLimitMiddleware, limit_for_path=limit_for_path)
    if api_keys is not None:
        # Outside the size limit: a client without a key learns nothing, not even the limits.
        install_api_keys(app, api_keys)
    app.add_middleware(RequestContextMiddleware)
    # Outermost, so that every answer is counted, those of the other middleware included.
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics, routes=app.routes)
    return app
