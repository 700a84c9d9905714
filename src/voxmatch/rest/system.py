"""SPE4 system endpoints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from voxmatch._version import __version__
from voxmatch.models.registry import known_models
from voxmatch.rest.schemas import SystemInfo
from voxmatch.tasks import TaskRunner

router = APIRouter(tags=["System"])


@router.get("/api/system/info", response_model=SystemInfo, summary="Server version")
async def system_info() -> dict[str, str]:
    return {"version": __version__}


@router.get(
    "/api/system/status",
    summary="Server status",
    description="Whether the server works, its task queue, and the models it knows.",
)
async def system_status(request: Request) -> dict[str, Any]:
    runner: TaskRunner = request.app.state.runner
    counts = await run_in_threadpool(runner.store.counts)
    return {
        "status": "ok",
        "version": __version__,
        "workers": runner.workers,
        "queue": {
            "waiting": runner.queue_length(),
            "running": runner.running_count(),
            "capacity": runner.queue_capacity,
        },
        "tasks": counts,
        "models": [
            {"name": model.name, "embedding_dim": model.embedding_dim} for model in known_models()
        ],
    }
