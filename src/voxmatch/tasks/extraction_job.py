"""The extraction task: a stored upload in, one voiceprint per channel out."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from voxmatch.audio import AudioError, TimeRange
from voxmatch.bulk_extraction import ExtractionOptions
from voxmatch.config import Settings
from voxmatch.extraction import ChannelExtraction
from voxmatch.shared_extractor import SharedExtractor
from voxmatch.tasks.kinds import (
    FieldError,
    Handler,
    TaskContext,
    TaskOutcome,
    TaskRejected,
    WorkDone,
)
from voxmatch.vectors import vector_voiceprints
from voxmatch.voiceprint import VoiceprintBatch

if TYPE_CHECKING:
    from voxmatch.cluster_extraction import ClusterExtraction

EXTRACTION = "extraction"

log = logging.getLogger(__name__)


def extraction_handler(
    extractor: SharedExtractor, max_audio_seconds: float, on_cluster: Settings | None = None
) -> Handler:
    """With `on_cluster` (settings whose `ray_address` is set), each file is extracted by an
    actor of that cluster (`extraction_actors`), which loads the model of those settings, from
    the server's driver process (`cluster_extraction`).

    Params: channel_mode ("split" | "mix"), channels (list of ints or None),
    include_vector_voiceprint (bool), and optionally max_speech_length, start, end (seconds).

    Result {"channels": [{"channel_number", "voiceprint" (base64), "speech_length" (seconds,
    as measured), "model", "condition" (code), "bandwidth" (Hz), "speech_segments" ([start,
    end] seconds)}], "vectors": bool}; when
    "vectors" is true, the array `vectors`
    holds the channels' vector voiceprints in order (a zero row for a channel of no speech).
    """

    on_the_cluster = None
    if on_cluster is not None:
        from voxmatch.cluster_extraction import ClusterExtraction

        on_the_cluster = ClusterExtraction(on_cluster)

    def extract(context: TaskContext) -> TaskOutcome:
        params = context.params
        if on_the_cluster is not None:
            results = _extract_on_cluster(context, on_the_cluster, max_audio_seconds)
        else:
            results = _extract_here(context, extractor, max_audio_seconds)
        channels = [
            {
                "channel_number": result.channel_number,
                "voiceprint": result.extraction.voiceprint.to_base64(),
                "speech_length": result.extraction.voiceprint.speech_length,
                "model": result.extraction.voiceprint.model,
                "condition": result.extraction.voiceprint.condition,
                "bandwidth": result.extraction.voiceprint.bandwidth,
                "speech_segments": [list(pair) for pair in result.extraction.speech_segments],
            }
            for result in results
        ]
        include_vectors = bool(params["include_vector_voiceprint"])
        arrays = (
            {
                "vectors": vector_voiceprints(
                    VoiceprintBatch.of([result.extraction.voiceprint for result in results])
                )
            }
            if include_vectors
            else {}
        )
        work = WorkDone(
            audio_seconds=sum(result.extraction.processed_seconds for result in results),
            speech_seconds=sum(result.extraction.speech_length for result in results),
        )
        return TaskOutcome(
            result={"channels": channels, "vectors": include_vectors}, arrays=arrays, work=work
        )

    return extract


def _extract_here(
    context: TaskContext, extractor: SharedExtractor, max_audio_seconds: float
) -> list[ChannelExtraction]:
    params = context.params
    try:
        # Streamed from the stored file, only the channels asked for: memory stays the
        # same whatever the length of the recording.
        return extractor.get().extract_source(
            context.file("audio"),
            time_range=TimeRange(params.get("start"), params.get("end")),
            channel_mode=params["channel_mode"],
            channels=params["channels"],
            max_speech_seconds=params.get("max_speech_length"),
            max_duration=max_audio_seconds,
            should_stop=context.should_stop,
        )
    except AudioError as error:
        raise _rejected(str(error)) from None


def _extract_on_cluster(
    context: TaskContext, on_the_cluster: ClusterExtraction, max_audio_seconds: float
) -> list[ChannelExtraction]:
    """The stored file's bytes go to an actor through the object store (the nodes need not
    share this disk); they are at most `max_upload_bytes`, the limit of the upload."""
    params = context.params
    options = ExtractionOptions(
        channel_mode=params["channel_mode"],
        channels=None if params["channels"] is None else tuple(params["channels"]),
        time_range=TimeRange(params.get("start"), params.get("end")),
        max_speech_seconds=params.get("max_speech_length"),
        max_duration=max_audio_seconds,
    )

    def retrying(error_name: str) -> None:
        log.warning(
            "task %s: its extraction actor was lost with its node (%s); another takes the file",
            context.record.id,
            error_name,
        )

    def sent() -> None:
        # Which tasks are on the cluster, for an operator (and the tests' point of reference).
        log.info("task %s: its file is on a cluster actor", context.record.id)

    outcome = on_the_cluster.extract(
        context.file("audio"), options, context.should_stop, retrying, sent
    )
    if outcome.media_invalid:
        raise _rejected(outcome.problem or "")
    if outcome.problem is not None:
        raise RuntimeError(outcome.problem)
    return list(outcome.channels)


def _rejected(problem: str) -> TaskRejected:
    return TaskRejected(
        f"The media file cannot be used: {problem}",
        [FieldError(("file",), "media.invalid", problem)],
    )
