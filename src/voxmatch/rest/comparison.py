"""SPE4 voiceprint comparison: POST two lists of voiceprints, poll for the score matrix."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import msgspec
import numpy.typing as npt
from fastapi import APIRouter

from voxmatch.calibration_profiles import (
    ProfileError,
    ProfileLibrary,
    UnknownProfileError,
    calibration_to_json,
)
from voxmatch.config import Settings
from voxmatch.request_checks import (
    MAX_TOP_K,
    RequestError,
    check_comparison_lists,
    check_top_k_comparison,
)
from voxmatch.rest.bodies import body_error, decode_body, decode_voiceprints
from voxmatch.rest.errors import validation_error
from voxmatch.rest.schemas import ComparisonRequest
from voxmatch.rest.tasks import TaskApi, add_json_task_route, add_task_routes, submit_or_429
from voxmatch.tasks import COMPARISON, JsonObject, TaskRecord

TECHNOLOGY = "speaker-identification-voiceprint-comparison"

log = logging.getLogger("voxmatch.rest")


class ComparisonBody(msgspec.Struct):
    """The body as it is decoded; schemas.ComparisonRequest shows it in OpenAPI, and a test
    keeps the two the same (tests/rest/test_request_schemas.py)."""

    voiceprints_a: list[str]
    voiceprints_b: list[str]
    calibration: str | None = None
    top_k: int | None = None


_decoder = msgspec.json.Decoder(ComparisonBody)


def render_result(result: JsonObject, arrays: Mapping[str, npt.NDArray[Any]]) -> dict[str, Any]:
    if "k" in result:
        # A top_k comparison stores its best matches as one structured array (see
        # tasks.jobs.TOP_K_DTYPE), so that its .npy file holds indices and scores together.
        best = arrays["scores"]
        return {
            "top_k": {
                "rows_count": result["rows_count"],
                "k": result["k"],
                "indices": best["index"].reshape(-1),
                "scores": best["score"].reshape(-1),
            }
        }
    return {
        "scores": {
            "rows_count": result["rows_count"],
            "columns_count": result["columns_count"],
            "values": arrays["scores"].reshape(-1),
        }
    }


def _profile_calibration(library: ProfileLibrary, name: str, model: str) -> JsonObject:
    """The task params that fix the named profile's calibration: the calibration itself, not
    its name, so that the task scores the same after a restart whatever happens to the file."""
    location: list[str | int] = ["body", "calibration"]
    try:
        profile = library.find(name)
        profile.check_model(model)
    except UnknownProfileError as error:
        raise validation_error(location, str(error), "calibration.unknown-profile") from None
    except ProfileError as error:
        log.warning("calibration profile %r in %s: %s", name, library.folder, error)
        raise validation_error(location, str(error), "calibration.unusable-profile") from None
    return {
        "calibration_profile": profile.name,
        "calibration": calibration_to_json(profile.calibration),
    }


def comparison_router(settings: Settings, tasks: TaskApi) -> APIRouter:
    runner = tasks.runner
    router = APIRouter(tags=["Voiceprint comparison"])
    profiles = ProfileLibrary(settings.calibration_profiles)

    def accept(body: bytes, request_id: str, correlation_id: str) -> TaskRecord:
        started = time.perf_counter()
        parsed = decode_body(_decoder, body)
        list_a, list_b = parsed.voiceprints_a, parsed.voiceprints_b
        profile_name, top_k = parsed.calibration, parsed.top_k
        del parsed
        try:
            if top_k is None:
                check_comparison_lists(
                    len(list_a), len(list_b), settings.max_list_length, settings.max_matrix_size
                )
            else:
                check_top_k_comparison(
                    len(list_a),
                    len(list_b),
                    top_k,
                    settings.max_list_length,
                    settings.max_top_k_scores,
                )
        except RequestError as error:
            raise body_error(error) from None
        batch_a = decode_voiceprints("voiceprints_a", list_a)
        batch_b = decode_voiceprints("voiceprints_b", list_b, model=batch_a.model)
        del list_a, list_b
        calibration = (
            {}
            if profile_name is None
            else _profile_calibration(profiles, profile_name, batch_a.model)
        )
        decoded = time.perf_counter()
        record = submit_or_429(
            runner,
            COMPARISON,
            params={
                "model": batch_a.model,
                "rows": "b",
                **calibration,
                **({} if top_k is None else {"top_k": top_k}),
            },
            arrays={
                "a": batch_a.embeddings,
                "a_conditions": batch_a.conditions,
                "a_speech_lengths": batch_a.speech_lengths,
                "b": batch_b.embeddings,
                "b_conditions": batch_b.conditions,
                "b_speech_lengths": batch_b.speech_lengths,
            },
            request_id=request_id,
            correlation_id=correlation_id,
        )
        log.debug(
            "comparison %d x %d: decoded in %.1f ms, stored in %.1f ms",
            len(batch_a),
            len(batch_b),
            1000 * (decoded - started),
            1000 * (time.perf_counter() - decoded),
        )
        return record

    add_json_task_route(
        router,
        tasks,
        TECHNOLOGY,
        accept,
        request_model=ComparisonRequest,
        summary="Start a voiceprint comparison",
        description=(
            "Compare every voiceprint of `voiceprints_a` with every voiceprint of"
            " `voiceprints_b`. Each list holds 1 to `max_list_length` base64 voiceprints, and"
            " len(a) x len(b) must not exceed `max_matrix_size`. The result matrix has"
            " `rows_count` = len(voiceprints_b), `columns_count` = len(voiceprints_a), and"
            " values[r * columns_count + c] = score(voiceprints_a[c], voiceprints_b[r]);"
            " scores are calibrated log-likelihood ratios. A bad voiceprint is a 422 naming"
            " its list and index. voxmatch addition: `calibration` names a calibration profile"
            " (of `calibration_profiles_dir`, fitted for the voiceprints' model by `voxmatch"
            " calibrate`) to use instead of the model's shipped calibration; an unknown or"
            ' unusable profile is a 422 at `["body", "calibration"]`. voxmatch addition:'
            f" `top_k` (1 to {MAX_TOP_K}) asks instead, for each voiceprint of `voiceprints_b`,"
            " for the k = min(top_k, len(a)) best voiceprints of `voiceprints_a`, best first:"
            ' the result is `{"top_k": {"rows_count", "k", "indices", "scores"}}` with'
            " indices[r * k + j] the 0-based index in voiceprints_a of the j-th best match of"
            " voiceprints_b[r] and scores[r * k + j] its score; len(a) x len(b) may then reach"
            " `max_top_k_scores` instead of `max_matrix_size`; as .npy, the result is one"
            " rows_count x k array with the fields `index` (int32) and `score` (float32). See"
            " docs/rest-api.md."
        ),
    )
    add_task_routes(router, tasks, TECHNOLOGY, COMPARISON, render_result, npy_array="scores")
    return router
