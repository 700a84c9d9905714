"""Speaker models: descriptions by name, and (see loading modules) their runnable forms."""

import importlib
from typing import TYPE_CHECKING

from voxmatch.models.registry import (
    CAMPPLUS,
    DEFAULT_MODEL_NAME,
    Calibration,
    ModelDescription,
    UnknownModelError,
    describe,
    known_models,
    register,
)

__all__ = [
    "CAMPPLUS",
    "DEFAULT_MODEL_NAME",
    "Calibration",
    "ModelDescription",
    "UnknownModelError",
    "describe",
    "known_models",
    "register",
]

# The runnable side pulls in onnxruntime, onnx and kaldi-native-fbank; it is imported on first
# use so that reading model descriptions (every `import voxmatch`) stays cheap.
_RUNNABLE = {
    "FbankFrontEnd": "voxmatch.models.features",
    "compute_features": "voxmatch.models.features",
    "SpeakerModel": "voxmatch.models.speaker_model",
    "SpeakerModelError": "voxmatch.models.speaker_model",
    "UNCALIBRATED": "voxmatch.models.speaker_model",
    "load_onnx_speaker_model": "voxmatch.models.speaker_model",
    "load_speaker_model": "voxmatch.models.speaker_model",
}

__all__ += [
    "UNCALIBRATED",
    "FbankFrontEnd",
    "SpeakerModel",
    "SpeakerModelError",
    "compute_features",
    "load_onnx_speaker_model",
    "load_speaker_model",
]

if TYPE_CHECKING:
    from voxmatch.models.features import FbankFrontEnd, compute_features
    from voxmatch.models.speaker_model import (
        UNCALIBRATED,
        SpeakerModel,
        SpeakerModelError,
        load_onnx_speaker_model,
        load_speaker_model,
    )


def __getattr__(name: str) -> object:
    module = _RUNNABLE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
