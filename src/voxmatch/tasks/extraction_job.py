"""The extraction task: a stored upload in, one voiceprint per channel out."""

from __future__ import annotations

from voxmatch.audio import AudioError, TimeRange
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

EXTRACTION = "extraction"


def extraction_handler(extractor: SharedExtractor, max_audio_seconds: float) -> Handler:
    """Params: channel_mode ("split" | "mix"), channels (list of ints or None),
    include_vector_voiceprint (bool), and optionally max_speech_length, start, end (seconds).

    Result {"channels": [{"channel_number", "voiceprint" (base64), "speech_length" (seconds,
    as measured), "model", "condition" (code), "bandwidth" (Hz), "speech_segments" ([start,
    end] seconds)}], "vectors": bool}; when
    "vectors" is true, the array `vectors`
    holds the channels' vector voiceprints in order (a zero row for a channel of no speech).
    """

    def extract(context: TaskContext) -> TaskOutcome:
        params = context.params
        try:
            # Streamed from the stored file, only the channels asked for: memory stays the
            # same whatever the length of the recording.
            results = extractor.get().extract_source(
                context.file("audio"),
                time_range=TimeRange(params.get("start"), params.get("end")),
                channel_mode=params["channel_mode"],
                channels=params["channels"],
                max_speech_seconds=params.get("max_speech_length"),
                max_duration=max_audio_seconds,
                should_stop=context.should_stop,
            )
        except AudioError as error:
            raise TaskRejected(
                f"The media file cannot be used: {error}",
                [FieldError(("file",), "media.invalid", str(error))],
            ) from None
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
