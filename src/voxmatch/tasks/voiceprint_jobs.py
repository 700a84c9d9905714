"""Task kinds on voiceprints alone: conversion to vector voiceprints, and merging.

The REST layer decodes and checks the voiceprints before it accepts a task, so a task's inputs
are already one model's embeddings: `embeddings` (N x D float32), and for merging also
`speech_lengths` (N float32) and the inputs' `conditions` (N uint8), `bandwidths` and `snrs`
(N float32), which the merged voiceprint's condition comes from. Params: {"model": name}.
"""

from __future__ import annotations

import numpy as np

from voxmatch.merging import merge_voiceprints
from voxmatch.tasks.kinds import FieldError, Handler, TaskContext, TaskOutcome, TaskRejected
from voxmatch.vectors import vector_voiceprints
from voxmatch.voiceprint import VoiceprintBatch, VoiceprintError

CONVERSION = "conversion"
MERGING = "merging"


MERGING_CONDITION_ARRAYS = ("conditions", "bandwidths", "snrs")
"""What a merging task stores of its inputs' conditions, named as `VoiceprintBatch` names them."""


def _batch(context: TaskContext, with_speech_lengths: bool) -> VoiceprintBatch:
    embeddings = context.array("embeddings")
    if not with_speech_lengths:
        # Vectors depend on the embeddings alone.
        return VoiceprintBatch(
            embeddings, np.zeros(len(embeddings), dtype=np.float32), context.params["model"]
        )
    try:
        conditions = {name: context.array(name) for name in MERGING_CONDITION_ARRAYS}
    except FileNotFoundError:
        # Accepted by a version that stored no conditions, and recovered by this one: its
        # voiceprints were all version 1 (wideband, bandwidth not measured): the defaults.
        conditions = {}
    return VoiceprintBatch(
        embeddings, context.array("speech_lengths"), context.params["model"], **conditions
    )


def convert(context: TaskContext) -> TaskOutcome:
    """Result {"count", "dim", "model"}; array `vectors` (zero rows: voiceprints of no speech)."""
    batch = _batch(context, with_speech_lengths=False)
    vectors = vector_voiceprints(batch)
    return TaskOutcome(
        result={"count": len(batch), "dim": int(vectors.shape[1]), "model": batch.model},
        arrays={"vectors": vectors},
    )


def merge(context: TaskContext) -> TaskOutcome:
    """Result {"voiceprint" (base64), "speech_length", "model", "condition", "bandwidth"}."""
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
            "condition": merged.condition,
            "bandwidth": merged.bandwidth,
        }
    )


def voiceprint_handlers() -> dict[str, Handler]:
    return {CONVERSION: convert, MERGING: merge}
