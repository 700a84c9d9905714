"""SPE4 voiceprint extraction: upload a media file, poll for one voiceprint per channel."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import numpy.typing as npt
from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from voxmatch.config import Settings
from voxmatch.logs import correlation_id_var, request_id_var
from voxmatch.rest.errors import queue_full
from voxmatch.rest.extraction_options import (
    CONFIG_FIELD,
    MAX_SECONDS,
    PositiveSeconds,
    Seconds,
    parse_options,
)
from voxmatch.rest.schemas import ERROR_RESPONSES, TaskAccepted
from voxmatch.rest.tasks import TaskApi, accepted, add_task_routes, storage_errors, submit_or_429
from voxmatch.rest.uploads import FILE_FIELD, receive_form
from voxmatch.tasks import EXTRACTION, JsonObject
from voxmatch.vectors import vector_rows
from voxmatch.voiceprint import NARROWBAND

TECHNOLOGY = "speaker-identification-voiceprint-extraction"


def condition_fields(stored: Mapping[str, Any]) -> dict[str, Any]:
    """voxmatch's additions to a voiceprint's result: its condition ("wideband" or
    "narrowband") and effective bandwidth in Hz (0: not measured); none for a result stored by
    a version that did not measure them."""
    if "condition" not in stored:
        return {}
    return {
        "condition": "narrowband" if stored["condition"] == NARROWBAND else "wideband",
        "bandwidth_hz": round(stored["bandwidth"]),
    }


def speech_segment_fields(stored: Mapping[str, Any]) -> dict[str, Any]:
    """voxmatch's addition of where the detected speech is: `speech_segments`, [start, end]
    seconds of the file; none for a result stored by a version that did not keep them."""
    if "speech_segments" not in stored:
        return {}
    return {"speech_segments": stored["speech_segments"]}


def render_result(result: JsonObject, arrays: Mapping[str, npt.NDArray[Any]]) -> dict[str, Any]:
    """SPE4's channels: speech length in milliseconds' precision, and when asked for, each
    channel's vector voiceprint as a list of floats (empty for a channel of no speech); with
    voxmatch's `condition`, `bandwidth_hz` and `speech_segments` added."""
    if "vectors" not in result:
        # Stored by a voxmatch before tasks kept neutral results: already SPE4's channels.
        return {"channels": result["channels"]}
    vectors = vector_rows(arrays["vectors"]) if result["vectors"] else None
    channels: list[dict[str, Any]] = []
    for index, stored in enumerate(result["channels"]):
        channel: dict[str, Any] = {
            "channel_number": stored["channel_number"],
            "voiceprint": stored["voiceprint"],
            "speech_length": round(stored["speech_length"], 3),
            "model": stored["model"],
            **condition_fields(stored),
            **speech_segment_fields(stored),
        }
        if vectors is not None:
            # Python floats, not float32: the digits SPE4 clients have always received.
            channel["vector_voiceprint"] = vectors[index].tolist()
        channels.append(channel)
    return {"channels": channels}


def result_arrays(result: JsonObject) -> tuple[str, ...]:
    return ("vectors",) if result.get("vectors") else ()


_OPTION_DESCRIPTIONS = {
    "channel_mode": "`split` (default: one voiceprint per channel) or `mix`.",
    "channels": "0-based channels, comma-separated (`0,1`); empty = all.",
    "include_vector_voiceprint": "Add each voiceprint's vector form to the result.",
    "max_speech_length": "voxmatch addition: use at most this many seconds of speech (as gRPC's"
    " speech_length); faster, and about 20 s is enough.",
    "start": "voxmatch addition: skip the audio before (seconds).",
    "end": "voxmatch addition: ignore the audio after (seconds).",
}

_FORM_SCHEMA = {
    "type": "object",
    "required": [FILE_FIELD],
    "properties": {
        FILE_FIELD: {"type": "string", "format": "binary", "description": "The media file."},
        CONFIG_FIELD: {
            "type": "string",
            "description": "JSON object with the same options (SPE4 newer API).",
        },
        **{
            name: {"type": "string", "description": f"{description} Same as the query parameter."}
            for name, description in _OPTION_DESCRIPTIONS.items()
        },
    },
}


def _create_exclusive(path: Path) -> BinaryIO:
    # Owner-only from the first byte: an upload is a user's recording.
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def extraction_router(settings: Settings, tasks: TaskApi) -> APIRouter:
    runner = tasks.runner
    router = APIRouter(tags=["Voiceprint extraction"])

    async def receive(request: Request, staged: Path, query: dict[str, object]) -> JsonObject:
        """Stream the upload into `staged` and check the options; the task's parameters."""
        with storage_errors():
            target = await run_in_threadpool(_create_exclusive, staged)
            try:
                form = await receive_form(request, target, settings.max_upload_bytes)
            finally:
                await run_in_threadpool(target.close)
        params = parse_options(query, form.fields).params()
        params["filename"] = form.filename
        return params

    @router.post(
        f"/api/technology/{TECHNOLOGY}",
        status_code=202,
        response_model=TaskAccepted,
        responses=ERROR_RESPONSES,
        summary="Start a voiceprint extraction",
        description=(
            "Upload a media file (multipart field `file`): WAV (PCM, float, A-law, mu-law),"
            " FLAC, OGG Vorbis/Opus, MP3, M4A/AAC, any sample rate and channel count. With"
            " `channel_mode=split` (default) each channel gives its own voiceprint; with `mix`"
            " the channels are averaged into one. `channels` picks 0-based channels (`0,1`)."
            " voxmatch additions: `max_speech_length` caps the speech used, `start` and `end`"
            f" (seconds, at most {MAX_SECONDS:g}) pick a part of the audio. Each option may be"
            " a query parameter, a form field, or a key of the JSON form field `config`; given"
            " in more than one place with different values, it is a 422. The file streams into"
            " the data folder; a full queue is refused (429) before the upload is read. A file"
            " that is not usable audio gives a `rejected` task saying why; audio without speech"
            " gives a voiceprint with speech_length 0, which scores 0 against anything. voxmatch"
            " adds to each channel's result its `condition` (`wideband`, or `narrowband` for"
            " telephone-band audio whatever the file's rate) and `bandwidth_hz`, the detected"
            " upper edge of its content, and `speech_segments`, the [start, end] seconds of the"
            " detected speech (at most 1000; closer segments joined beyond that)."
        ),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"multipart/form-data": {"schema": _FORM_SCHEMA}},
            }
        },
    )
    async def start_extraction(
        request: Request,
        channel_mode: Annotated[
            str | None, Query(description=_OPTION_DESCRIPTIONS["channel_mode"])
        ] = None,
        channels: Annotated[str | None, Query(description=_OPTION_DESCRIPTIONS["channels"])] = None,
        include_vector_voiceprint: Annotated[
            bool | None, Query(description=_OPTION_DESCRIPTIONS["include_vector_voiceprint"])
        ] = None,
        max_speech_length: Annotated[
            PositiveSeconds | None,
            Query(description=_OPTION_DESCRIPTIONS["max_speech_length"]),
        ] = None,
        start: Annotated[Seconds | None, Query(description=_OPTION_DESCRIPTIONS["start"])] = None,
        end: Annotated[
            PositiveSeconds | None, Query(description=_OPTION_DESCRIPTIONS["end"])
        ] = None,
    ) -> Response:
        query: dict[str, object] = {
            "channel_mode": channel_mode,
            "channels": channels,
            "include_vector_voiceprint": include_vector_voiceprint,
            "max_speech_length": max_speech_length,
            "start": start,
            "end": end,
        }
        parse_options(query, {})  # a bad query parameter is refused before the upload is read
        if runner.queue_length() >= runner.queue_capacity:
            raise queue_full(runner.queue_capacity, runner.retry_after_seconds)
        staged = runner.store.staging_path()
        try:
            params = await receive(request, staged, query)
            record = await run_in_threadpool(
                submit_or_429,
                runner,
                EXTRACTION,
                params=params,
                files={"audio": staged},
                request_id=request_id_var.get(),
                correlation_id=correlation_id_var.get(),
            )
        finally:
            # Moved into its task's folder when the task was accepted; otherwise not kept.
            await run_in_threadpool(staged.unlink, missing_ok=True)
        return accepted(TECHNOLOGY, record, runner)

    add_task_routes(
        router, tasks, TECHNOLOGY, EXTRACTION, render_result, result_arrays=result_arrays
    )
    return router
