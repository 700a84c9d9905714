"""Score-normalisation statistics of embeddings against a cohort of other speakers.

Adaptive symmetric normalisation (AS-norm) rescales the score of a pair by how each side scores
against a cohort of other speakers: the mean and standard deviation of its top-N cosines
against the cohort. Those statistics depend on one voiceprint and the cohort only, so they are
computed once, at extraction, and kept in the voiceprint (format version 2): a 50,000 x 20
comparison then never pays a 50,000 x cohort product. Whether normalisation is applied to
scores, and with which cohort, is decided elsewhere; here are only the statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


def cohort_statistics(
    embeddings: npt.ArrayLike, cohort_unit_embeddings: npt.ArrayLike, top_n: int
) -> tuple[FloatArray, FloatArray]:
    """(means, stds): for each embedding (a row; any length), the mean and the (population)
    standard deviation of its `top_n` largest cosines against the cohort's unit-length rows.

    An all-zero embedding (the empty voiceprint) gets 0 and 0, which a voiceprint reads as
    "not computed"; so does an embedding whose top cosines are all equal (no spread to scale
    by).
    """
    rows = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
    cohort = np.atleast_2d(np.asarray(cohort_unit_embeddings, dtype=np.float64))
    if rows.shape[1] != cohort.shape[1]:
        raise ValueError(f"embeddings have {rows.shape[1]} values, the cohort's {cohort.shape[1]}")
    if not 2 <= top_n <= cohort.shape[0]:
        raise ValueError(
            f"top_n must be between 2 and the cohort size {cohort.shape[0]}, got {top_n}"
        )
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit = np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)
    cosines = unit @ cohort.T
    top = np.partition(cosines, cohort.shape[0] - top_n, axis=1)[:, -top_n:]
    means = top.mean(axis=1)
    stds = top.std(axis=1)
    computed = (norms[:, 0] > 0) & (stds > 0)
    return (
        np.where(computed, means, 0.0).astype(np.float32),
        np.where(computed, stds, 0.0).astype(np.float32),
    )


@dataclass(frozen=True, eq=False)
class Cohort:
    """Embeddings of other speakers (one model's), kept at unit length, and the N of top-N."""

    unit_embeddings: FloatArray
    top_n: int

    @classmethod
    def of(cls, embeddings: npt.ArrayLike, top_n: int) -> Cohort:
        """A cohort of raw embeddings (rows); rows of zeros (no speech) are left out."""
        rows = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        keep = norms[:, 0] > 0
        unit = (rows[keep] / norms[keep]).astype(np.float32)
        if not 2 <= top_n <= unit.shape[0]:
            raise ValueError(
                f"top_n must be between 2 and the cohort size {unit.shape[0]}, got {top_n}"
            )
        unit.setflags(write=False)
        return cls(unit, top_n)

    @property
    def embedding_dim(self) -> int:
        return int(self.unit_embeddings.shape[1])

    def statistics(self, embeddings: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """`cohort_statistics` of `embeddings` against this cohort."""
        return cohort_statistics(embeddings, self.unit_embeddings, self.top_n)
