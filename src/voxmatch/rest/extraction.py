"""SPE4 voiceprint extraction: upload a media file, poll for one voiceprint per channel."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import msgspec
import numpy.typing as npt
from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from voxmatch.logs import correlation_id_var, request_id_var
from voxmatch.rest.errors import ApiError, detail_item, queue_full, validation_error
from voxmatch.rest.schemas import ERROR_RESPONSES, TaskAccepted
from voxmatch.rest.tasks import TaskApi, accepted, add_task_routes, storage_errors, submit_or_429
from voxmatch.tasks.extraction_job import EXTRACTION
from voxmatch.tasks.store import JsonObject

TECHNOLOGY = "speaker-identification-voiceprint-extraction"
_MAX_CHANNEL = 1023


def render_result(result: JsonObject, arrays: Mapping[str, npt.NDArray[Any]]) -> dict[str, Any]:
    return result


def parse_channels(text: str | None, location: list[str | int]) -> list[int] | None:
    """`0,1` as SPE4 writes it (0-based, comma-separated, no spaces); empty means all."""
    if text is None or text.strip() == "":
        return None
    numbers = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) > _MAX_CHANNEL:
            raise validation_error(
                location,
                f"channels must be comma-separated channel numbers from 0, like 0,1; got {text!r}",
                "channels_invalid",
            )
        numbers.append(int(part))
    if len(set(numbers)) != len(numbers):
        raise validation_error(
            location, f"channels lists a channel twice: {text!r}", "channels_invalid"
        )
    return numbers


class _Config(msgspec.Struct, forbid_unknown_fields=False):
    channel_mode: str | None = None
    channels: str | list[int] | None = None
    include_vector_voiceprint: bool | None = None


def _config_field(text: str | None) -> _Config:
    """SPE4's newer form field `config`: a JSON string of the same options (unknown keys are
    ignored, as SPE4 ignores them)."""
    if not text:
        return _Config()
    try:
        return msgspec.json.decode(text, type=_Config)
    except msgspec.DecodeError as error:
        raise ApiError(
            400,
            "Invalid request.",
            [detail_item(["body", "config"], f"config is not valid JSON: {error}", "json_invalid")],
        ) from None
    except msgspec.ValidationError as error:
        raise validation_error(["body", "config"], str(error), "type_error") from None


def extraction_router(tasks: TaskApi) -> APIRouter:
    runner = tasks.runner
    router = APIRouter(tags=["Voiceprint extraction"])

    def accept(
        upload: BinaryIO, params: JsonObject, request_id: str, correlation_id: str
    ) -> Response:
        if runner.queue_length() >= runner.queue_capacity:
            # Refuse before copying what may be hundreds of megabytes.
            raise queue_full(runner.queue_capacity, runner.retry_after_seconds)
        staged = runner.store.staging_path()
        try:
            with storage_errors(), staged.open("wb") as target:
                shutil.copyfileobj(upload, target, 1 << 20)
            record = submit_or_429(
                runner,
                EXTRACTION,
                params=params,
                files={"audio": staged},
                request_id=request_id,
                correlation_id=correlation_id,
            )
        finally:
            Path(staged).unlink(missing_ok=True)
        return accepted(TECHNOLOGY, record, runner)

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
            " The same options may come as a JSON form field `config`. voxmatch additions:"
            " `max_speech_length` caps the speech used, `start` and `end` (seconds) pick a"
            " part of the audio. A file that is not"
            " usable audio gives a `rejected` task saying why; audio without speech gives a"
            " voiceprint with speech_length 0, which scores 0 against anything."
        ),
    )
    async def start_extraction(
        request: Request,
        file: Annotated[UploadFile, File(description="The media file.")],
        channel_mode: Annotated[
            str, Query(description="`split` (one voiceprint per channel) or `mix`.")
        ] = "split",
        channels: Annotated[
            str | None, Query(description="0-based channels, comma-separated; empty = all.")
        ] = None,
        include_vector_voiceprint: Annotated[
            bool, Query(description="Add each voiceprint's vector form to the result.")
        ] = False,
        max_speech_length: Annotated[
            float | None,
            Query(
                gt=0,
                description="voxmatch addition: use at most this many seconds of speech (as"
                " gRPC's speech_length); faster, and about 20 s is enough.",
            ),
        ] = None,
        start: Annotated[
            float | None,
            Query(ge=0, description="voxmatch addition: skip the audio before (seconds)."),
        ] = None,
        end: Annotated[
            float | None,
            Query(gt=0, description="voxmatch addition: ignore the audio after (seconds)."),
        ] = None,
        config: Annotated[
            str | None, Form(description="JSON string with the same options (SPE4 newer API).")
        ] = None,
    ) -> Response:
        from_config = _config_field(config)
        if start is not None and end is not None and end <= start:
            raise validation_error(
                ["query", "end"], f"end ({end:g} s) must be after start ({start:g} s)", "range"
            )
        mode = from_config.channel_mode or channel_mode
        if mode not in ("split", "mix"):
            raise validation_error(
                ["query", "channel_mode"],
                f"channel_mode must be 'split' or 'mix', got {mode!r}",
                "enum",
            )
        if isinstance(from_config.channels, list):
            selected: list[int] | None = parse_channels(
                ",".join(str(number) for number in from_config.channels), ["body", "config"]
            )
        elif from_config.channels is not None:
            selected = parse_channels(from_config.channels, ["body", "config"])
        else:
            selected = parse_channels(channels, ["query", "channels"])
        params: JsonObject = {
            "channel_mode": mode,
            "channels": selected,
            "include_vector_voiceprint": (
                include_vector_voiceprint
                if from_config.include_vector_voiceprint is None
                else from_config.include_vector_voiceprint
            ),
            "filename": file.filename,
            "max_speech_length": max_speech_length,
            "start": start,
            "end": end,
        }
        try:
            return await run_in_threadpool(
                accept, file.file, params, request_id_var.get(), correlation_id_var.get()
            )
        finally:
            await file.close()

    add_task_routes(router, tasks, TECHNOLOGY, EXTRACTION, render_result)
    return router
