"""SPE4 system endpoints, and liveness and readiness probes."""

from __future__ import annotations

import sqlite3
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from voxmatch._version import __version__
from voxmatch.config import Settings
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
    description=(
        "Whether the server works, its task queue, the models it knows, and where its work"
        " runs (`runner`: `local`, or `ray` with the cluster's address, whether it answers, its"
        " live nodes and CPUs)."
    ),
)
async def system_status(request: Request) -> dict[str, Any]:
    runner: TaskRunner = request.app.state.runner
    settings: Settings = request.app.state.settings
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
        "runner": await _runner_status(settings.ray_address),
    }


async def _runner_status(ray_address: str | None) -> dict[str, Any]:
    if ray_address is None:
        return {"kind": "local"}
    from voxmatch import cluster

    # On a thread: joining the cluster, or finding it gone, takes up to a few seconds.
    found = await run_in_threadpool(cluster.status, ray_address)
    return {"kind": "ray", **found.as_json()}


@router.get(
    "/health/live",
    summary="Liveness",
    description="200 whenever the server's event loop answers. Checks nothing else.",
)
async def health_live() -> dict[str, str]:
    return {"status": "live"}


@router.get(
    "/health/ready",
    summary="Readiness",
    description=(
        "200 when the server can take tasks: the data folder takes a new file, the task"
        " database grants its write lock, and the task workers run; 503 otherwise. `checks`"
        " names each check with `ok` or why it failed. The model is not checked: it is loaded"
        " by the first extraction."
    ),
    responses={503: {"description": "A check failed."}},
)
async def health_ready(request: Request) -> JSONResponse:
    runner: TaskRunner = request.app.state.runner
    checks = {
        "task_store": await run_in_threadpool(_task_store_check, runner),
        "workers": "ok" if runner.workers_alive() else "not running",
    }
    ready = all(result == "ok" for result in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


def _task_store_check(runner: TaskRunner) -> str:
    try:
        runner.store.check_writable()
    except OSError as error:
        # strerror, not str(error): that would show the server's own paths.
        return f"cannot write: {error.strerror or type(error).__name__}"
    except sqlite3.Error as error:
        return f"cannot write: {error}"
    return "ok"
