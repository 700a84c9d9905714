"""Vector voiceprints: unit-length embeddings for vector databases (SPE4 voiceprint conversion).

Every score is `scale * cos + offset` with a positive scale (the registry refuses any other), and
the cosine of two embeddings is the dot product of their unit vectors. So the dot product (or
the cosine distance a vector database computes) of two vector voiceprints orders pairs exactly
as their LLR does: a database search by dot product finds the same best matches as a comparison.

The vectors are computed by `scoring.unit_rows`, the very normalisation the comparison uses, so
`scale * dot + offset` reproduces the comparison's score up to float32 rounding.

A voiceprint made from no speech has no direction: its LLR against anything is 0 by definition,
which no unit vector can reproduce. Its row here is the zero vector, and interfaces render it as
an empty vector, as Phonexia's gRPC API documents ("empty if the voiceprint holds no speech"),
so that it cannot be mistaken for a vector and land in a database search.

Unlike Phonexia's 128-float vectors, a vector voiceprint has the size of the model's embedding
(192 for the default model).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from voxmatch.scoring import unit_rows
from voxmatch.voiceprint import Voiceprint, VoiceprintBatch

FloatMatrix = npt.NDArray[np.float32]


def vector_voiceprints(voiceprints: VoiceprintBatch | Sequence[Voiceprint]) -> FloatMatrix:
    """Unit vectors, one row per voiceprint in order; the zero row for a voiceprint of no speech.

    Raises VoiceprintError (reason `mixed-models`) for a list of voiceprints of several models.
    """
    vectors, _ = unit_rows(VoiceprintBatch.coerce(voiceprints).embeddings)
    return vectors


def has_speech(vectors: FloatMatrix) -> npt.NDArray[np.bool_]:
    """Which rows of `vector_voiceprints` output are real vectors (the rest render as empty)."""
    return np.asarray(vectors).any(axis=1).reshape(-1)


def vector_rows(vectors: FloatMatrix) -> list[FloatMatrix]:
    """One array per voiceprint, of length 0 for a voiceprint of no speech.

    Rows are views, not Python floats: orjson (OPT_SERIALIZE_NUMPY) writes them as JSON lists
    without a Python loop over the values.
    """
    empty = np.zeros(0, dtype=np.float32)
    rows = list(vectors)
    for index in np.flatnonzero(~has_speech(vectors)).tolist():
        rows[index] = empty
    return rows
