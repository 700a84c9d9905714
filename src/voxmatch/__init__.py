"""voxmatch: open speaker identification.

The public Python surface is `__all__`, documented in docs/python-api.md: extract voiceprints,
compare, merge and convert them as the server does, and the errors to catch. The other modules
are the implementation; the few documented as building blocks there (voxmatch.audio,
voxmatch.vad, voxmatch.models, ...) may be used for what their pages describe.
"""

import importlib as _importlib
import typing as _typing

from voxmatch._api import compare, extract, merge, to_vector
from voxmatch._version import __version__
from voxmatch.stopping import Stopped
from voxmatch.voiceprint import Voiceprint, VoiceprintBatch, VoiceprintError

if _typing.TYPE_CHECKING:
    from voxmatch._galleries_api import open_galleries
    from voxmatch.audio import AudioError
    from voxmatch.galleries import (
        Gallery,
        GalleryError,
        GalleryInfo,
        GalleryStore,
        Match,
        SpeakerInfo,
    )
    from voxmatch.shared_extractor import ModelError

__all__ = [
    "AudioError",
    "Gallery",
    "GalleryError",
    "GalleryInfo",
    "GalleryStore",
    "Match",
    "ModelError",
    "SpeakerInfo",
    "Stopped",
    "Voiceprint",
    "VoiceprintBatch",
    "VoiceprintError",
    "__version__",
    "compare",
    "extract",
    "merge",
    "open_galleries",
    "to_vector",
]

# Their modules pull in the decoders and onnxruntime; they are imported on first use, so that
# `import voxmatch` (every command of the CLI) stays cheap. Type checkers see the imports above
# instead, and so still flag a misspelt name.
_LAZY = {
    "AudioError": "voxmatch.audio",
    "ModelError": "voxmatch.shared_extractor",
    **dict.fromkeys(
        ("Gallery", "GalleryError", "GalleryInfo", "GalleryStore", "Match", "SpeakerInfo"),
        "voxmatch.galleries",
    ),
    "open_galleries": "voxmatch._galleries_api",
}

if not _typing.TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return getattr(_importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
