"""Running voxmatch: the task store and runner, the REST app, and the listening sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from pathlib import Path

import uvicorn
import uvloop
from threadpoolctl import threadpool_limits

from voxmatch._listen import bind_tcp, check_free
from voxmatch._malloc import retain_freed_memory
from voxmatch.api_keys import KeyRing
from voxmatch.compute_slots import ComputeSlots
from voxmatch.config import Settings
from voxmatch.grpc.server import build_grpc_server, grpc_target
from voxmatch.logs import configure_logging
from voxmatch.metrics import Metrics
from voxmatch.rest.app import create_app
from voxmatch.rest.header_limits import bounded_head_protocol
from voxmatch.shared_extractor import SharedExtractor, build_extractor
from voxmatch.tasks import TaskRunner, TaskStore
from voxmatch.tasks.extraction_job import EXTRACTION
from voxmatch.tasks.jobs import COMPARISON, build_handlers

log = logging.getLogger("voxmatch")

ENDPOINTS_FILE = "endpoints.json"
"""Written into the data folder once the server listens: the addresses it actually bound
(useful with port 0, which picks a free port)."""


def build_runner(
    settings: Settings, extractor: SharedExtractor, compute_slots: ComputeSlots
) -> TaskRunner:
    store = TaskStore(settings.data_dir, fsync=settings.fsync)
    return TaskRunner(
        store,
        build_handlers(
            memory_budget=settings.memory_budget_bytes,
            extractor=extractor,
            max_audio_seconds=settings.max_audio_seconds,
            cluster=settings if settings.ray_address else None,
        ),
        workers=settings.workers,
        queue_capacity=settings.queue_capacity,
        task_ttl_seconds=settings.task_ttl_seconds,
        expiry_interval_seconds=settings.expiry_interval_seconds,
        retry_after_seconds=settings.retry_after_seconds,
        compute_slots=compute_slots,
        slot_kinds=(EXTRACTION, COMPARISON),
    )


def serve(settings: Settings) -> None:
    """Serve until interrupted (SIGINT or SIGTERM).

    Raises ListenError (an OSError) before any other work when a port is taken.
    """
    configure_logging(settings.log_level)
    # Read first: a bad key file stops the server before it touches anything.
    api_keys = KeyRing(settings.api_keys_file) if settings.api_keys_file else None
    if api_keys is not None:
        log.info("API keys required (%d in %s)", len(api_keys), settings.api_keys_file)
    rest_sockets = bind_tcp(settings.host, settings.port, "REST", "--port")
    try:
        if settings.grpc_enabled:
            check_free(settings.grpc_address, settings.grpc_port, "gRPC", "--grpc-port")
    except OSError:
        for sock in rest_sockets:
            sock.close()
        raise
    retain_freed_memory()
    threadpool_limits(settings.blas_threads, user_api="blas")
    _make_private_data_dir(settings.data_dir)
    extractor = build_extractor(settings)
    # One CPU budget for REST tasks and gRPC calls alike (see docs/grpc.md).
    compute_slots = ComputeSlots(settings.compute_slot_count)
    runner = build_runner(settings, extractor, compute_slots)
    metrics = Metrics()
    metrics.watch_runner(runner)
    runner.start()
    grpc_server = None
    try:
        grpc_endpoints = {}
        if settings.grpc_enabled:
            grpc_server, grpc_port = build_grpc_server(
                settings, extractor, compute_slots, api_keys=api_keys, metrics=metrics
            )
            grpc_server.start()
            grpc_endpoints["grpc"] = grpc_target(settings.grpc_address, grpc_port)
        # uvloop's loop, as `loop="uvloop"` below intends: that setting only takes effect when
        # uvicorn makes the loop itself, and with asyncio's own loop every 256 KB of a request
        # body cost a round of Python-level selector calls (a 55 MB body: ~40 ms more).
        uvloop.run(_serve(settings, runner, metrics, grpc_endpoints, api_keys, rest_sockets))
    finally:
        for sock in rest_sockets:
            sock.close()
        if grpc_server is not None:
            grpc_server.stop(grace=5).wait()
        runner.stop()
        runner.store.close()
        (settings.data_dir / ENDPOINTS_FILE).unlink(missing_ok=True)


async def _serve(
    settings: Settings,
    runner: TaskRunner,
    metrics: Metrics,
    endpoints: dict[str, str],
    api_keys: KeyRing | None,
    sockets: list[socket.socket],
) -> None:
    app = create_app(settings, runner, api_keys=api_keys, metrics=metrics)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
        loop="uvloop",
        http=bounded_head_protocol(
            settings.max_header_bytes, settings.max_header_count, settings.max_request_bytes
        ),
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=sockets))
    while not server.started:
        if serving.done():
            await serving  # startup failed (port taken...): let its exception surface
            return
        await asyncio.sleep(0.01)
    rest_port = server.servers[0].sockets[0].getsockname()[1]
    _write_endpoints(
        settings.data_dir, {"rest": f"http://{settings.host}:{rest_port}", **endpoints}
    )
    log.info(
        "voxmatch listening: REST http://%s:%d (docs at /docs)%s; data in %s",
        settings.host,
        rest_port,
        f", gRPC {endpoints['grpc']}" if "grpc" in endpoints else "",
        settings.data_dir.resolve(),
    )
    await serving


def _make_private_data_dir(data_dir: Path) -> None:
    """Everything the server writes (the database and its WAL, task files, results, the model
    cache, endpoints.json), by voxmatch or by a library, is readable by its user only: the
    umask covers what is created from now on, the folder's own mode what was there before."""
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        data_dir.chmod(0o700)
    except PermissionError:
        log.warning("cannot make the data folder %s private: it belongs to another user", data_dir)


def _write_endpoints(data_dir: Path, endpoints: dict[str, str]) -> None:
    partial = data_dir / (ENDPOINTS_FILE + ".partial")
    partial.write_text(json.dumps(endpoints))
    os.replace(partial, data_dir / ENDPOINTS_FILE)
