"""Speaker galleries: speakers enrolled once in the data folder, searched by voice (see
docs/galleries.md). Core: knows SQLite and files, nothing of HTTP, gRPC or tasks."""

from voxmatch.galleries.index import IndexSettings
from voxmatch.galleries.store import (
    MAX_METADATA_BYTES,
    Enrolment,
    Gallery,
    GalleryError,
    GalleryInfo,
    GalleryStore,
    Match,
    SpeakerInfo,
    UnknownGallery,
    UnknownSpeaker,
)
from voxmatch.request_checks import MAX_TOP_K

__all__ = [
    "MAX_METADATA_BYTES",
    "MAX_TOP_K",
    "Enrolment",
    "Gallery",
    "GalleryError",
    "GalleryInfo",
    "GalleryStore",
    "IndexSettings",
    "Match",
    "SpeakerInfo",
    "UnknownGallery",
    "UnknownSpeaker",
]
