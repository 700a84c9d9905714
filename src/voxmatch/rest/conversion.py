"""SPE4 voiceprint conversion: POST a list of voiceprints, poll for their vector voiceprints.

The result is `{"vector_voiceprints": [[...], [...], ...]}`: one list of floats per input
voiceprint, in input order, named as the gRPC ConvertResponse names them (the SPE4 REST
reference describes the result as a list of vectors but its JSON key is not published). A
voiceprint made from no speech gives `[]`, as the gRPC API documents. See voxmatch.vectors for
what the vectors mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy.typing as npt
from fastapi import APIRouter

from voxmatch.config import Settings
from voxmatch.rest.bodies import decode_voiceprints_body
from voxmatch.rest.schemas import VoiceprintsRequest
from voxmatch.rest.tasks import TaskApi, add_json_task_route, add_task_routes, submit_or_429
from voxmatch.tasks import CONVERSION, JsonObject, TaskRecord
from voxmatch.vectors import vector_rows

TECHNOLOGY = "speaker-identification-voiceprint-conversion"


def render_result(result: JsonObject, arrays: Mapping[str, npt.NDArray[Any]]) -> dict[str, Any]:
    return {"vector_voiceprints": vector_rows(arrays["vectors"])}


def conversion_router(settings: Settings, tasks: TaskApi) -> APIRouter:
    runner = tasks.runner
    router = APIRouter(tags=["Voiceprint conversion"])

    def accept(body: bytes, request_id: str, correlation_id: str) -> TaskRecord:
        batch = decode_voiceprints_body(body, settings.max_list_length)
        return submit_or_429(
            runner,
            CONVERSION,
            params={"model": batch.model},
            arrays={"embeddings": batch.embeddings},
            request_id=request_id,
            correlation_id=correlation_id,
        )

    add_json_task_route(
        router,
        tasks,
        TECHNOLOGY,
        accept,
        request_model=VoiceprintsRequest,
        summary="Start a voiceprint conversion",
        description=(
            "Convert 1 to `max_list_length` base64 voiceprints of one model to vector"
            " voiceprints for vector databases. The result is"
            ' `{"vector_voiceprints": [[float, ...], ...]}`, one unit-length vector per'
            " voiceprint in input order (the model's embedding size, 192 for the default"
            " model); the dot product of two vectors orders pairs exactly as their comparison"
            " score does. A voiceprint of no speech gives `[]`. A bad voiceprint is a 422"
            " naming its index."
        ),
    )
    add_task_routes(router, tasks, TECHNOLOGY, CONVERSION, render_result, npy_array="vectors")
    return router
