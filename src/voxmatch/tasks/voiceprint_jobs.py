"""Task kinds on voiceprints alone: conversion to vector voiceprints, and merging.

The REST layer decodes and checks the voiceprints before it accepts a task, so a task's inputs
are already one model's embeddings: `embeddings` (N x D float32), and for merging also
`speech_lengths` (N float32). Params: {"model": name}.
"""

from __future__ import annotations

import numpy as np

from voxmatch.merging import merge_voiceprints
from voxmatch.tasks.kinds import FieldError, Handler, TaskContext, TaskOutcome, TaskRejected
from voxmatch.vectors import vector_voiceprints
from voxmatch.voiceprint import VoiceprintBatch, VoiceprintError

CONVERSION = "conversion"
MERGING = "merging"


def _batch(context: TaskContext, with_speech_lengths: bool) -> VoiceprintBatch:
    embeddings = context.array("embeddings")
    speech_lengths = (
        context.array("speech_lengths")
        if with_speech_lengths
        else np.zeros(len(embeddings), dtype=np.float32)  # vectors do not depend on it
    )
    return VoiceprintBatch(embeddings, speech_lengths, context.params["model"])


def convert(context: TaskContext) -> TaskOutcome:
    """Result {"count", "dim", "model"}; array `vectors` (zero rows: voiceprints of no speech)."""
    batch = _batch(context, with_speech_lengths=False)
    vectors = vector_voiceprints(batch)
    return TaskOutcome(
        result={"count": len(batch), "dim": int(vectors.shape[1]), "model": batch.model},
        arrays={"vectors": vectors},
    )


def merge(context: TaskContext) -> TaskOutcome:
    """Result {"voiceprint" (base64), "speech_length", "model"}."""
    try:
        merged = merge_voiceprints(_batch(context, with_speech_lengths=True))
    except VoiceprintError as error:
        # Valid inputs can still merge into no valid voiceprint (speech lengths summing past
        # what a voiceprint can hold).
        raise TaskRejected(
            f"The voiceprints cannot be merged: {error}",
            [FieldError(("voiceprints",), error.reason, str(error))],
        ) from None
    return TaskOutcome(
        result={
            "voiceprint": merged.to_base64(),
            "speech_length": merged.speech_length,
            "model": merged.model,
        }
    )


def voiceprint_handlers() -> dict[str, Handler]:
    return {CONVERSION: convert, MERGING: merge}
