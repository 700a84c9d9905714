"""The extraction task: a stored upload in, one voiceprint per channel out."""

from __future__ import annotations

from typing import Any

from voxmatch.audio import AudioError, TimeRange
from voxmatch.shared_extractor import SharedExtractor
from voxmatch.tasks.runner import Handler, TaskContext, TaskOutcome, TaskRejected, WorkDone
from voxmatch.vectors import vector_rows, vector_voiceprints
from voxmatch.voiceprint import VoiceprintBatch

EXTRACTION = "extraction"


def extraction_handler(extractor: SharedExtractor, max_audio_seconds: float) -> Handler:
    """Params: channel_mode ("split" | "mix"), channels (list of ints or None),
    include_vector_voiceprint (bool), and optionally max_speech_length, start, end (seconds)."""

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
                [{"location": ["file"], "message": str(error), "type": "media.invalid"}],
            ) from None
        voiceprints = [result.extraction.voiceprint for result in results]
        vectors = (
            vector_rows(vector_voiceprints(VoiceprintBatch.of(voiceprints)))
            if params["include_vector_voiceprint"]
            else None
        )
        channels: list[dict[str, Any]] = []
        for index, result in enumerate(results):
            voiceprint = result.extraction.voiceprint
            channel: dict[str, Any] = {
                "channel_number": result.channel_number,
                "voiceprint": voiceprint.to_base64(),
                "speech_length": round(voiceprint.speech_length, 3),
                "model": voiceprint.model,
            }
            if vectors is not None:
                channel["vector_voiceprint"] = vectors[index].tolist()
            channels.append(channel)
        work = WorkDone(
            audio_seconds=sum(result.extraction.processed_seconds for result in results),
            speech_seconds=sum(result.extraction.speech_length for result in results),
        )
        return TaskOutcome(result={"channels": channels}, work=work)

    return extract
