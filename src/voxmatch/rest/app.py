"""The REST application: SPE4 routes, error bodies, ids, size limits."""

from __future__ import annotations

from fastapi import FastAPI

from voxmatch._version import __version__
from voxmatch.config import Settings
from voxmatch.rest import comparison, conversion, extraction, merging, system
from voxmatch.rest.errors import install_error_handlers
from voxmatch.rest.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from voxmatch.rest.tasks import TaskApi
from voxmatch.tasks import TaskRunner

# Multipart framing around an uploaded file: boundaries, part headers and a small config field.
_MULTIPART_ALLOWANCE = 64 * 1024


def create_app(settings: Settings, runner: TaskRunner) -> FastAPI:
    app = FastAPI(
        title="voxmatch",
        version=__version__,
        summary="Open speaker identification with the SPE4 REST API.",
        description=(
            "Speaker identification compatible with Phonexia Speech Platform 4 (SPE4): voiceprint"
            " extraction and comparison as asynchronous tasks. Scores are calibrated"
            " log-likelihood ratios: 0 is balanced evidence, positive favours the same speaker."
        ),
    )
    app.state.settings = settings
    app.state.runner = runner
    install_error_handlers(app)
    tasks = TaskApi(runner, settings.poll_wait_seconds)
    app.include_router(comparison.comparison_router(settings, tasks))
    app.include_router(extraction.extraction_router(settings, tasks))
    app.include_router(conversion.conversion_router(settings, tasks))
    app.include_router(merging.merging_router(settings, tasks))
    app.include_router(system.router)

    def limit_for_path(path: str) -> int:
        if path.endswith("voiceprint-extraction"):
            return settings.max_upload_bytes + _MULTIPART_ALLOWANCE
        return settings.max_request_bytes

    # Added last so that it runs first: ids are attached even to 413 answers.
    app.add_middleware(BodySizeLimitMiddleware, limit_for_path=limit_for_path)
    app.add_middleware(RequestContextMiddleware)
    return app
