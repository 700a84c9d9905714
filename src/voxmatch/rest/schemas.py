"""Pydantic models that document the REST API in its OpenAPI document.

Request bodies on the hot paths are decoded with msgspec, not with these models; the models
exist so that /openapi.json and /docs describe exactly what the handlers accept and return.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from voxmatch.request_checks import MAX_TOP_K
from voxmatch.tasks import TaskState


class TaskInfo(BaseModel):
    task_id: str = Field(description="UUID of the task.")
    state: TaskState


class TaskAccepted(BaseModel):
    task: TaskInfo


class ErrorDetail(BaseModel):
    location: list[str | int] = Field(
        description='Where the problem is, e.g. ["body", "voiceprints_a", 17].'
    )
    message: str
    type: str
    context: dict[str, str | int | float | bool] | None = None


class ErrorBody(BaseModel):
    type: str = Field(description="Error type, e.g. request.validation-error.")
    message: str
    detail: list[ErrorDetail] = Field(default_factory=list)


class TaskResponse(BaseModel):
    task: TaskInfo
    result: dict[str, Any] | None = None
    error: ErrorBody | None = None


class ComparisonRequest(BaseModel):
    voiceprints_a: list[str] = Field(
        min_length=1, description="Base64 voiceprints; they are the columns of the result."
    )
    voiceprints_b: list[str] = Field(
        min_length=1, description="Base64 voiceprints; they are the rows of the result."
    )
    calibration: str | None = Field(
        None,
        description="voxmatch addition: the name of a calibration profile (in"
        " `calibration_profiles_dir`, fitted for the voiceprints' model) to score with; absent"
        " or null: the model's shipped calibration.",
    )
    top_k: int | None = Field(
        None,
        description=f"voxmatch addition: 1 to {MAX_TOP_K}. Given, the result holds, for each"
        " voiceprint of `voiceprints_b`, only the k = min(top_k, len(voiceprints_a)) best"
        " voiceprints of `voiceprints_a` (indices and scores, best first) instead of the"
        " matrix, and len(a) x len(b) may reach `max_top_k_scores`; absent or null: the whole"
        " matrix.",
    )


class VoiceprintsRequest(BaseModel):
    voiceprints: list[str] = Field(
        min_length=1, description="Base64 voiceprints, all made by the same model."
    )


class SystemInfo(BaseModel):
    version: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "The request could not be parsed (`request.invalid`).",
        404: "No such task: wrong id, or the task expired (`resource.not-found`).",
        405: "Wrong HTTP method (`method.invalid`).",
        413: "The body is larger than allowed (`request.size-limit-exceeded`).",
        422: "The request data failed validation (`request.validation-error`).",
        429: "The task queue is full; see `retry-after` (`request.rate-limit-exceeded`).",
        431: "The request line and headers are over `max_header_bytes` or `max_header_count`"
        " (`request.header-fields-too-large`).",
        507: "The server's disk is full; the task was not accepted (`storage.capacity-exceeded`).",
    }.items()
}
