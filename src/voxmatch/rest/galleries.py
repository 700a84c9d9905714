"""Speaker galleries over REST (a voxmatch addition to SPE4; contract in docs/galleries.md).

Synchronous: an enrolment or deletion answers once it is durable (`voxmatch.galleries`), a
search answers with its matches. Bodies are decoded with msgspec and the voiceprint helpers
every other route uses, in a worker thread; the pydantic models below only document them.
With API keys on, galleries belong to the key that created them: each key sees its own names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt
import orjson
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from voxmatch import request_checks
from voxmatch._galleries_api import index_settings, open_galleries
from voxmatch.config import Settings
from voxmatch.galleries import (
    MAX_METADATA_BYTES,
    MAX_TOP_K,
    Enrolment,
    Gallery,
    GalleryError,
    UnknownGallery,
    UnknownSpeaker,
)
from voxmatch.galleries.store import MAX_SPEAKER_ID_LENGTH, check_speaker_id, encode_metadata
from voxmatch.request_checks import RequestError
from voxmatch.rest.auth import requester_var
from voxmatch.rest.bodies import body_error, decode_body, decode_voiceprints
from voxmatch.rest.errors import ApiError, detail_item, validation_error, voiceprint_error
from voxmatch.rest.schemas import ERROR_RESPONSES, ErrorBody
from voxmatch.voiceprint import VoiceprintBatch, VoiceprintError, decode_base64_batch

PREFIX = "/api/galleries"
MAX_PAGE = 1000

ResultT = TypeVar("ResultT")

# --- bodies as decoded (the models below show them in OpenAPI; a test keeps them the same) --


class GalleryBody(msgspec.Struct, forbid_unknown_fields=True):
    model: str | None = None


class SpeakerBody(msgspec.Struct, forbid_unknown_fields=True):
    voiceprints: Annotated[list[str], msgspec.Meta(min_length=1)]
    metadata: dict[str, Any] | None = None


class AddedVoiceprintsBody(msgspec.Struct, forbid_unknown_fields=True):
    voiceprints: Annotated[list[str], msgspec.Meta(min_length=1)]


class BulkSpeakerBody(msgspec.Struct, forbid_unknown_fields=True):
    speaker_id: str
    voiceprints: Annotated[list[str], msgspec.Meta(min_length=1)]
    metadata: dict[str, Any] | None = None


class BulkBody(msgspec.Struct, forbid_unknown_fields=True):
    speakers: Annotated[list[BulkSpeakerBody], msgspec.Meta(min_length=1)]


class SearchBody(msgspec.Struct, forbid_unknown_fields=True):
    voiceprints: Annotated[list[str], msgspec.Meta(min_length=1)]
    top_k: Annotated[int, msgspec.Meta(ge=1, le=MAX_TOP_K)] = 10
    prior_in_gallery: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5


_gallery_decoder = msgspec.json.Decoder(GalleryBody)
_speaker_decoder = msgspec.json.Decoder(SpeakerBody)
_voiceprints_decoder = msgspec.json.Decoder(AddedVoiceprintsBody)
_bulk_decoder = msgspec.json.Decoder(BulkBody)
_search_decoder = msgspec.json.Decoder(SearchBody)

# --- the OpenAPI description ---------------------------------------------------------------
# The request models forbid unknown fields, as the decoders do.


class GalleryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None, description="Model of the gallery's voiceprints; default: `default_model`."
    )


class GalleryDescription(BaseModel):
    gallery: str
    model: str
    speakers_count: int
    voiceprints_count: int


class GalleryList(BaseModel):
    galleries: list[GalleryDescription]


class SpeakerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    voiceprints: list[str] = Field(
        min_length=1, description="Base64 voiceprints of the speaker, of the gallery's model."
    )
    metadata: dict[str, Any] | None = Field(
        None, description=f"Any JSON object of at most {MAX_METADATA_BYTES} bytes, kept as given."
    )


class VoiceprintsToAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    voiceprints: list[str] = Field(min_length=1, description="Base64 voiceprints to add.")


class SpeakerDescription(BaseModel):
    speaker_id: str
    voiceprints_count: int
    speech_length: float = Field(description="Seconds of speech of all its voiceprints.")
    metadata: dict[str, Any] | None


class SpeakerPage(BaseModel):
    speakers: list[SpeakerDescription]
    offset: int
    limit: int
    speakers_count: int = Field(description="Speakers in the gallery, all pages together.")


class BulkSpeaker(BaseModel):
    model_config = ConfigDict(extra="forbid")

    speaker_id: str = Field(max_length=MAX_SPEAKER_ID_LENGTH)
    voiceprints: list[str] = Field(min_length=1)
    metadata: dict[str, Any] | None = None


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    speakers: list[BulkSpeaker] = Field(
        min_length=1, description="At most `gallery_max_bulk_speakers` speakers."
    )


class BulkResult(BaseModel):
    enrolled: int = Field(description="Speakers enrolled by the request.")
    replaced: int = Field(description="Of those, speakers that were enrolled before.")


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    voiceprints: list[str] = Field(min_length=1, description="Base64 probe voiceprints.")
    top_k: int = Field(10, ge=1, le=MAX_TOP_K, description="Matches per probe.")
    prior_in_gallery: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Prior probability that a probe's speaker is enrolled at all, spread"
        " evenly over the enrolled speakers; it makes `probability`.",
    )


class SearchMatch(BaseModel):
    speaker_id: str
    score: float = Field(description="Calibrated LLR of the probe against the speaker.")
    probability: float = Field(description="Posterior that the probe is this speaker.")


class SearchResult(BaseModel):
    matches: list[SearchMatch] = Field(description="Best first.")


class SearchResponse(BaseModel):
    results: list[SearchResult] = Field(description="One per probe, in request order.")


_RESPONSES: dict[int | str, dict[str, Any]] = {
    **{status: ERROR_RESPONSES[status] for status in (400, 405, 413, 422, 431)},
    404: {"model": ErrorBody, "description": "No such gallery or speaker (`resource.not-found`)."},
}


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


# --- errors --------------------------------------------------------------------------------


def _gallery_error(error: GalleryError, location: list[str | int]) -> ApiError:
    if isinstance(error, UnknownGallery):
        return ApiError(
            404,
            "Gallery not found.",
            [detail_item(["path", "gallery"], error.message, "resource.not-found")],
        )
    if isinstance(error, UnknownSpeaker):
        return ApiError(
            404,
            "Speaker not found.",
            [detail_item(["path", "speaker_id"], error.message, "resource.not-found")],
        )
    where = [*location, error.index] if error.index is not None else location
    return validation_error(where, error.message, f"gallery.{error.reason}")


def _json(content: object, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def _requester() -> str:
    return requester_var.get() or ""


# --- routes --------------------------------------------------------------------------------


def galleries_router(settings: Settings) -> APIRouter:
    store = open_galleries(settings.data_dir, fsync=settings.fsync, index=index_settings(settings))
    router = APIRouter(tags=["Speaker galleries (voxmatch addition)"])

    def find_gallery(name: str) -> Gallery:
        return store.gallery(name, owner=_requester())

    async def run(work: Callable[[], ResultT], location: list[str | int] | None = None) -> ResultT:
        def guarded() -> ResultT:
            try:
                return work()
            except GalleryError as error:
                raise _gallery_error(error, location or ["body"]) from None

        return await run_in_threadpool(guarded)

    def check_voiceprint_count(field: str, count: int) -> None:
        try:
            request_checks.check_list_length(field, count, settings.max_list_length)
        except RequestError as error:
            raise body_error(error) from None

    @router.put(
        PREFIX + "/{gallery}",
        response_model=GalleryDescription,
        status_code=201,
        responses={**_RESPONSES, 200: {"description": "The gallery existed already."}},
        summary="Create a gallery (voxmatch addition)",
        description="Idempotent: 201 when the gallery is created, 200 when it existed with"
        " that model. The body is optional; a gallery of another model is a 422.",
        openapi_extra={
            "requestBody": {**_body_doc(GalleryRequest)["requestBody"], "required": False}
        },
    )
    async def create_gallery(request: Request, gallery: str) -> Response:
        body = await request.body()

        def create() -> Response:
            parsed = decode_body(_gallery_decoder, body) if body.strip() else GalleryBody()
            try:
                info, created = store.create(
                    gallery, model=parsed.model or settings.default_model, owner=_requester()
                )
            except GalleryError as error:
                where: list[str | int] = (
                    ["body", "model"] if error.reason == "model" else ["path", "gallery"]
                )
                raise _gallery_error(error, where) from None
            return _json(asdict(info), 201 if created else 200)

        return await run(create)

    @router.get(
        PREFIX,
        response_model=GalleryList,
        responses=_RESPONSES,
        summary="List the galleries (voxmatch addition)",
    )
    async def list_galleries() -> Response:
        return await run(
            lambda: _json({"galleries": [asdict(info) for info in store.galleries(_requester())]})
        )

    @router.get(
        PREFIX + "/{gallery}",
        response_model=GalleryDescription,
        responses=_RESPONSES,
        summary="Describe a gallery (voxmatch addition)",
    )
    async def get_gallery(gallery: str) -> Response:
        return await run(lambda: _json(asdict(find_gallery(gallery).info())))

    @router.delete(
        PREFIX + "/{gallery}",
        status_code=204,
        responses=_RESPONSES,
        summary="Delete a gallery and its speakers (voxmatch addition)",
    )
    async def delete_gallery(gallery: str) -> Response:
        await run(lambda: store.delete(gallery, owner=_requester()))
        return Response(status_code=204)

    @router.put(
        PREFIX + "/{gallery}/speakers/{speaker_id}",
        response_model=SpeakerDescription,
        status_code=201,
        responses={**_RESPONSES, 200: {"description": "The speaker was replaced."}},
        summary="Enrol or replace a speaker (voxmatch addition)",
        description="Enrols the speaker with one or more voiceprints (201), or replaces the"
        " voiceprints and metadata of an enrolled speaker (200). The answer comes once the"
        " enrolment is durable.",
        openapi_extra=_body_doc(SpeakerRequest),
    )
    async def put_speaker(request: Request, gallery: str, speaker_id: str) -> Response:
        body = await request.body()

        def enrol() -> Response:
            parsed = decode_body(_speaker_decoder, body)
            check_voiceprint_count("voiceprints", len(parsed.voiceprints))
            target = gallery_and_speaker(gallery, speaker_id)
            try:
                encode_metadata(parsed.metadata)
            except GalleryError as error:
                raise validation_error(
                    ["body", "metadata"], error.message, f"gallery.{error.reason}"
                ) from None
            batch = decode_voiceprints("voiceprints", parsed.voiceprints, model=target.model)
            replaced = target.enrol(Enrolment.one(speaker_id, batch, parsed.metadata))
            return _json(asdict(target.speaker(speaker_id)), 200 if replaced else 201)

        return await run(enrol, ["body", "voiceprints"])

    def gallery_and_speaker(name: str, speaker_id: str) -> Gallery:
        found = find_gallery(name)
        try:
            check_speaker_id(speaker_id)
        except GalleryError as error:
            raise _gallery_error(error, ["path", "speaker_id"]) from None
        return found

    @router.post(
        PREFIX + "/{gallery}/speakers/{speaker_id}/voiceprints",
        response_model=SpeakerDescription,
        responses=_RESPONSES,
        summary="Add voiceprints to an enrolled speaker (voxmatch addition)",
        description="The new recordings are merged into the speaker (speech-length-weighted"
        " mean of all its voiceprints).",
        openapi_extra=_body_doc(VoiceprintsToAdd),
    )
    async def add_voiceprints(request: Request, gallery: str, speaker_id: str) -> Response:
        body = await request.body()

        def add() -> Response:
            parsed = decode_body(_voiceprints_decoder, body)
            check_voiceprint_count("voiceprints", len(parsed.voiceprints))
            target = find_gallery(gallery)
            batch = decode_voiceprints("voiceprints", parsed.voiceprints, model=target.model)
            return _json(asdict(target.add_voiceprints(speaker_id, batch)))

        return await run(add, ["body", "voiceprints"])

    @router.get(
        PREFIX + "/{gallery}/speakers/{speaker_id}",
        response_model=SpeakerDescription,
        responses=_RESPONSES,
        summary="Describe an enrolled speaker (voxmatch addition)",
    )
    async def get_speaker(gallery: str, speaker_id: str) -> Response:
        return await run(lambda: _json(asdict(find_gallery(gallery).speaker(speaker_id))))

    @router.delete(
        PREFIX + "/{gallery}/speakers/{speaker_id}",
        status_code=204,
        responses=_RESPONSES,
        summary="Remove a speaker (voxmatch addition)",
        description="Answers once the deletion is durable; no later search names the speaker.",
    )
    async def delete_speaker(gallery: str, speaker_id: str) -> Response:
        await run(lambda: find_gallery(gallery).delete_speaker(speaker_id))
        return Response(status_code=204)

    @router.get(
        PREFIX + "/{gallery}/speakers",
        response_model=SpeakerPage,
        responses=_RESPONSES,
        summary="Page through the speakers of a gallery (voxmatch addition)",
        description=f"In the order of their ids; `limit` is 1 to {MAX_PAGE}.",
    )
    async def list_speakers(
        gallery: str,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> Response:

        def page() -> Response:
            found = find_gallery(gallery)
            speakers = [asdict(info) for info in found.speakers(offset, limit)]
            return _json(
                {
                    "speakers": speakers,
                    "offset": offset,
                    "limit": limit,
                    "speakers_count": found.info().speakers_count,
                }
            )

        return await run(page)

    @router.post(
        PREFIX + "/{gallery}/speakers",
        response_model=BulkResult,
        responses=_RESPONSES,
        summary="Enrol many speakers at once (voxmatch addition)",
        description="At most `gallery_max_bulk_speakers` speakers and `max_list_length`"
        " voiceprints in all per request; each is enrolled or replaced as PUT of the speaker"
        " does, all of them in one durable step (none when the request is refused).",
        openapi_extra=_body_doc(BulkRequest),
    )
    async def bulk_enrol(request: Request, gallery: str) -> Response:
        body = await request.body()

        def enrol_all() -> Response:
            parsed = decode_body(_bulk_decoder, body)
            try:
                request_checks.check_list_length(
                    "speakers", parsed.speakers, settings.gallery_max_bulk_speakers
                )
            except RequestError as error:
                raise body_error(error) from None
            counts = [len(speaker.voiceprints) for speaker in parsed.speakers]
            check_voiceprint_count("speakers", sum(counts))
            target = find_gallery(gallery)
            flat = [text for speaker in parsed.speakers for text in speaker.voiceprints]
            batch = _decode_bulk(flat, counts, target.model)
            del flat
            speaker_ids = [speaker.speaker_id for speaker in parsed.speakers]
            try:
                replaced = target.enrol(
                    Enrolment(
                        speaker_ids,
                        batch,
                        _owners(counts),
                        [speaker.metadata for speaker in parsed.speakers],
                    )
                )
            except GalleryError as error:
                location: list[str | int] = ["body", "speakers"]
                if error.index is not None:
                    location.append(error.index)
                    location.append("metadata" if error.reason == "metadata-size" else "speaker_id")
                raise validation_error(location, error.message, f"gallery.{error.reason}") from None
            return _json({"enrolled": len(speaker_ids), "replaced": replaced})

        return await run(enrol_all, ["body", "speakers"])

    @router.post(
        PREFIX + "/{gallery}/search",
        response_model=SearchResponse,
        responses=_RESPONSES,
        summary="Search voices against every enrolled speaker (voxmatch addition)",
        description="For each probe voiceprint, the `top_k` best speakers, best first: `score`"
        " is the calibrated LLR, `probability` the posterior p_s = LR_s (pi / N) /"
        " ((1 - pi) + (pi / N) sum_t LR_t) with pi = `prior_in_gallery` and N the enrolled"
        " speakers. Exact search over every speaker.",
        openapi_extra=_body_doc(SearchRequest),
    )
    async def search(request: Request, gallery: str) -> Response:
        body = await request.body()

        def find() -> Response:
            parsed = decode_body(_search_decoder, body)
            check_voiceprint_count("voiceprints", len(parsed.voiceprints))
            target = find_gallery(gallery)
            probes = decode_voiceprints("voiceprints", parsed.voiceprints, model=target.model)
            results = target.search(
                probes, top_k=parsed.top_k, prior_in_gallery=parsed.prior_in_gallery
            )
            return _json(
                {"results": [{"matches": [asdict(m) for m in matches]} for matches in results]}
            )

        return await run(find, ["body", "voiceprints"])

    return router


def _owners(counts: list[int]) -> npt.NDArray[np.intp]:
    return np.repeat(np.arange(len(counts)), counts)


def _decode_bulk(flat: list[str], counts: list[int], model: str) -> VoiceprintBatch:
    """All the voiceprints of a bulk request in one pass; a bad one is named by its speaker
    and its place in that speaker's list."""
    try:
        return decode_base64_batch(flat, model=model)
    except VoiceprintError as error:
        speaker, place = 0, error.index
        while place >= counts[speaker]:
            place -= counts[speaker]
            speaker += 1
        located = voiceprint_error(error, "speakers")
        located.detail[0]["location"] = ["body", "speakers", speaker, "voiceprints", place]
        raise located from None
