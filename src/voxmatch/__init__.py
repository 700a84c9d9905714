"""voxmatch: open speaker identification.

The public Python surface; everything else is an implementation module.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from voxmatch._version import __version__
from voxmatch.models.registry import Calibration, ModelDescription, describe
from voxmatch.scoring import score_matrix
from voxmatch.voiceprint import Voiceprint, VoiceprintBatch, VoiceprintError


def compare(
    voiceprints_a: Sequence[Voiceprint] | VoiceprintBatch,
    voiceprints_b: Sequence[Voiceprint] | VoiceprintBatch,
) -> npt.NDArray[np.float32]:
    """Calibrated LLR scores with scores[i, j] = LLR(voiceprints_a[i], voiceprints_b[j]).

    Note the orientation: rows follow `voiceprints_a`, as in the gRPC API. The SPE4 REST result
    is the transpose (its rows follow voiceprints_b).
    """
    batch_a = VoiceprintBatch.coerce(voiceprints_a)
    batch_b = VoiceprintBatch.coerce(voiceprints_b)
    if batch_a.model != batch_b.model:
        raise VoiceprintError(
            0,
            "mixed-models",
            f"voiceprints of model {batch_b.model!r} cannot be compared with voiceprints of"
            f" model {batch_a.model!r}",
        )
    calibration = describe(batch_a.model).calibration
    return score_matrix(batch_a.embeddings, batch_b.embeddings, calibration)


__all__ = [
    "Calibration",
    "ModelDescription",
    "Voiceprint",
    "VoiceprintBatch",
    "VoiceprintError",
    "__version__",
    "compare",
]
