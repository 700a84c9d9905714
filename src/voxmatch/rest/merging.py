"""Voiceprint merging over REST (a voxmatch addition: SPE4 has it in gRPC only).

POST `{"voiceprints": [...]}` (voiceprints of one speaker and one model), poll for
`{"voiceprint": base64, "speech_length": seconds, "model": name, "condition": "wideband" |
"narrowband", "bandwidth_hz": Hz}`: the speech-length-weighted merge of voxmatch.merging, the
same as gRPC VoiceprintMerging.Merge gives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy.typing as npt
from fastapi import APIRouter

from voxmatch.config import Settings
from voxmatch.rest.bodies import decode_voiceprints_body
from voxmatch.rest.extraction import condition_fields
from voxmatch.rest.schemas import VoiceprintsRequest
from voxmatch.rest.tasks import TaskApi, add_json_task_route, add_task_routes, submit_or_429
from voxmatch.tasks import MERGING, MERGING_CONDITION_ARRAYS, JsonObject, TaskRecord

TECHNOLOGY = "speaker-identification-voiceprint-merging"


def render_result(result: JsonObject, arrays: Mapping[str, npt.NDArray[Any]]) -> dict[str, Any]:
    return {
        "voiceprint": result["voiceprint"],
        "speech_length": result["speech_length"],
        "model": result["model"],
        **condition_fields(result),
    }


def merging_router(settings: Settings, tasks: TaskApi) -> APIRouter:
    runner = tasks.runner
    router = APIRouter(tags=["Voiceprint merging (voxmatch addition)"])

    def accept(body: bytes, request_id: str, correlation_id: str) -> TaskRecord:
        batch = decode_voiceprints_body(body, settings.max_list_length)
        return submit_or_429(
            runner,
            MERGING,
            params={"model": batch.model},
            arrays={
                "embeddings": batch.embeddings,
                "speech_lengths": batch.speech_lengths,
                **{name: getattr(batch, name) for name in MERGING_CONDITION_ARRAYS},
            },
            request_id=request_id,
            correlation_id=correlation_id,
        )

    add_json_task_route(
        router,
        tasks,
        TECHNOLOGY,
        accept,
        request_model=VoiceprintsRequest,
        summary="Start a voiceprint merge (voxmatch addition)",
        description=(
            "Not part of SPE4's REST API (Phonexia offers merging over gRPC only). Merge 1 to"
            " `max_list_length` base64 voiceprints of one speaker and one model into one: the"
            " speech-length-weighted mean of their embeddings, close to the voiceprint of the"
            " concatenated audio. The result is"
            ' `{"voiceprint": base64, "speech_length": seconds, "model": name, "condition":'
            ' "wideband" | "narrowband", "bandwidth_hz": Hz}`, where speech_length is the sum'
            " of the inputs', the condition is narrowband if any input with speech is, and"
            " bandwidth_hz is the smallest measured (0: none was). Voiceprints of no speech"
            " weigh nothing; if all are empty, so is the result. A bad voiceprint, or"
            " voiceprints of different models, is a 422 naming the index."
        ),
    )
    add_task_routes(router, tasks, TECHNOLOGY, MERGING, render_result)
    return router
