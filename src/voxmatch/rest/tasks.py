"""The SPE4 task pattern shared by every technology: 202 + Location, poll, result or error.

Each technology registers its POST route itself and calls `add_task_routes` for the GET and
DELETE routes under `/api/technology/<technology>/{task_id}`. Results are rendered from the
stored result files when a client asks, in the form it asks for (see voxmatch.rest.results).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from voxmatch.logs import correlation_id_var, request_id_var
from voxmatch.rest.auth import requester_var, visible_to_requester
from voxmatch.rest.bodies import read_body
from voxmatch.rest.errors import ApiError, detail_item, not_found, queue_full
from voxmatch.rest.results import Body, ResultRenderer, load_result_arrays, open_file, render_task
from voxmatch.rest.schemas import ERROR_RESPONSES, TaskAccepted, TaskResponse
from voxmatch.tasks import JsonObject, QueueFull, TaskRecord, TaskRunner, TaskState

log = logging.getLogger("voxmatch.rest")

NPY_MEDIA_TYPE = "application/x-npy"
TECHNOLOGY_PREFIX = "/api/technology"


def task_location(technology: str, task_id: str) -> str:
    return f"{TECHNOLOGY_PREFIX}/{technology}/{task_id}"


def rate_headers(runner: TaskRunner) -> dict[str, str]:
    return {
        "x-ratelimit-limit": str(runner.queue_capacity),
        "x-ratelimit-remaining": str(max(0, runner.queue_capacity - runner.queue_length())),
    }


def accepted(technology: str, record: TaskRecord, runner: TaskRunner) -> Response:
    location = task_location(technology, record.id)
    return Response(
        orjson.dumps({"task": {"task_id": record.id, "state": record.state.value}}),
        status_code=202,
        media_type="application/json",
        headers={"location": location, "x-location": location, **rate_headers(runner)},
    )


@contextmanager
def storage_errors() -> Iterator[None]:
    """Turn a full disk, while a task's files are written, into 507 instead of a 500."""
    try:
        yield
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # strerror, not str(error): that names the server's file.
        raise _storage_full(error.strerror or "the disk is full") from None
    except sqlite3.OperationalError as error:
        if "full" not in str(error):
            raise
        raise _storage_full(str(error)) from None


def _storage_full(reason: str) -> ApiError:
    return ApiError(
        507,
        "The server's storage is full; the task was not accepted.",
        [detail_item([], reason, "storage.capacity-exceeded")],
    )


def submit_or_429(runner: TaskRunner, kind: str, **arguments: Any) -> TaskRecord:
    """Submit, answering 429 when the queue is full and 507 when the disk is."""
    try:
        with storage_errors():
            return runner.submit(kind, owner=requester_var.get(), **arguments)
    except QueueFull as full:
        raise queue_full(full.capacity, full.retry_after) from None


JsonAccept = Callable[[bytes, str, str], TaskRecord]
"""Validates a JSON body and submits its task: (body, request id, correlation id) -> task."""


def add_json_task_route(
    router: APIRouter,
    tasks: TaskApi,
    technology: str,
    accept: JsonAccept,
    *,
    request_model: type[BaseModel],
    summary: str,
    description: str,
) -> None:
    """The POST route of a technology whose request is JSON: 202 once the task is on disk.

    The body is decoded by `accept` (msgspec, in a worker thread: a 55 MB request must not hold
    up the event loop), not by FastAPI; `request_model` only documents it in the OpenAPI.
    """

    async def start_task(request: Request) -> Response:
        receiving = time.perf_counter()
        body = await read_body(request)
        log.debug(
            "received %d bytes in %.1f ms", len(body), 1000 * (time.perf_counter() - receiving)
        )
        record = await run_in_threadpool(
            accept, body, request_id_var.get(), correlation_id_var.get()
        )
        return accepted(technology, record, tasks.runner)

    router.add_api_route(
        f"{TECHNOLOGY_PREFIX}/{technology}",
        start_task,
        methods=["POST"],
        status_code=202,
        response_model=TaskAccepted,
        responses=ERROR_RESPONSES,
        summary=summary,
        description=description,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request_model.model_json_schema()}},
            }
        },
    )


class FinishedTasks:
    """Lets a GET of an unfinished task wait, without a thread, until a worker finishes it."""

    def __init__(self, runner: TaskRunner) -> None:
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        runner.add_finish_listener(self._notify)

    def _notify(self, task_id: str) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake, task_id)

    def _wake(self, task_id: str) -> None:
        for future in self._waiters.pop(task_id, []):
            if not future.done():
                future.set_result(None)

    async def wait(self, task_id: str, timeout: float, unfinished: Callable[[], bool]) -> None:
        """Return when the task finishes or after `timeout` seconds, whichever is first."""
        self._loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = self._loop.create_future()
        waiting = self._waiters.setdefault(task_id, [])
        waiting.append(future)
        try:
            # Checked after registering: a task that finished in between is not waited for.
            if unfinished():
                await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                self._waiters.pop(task_id, None)


@dataclass
class TaskApi:
    """What every technology's routes share: the runner, and how GETs wait for results."""

    runner: TaskRunner
    poll_wait_seconds: float
    finished: FinishedTasks = field(init=False)

    def __post_init__(self) -> None:
        self.finished = FinishedTasks(self.runner)


def _unfinished(runner: TaskRunner, task_id: str) -> bool:
    record = runner.store.get(task_id)
    return record is not None and not record.state.finished


def _response(body: Body, media_type: str, headers: dict[str, str] | None = None) -> Response:
    if isinstance(body, bytes):
        return Response(body, media_type=media_type, headers=headers)
    # A sync iterator: Starlette draws each piece in a worker thread, off the event loop.
    return StreamingResponse(body, media_type=media_type, headers=headers)


def add_task_routes(
    router: APIRouter,
    tasks: TaskApi,
    technology: str,
    kind: str,
    render_result: ResultRenderer,
    *,
    npy_array: str | None = None,
    result_arrays: Callable[[JsonObject], Collection[str]] | None = None,
) -> None:
    """GET (poll) and DELETE (cancel) routes of one technology's tasks.

    `npy_array` names the result array a client gets as a .npy file when it asks for
    `Accept: application/x-npy`; `result_arrays` names, from a done task's stored result, the
    other result arrays its rendering needs.
    """
    path = f"{TECHNOLOGY_PREFIX}/{technology}/{{task_id}}"
    runner = tasks.runner
    stored_arrays = (npy_array,) if npy_array else ()

    def render_from_store(record: TaskRecord) -> Body:
        result = record.result or {}
        names = {*stored_arrays, *(result_arrays(result) if result_arrays else ())}
        paths = {name: runner.store.result_array_path(record.id, name) for name in names}
        try:
            arrays = load_result_arrays(paths)
        except FileNotFoundError:
            raise not_found(record.id) from None  # deleted since it was found
        return render_task(record, render_result(result, arrays))

    def find(task_id: uuid.UUID) -> TaskRecord:
        record = runner.get(str(task_id))
        if record is None or record.kind != kind or not visible_to_requester(record.owner):
            raise not_found(str(task_id))
        return record

    def open_npy(record: TaskRecord, name: str) -> tuple[Body, int]:
        try:
            return open_file(runner.store.result_array_path(record.id, name))
        except FileNotFoundError:
            raise not_found(record.id) from None

    async def get_task(request: Request, task_id: uuid.UUID) -> Response:
        record = find(task_id)
        if not record.state.finished and tasks.poll_wait_seconds > 0:
            await tasks.finished.wait(
                record.id, tasks.poll_wait_seconds, lambda: _unfinished(runner, record.id)
            )
            record = find(task_id)
        if record.state is not TaskState.DONE:
            return _response(render_task(record, None), "application/json")
        if npy_array and NPY_MEDIA_TYPE in request.headers.get("accept", ""):
            body, size = await run_in_threadpool(open_npy, record, npy_array)
            return _response(
                body,
                NPY_MEDIA_TYPE,
                {"content-length": str(size), "x-task-state": record.state.value},
            )
        return _response(await run_in_threadpool(render_from_store, record), "application/json")

    async def delete_task(task_id: uuid.UUID) -> Response:
        record = find(task_id)
        await run_in_threadpool(runner.cancel, record.id)
        return Response(status_code=204)

    router.add_api_route(
        path,
        get_task,
        methods=["GET"],
        response_model=TaskResponse,
        responses={**ERROR_RESPONSES, 200: {"description": "The task, with `result` once done."}},
        summary=f"Get a {technology} task",
        description=(
            "Poll the task. `result` is set when the state is `done`; `error` when it is"
            " `failed` or `rejected`. Finished tasks expire (see `task_ttl_seconds`), then 404."
            + (
                f" Send `Accept: {NPY_MEDIA_TYPE}` to receive the finished result matrix as a"
                " NumPy .npy file (same orientation) instead of JSON."
                if npy_array
                else ""
            )
        ),
    )
    router.add_api_route(
        path,
        delete_task,
        methods=["DELETE"],
        status_code=204,
        responses=ERROR_RESPONSES,
        summary=f"Cancel and remove a {technology} task (voxmatch addition)",
        description=(
            "Not part of SPE4. Stops the task if it has not finished and deletes it with its"
            " files; later GETs answer 404."
        ),
    )
