"""The extractor of the configured model, loaded once on first use, for every thread.

The server, `voxmatch extract` and the Python API (`voxmatch.extract`) all extract with the
model the settings name (`default_model`, or a user's `model_file`); this module builds that
extractor from `Settings`, without any interface. Loading it can take a while the first time
(the model is fetched, verified and converted into the model cache), so it happens on first use:
the server starts listening at once, and `import voxmatch` loads no model.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

from voxmatch.config import Settings, load_settings
from voxmatch.extraction import Extractor, load_extractor
from voxmatch.models.registry import describe, register
from voxmatch.models.speaker_model import load_onnx_speaker_model
from voxmatch.vad import VoiceActivityDetector


class ModelError(RuntimeError):
    """The configured speaker model cannot be loaded: its settings are wrong, or fetching,
    verifying, converting or loading it failed. The message says which and why."""


class SharedExtractor:
    """Loads the extractor on first use, once, for every thread that needs it.

    The server starts listening at once; the first extraction fetches, verifies and converts
    the model if the cache does not already hold it. A load that fails is tried again by the
    next caller (the network may be back).
    """

    def __init__(self, loader: Callable[[], Extractor]) -> None:
        self._loader = loader
        self._lock = threading.Lock()
        self._extractor: Extractor | None = None

    def get(self) -> Extractor:
        extractor = self._extractor
        if extractor is not None:
            return extractor
        with self._lock:
            if self._extractor is None:
                self._extractor = self._loader()
            return self._extractor

    @property
    def loaded(self) -> bool:
        return self._extractor is not None


def build_extractor(settings: Settings) -> SharedExtractor:
    """The extractor of the configured model, loaded on first use.

    A user's own ONNX model (`model_file`) is registered under its name at once, so its
    voiceprints are known to comparisons even before the first extraction.
    """
    search_dirs = [settings.models_dir] if settings.models_dir else []
    cache_dir = settings.model_cache
    if settings.model_file is None:
        describe(settings.default_model)  # an unknown name is a start-up error, not a late one
        return SharedExtractor(
            lambda: load_extractor(
                settings.default_model, cache_dir, search_dirs, threads=settings.extraction_threads
            )
        )
    model = load_onnx_speaker_model(
        settings.model_file, name=settings.model_name, threads=settings.extraction_threads
    )
    register(model.description)

    def with_user_model() -> Extractor:
        vad = VoiceActivityDetector.from_registry(cache_dir, search_dirs=search_dirs)
        return Extractor(model, vad)

    return SharedExtractor(with_user_model)


@functools.cache
def _process_settings() -> Settings:
    # Equal settings whichever thread reads them first, so a rare second read does no harm.
    return load_settings()


_PROCESS_EXTRACTOR = SharedExtractor(lambda: build_extractor(_process_settings()).get())


def process_extractor() -> tuple[Extractor, Settings]:
    """The extractor `voxmatch extract` would use, and the settings it comes from: read from
    the VOXMATCH_* variables and $VOXMATCH_CONFIG, as the command reads them, once per process.

    Raises ModelError when the settings are wrong or the model cannot be loaded.
    """
    try:
        return _PROCESS_EXTRACTOR.get(), _process_settings()
    # Settings, fetching, verifying, converting, onnxruntime: their errors vary, and each
    # means the same to a caller, no model to extract with.
    except Exception as error:
        raise ModelError(f"cannot load the speaker model: {error}") from error
