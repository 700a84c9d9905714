"""Running voxmatch: the task store and runner, the REST app, and the listening sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import uvicorn

from voxmatch._malloc import retain_freed_memory
from voxmatch.config import Settings
from voxmatch.logs import configure_logging
from voxmatch.rest.app import create_app
from voxmatch.tasks import TaskRunner, TaskStore
from voxmatch.tasks.jobs import build_handlers

log = logging.getLogger("voxmatch")

ENDPOINTS_FILE = "endpoints.json"
"""Written into the data folder once the server listens: the addresses it actually bound
(useful with port 0, which picks a free port)."""


def build_runner(settings: Settings) -> TaskRunner:
    store = TaskStore(settings.data_dir, fsync=settings.fsync)
    return TaskRunner(
        store,
        build_handlers(memory_budget=settings.memory_budget_bytes),
        workers=settings.workers,
        queue_capacity=settings.queue_capacity,
        task_ttl_seconds=settings.task_ttl_seconds,
        expiry_interval_seconds=settings.expiry_interval_seconds,
        retry_after_seconds=settings.retry_after_seconds,
    )


def serve(settings: Settings) -> None:
    """Serve until interrupted (SIGINT or SIGTERM)."""
    configure_logging(settings.log_level)
    retain_freed_memory()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    runner = build_runner(settings)
    runner.start()
    try:
        asyncio.run(_serve(settings, runner))
    finally:
        runner.stop()
        runner.store.close()
        (settings.data_dir / ENDPOINTS_FILE).unlink(missing_ok=True)


async def _serve(settings: Settings, runner: TaskRunner) -> None:
    app = create_app(settings, runner)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
        loop="uvloop",
        http="httptools",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving  # startup failed (port taken...): let its exception surface
            return
        await asyncio.sleep(0.01)
    rest_port = server.servers[0].sockets[0].getsockname()[1]
    _write_endpoints(settings.data_dir, {"rest": f"http://{settings.host}:{rest_port}"})
    log.info(
        "voxmatch listening: REST http://%s:%d (docs at /docs); data in %s",
        settings.host,
        rest_port,
        settings.data_dir.resolve(),
    )
    await serving


def _write_endpoints(data_dir: Path, endpoints: dict[str, str]) -> None:
    partial = data_dir / (ENDPOINTS_FILE + ".partial")
    partial.write_text(json.dumps(endpoints))
    os.replace(partial, data_dir / ENDPOINTS_FILE)
