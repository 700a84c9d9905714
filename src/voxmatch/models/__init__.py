"""Speaker models: descriptions by name, and (see loading modules) their runnable forms."""

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
