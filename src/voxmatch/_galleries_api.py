"""`voxmatch.open_galleries`: the speaker galleries of a data folder, used in-process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from voxmatch.galleries import GalleryStore, IndexSettings

if TYPE_CHECKING:
    from voxmatch.config import Settings

GALLERIES_FOLDER = "galleries"
"""Where in a data folder the galleries live (the server's, `voxmatch gallery`'s, this one's)."""


def index_settings(settings: Settings) -> IndexSettings:
    """The gallery index the settings choose (`gallery_index`, `gallery_hnsw_*`)."""
    return IndexSettings(
        settings.gallery_index,
        settings.gallery_hnsw_m,
        settings.gallery_hnsw_ef_construction,
        settings.gallery_hnsw_ef_search,
        threads=settings.blas_threads,
    )


def open_galleries(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    fsync: bool = False,
    index: IndexSettings | None = None,
) -> GalleryStore:
    """The galleries of a data folder, the very ones the server serves from that folder.

    `data_dir` defaults to the configured one (`data_dir` of $VOXMATCH_CONFIG and VOXMATCH_*,
    else ./voxmatch-data). Use one process at a time per folder: not while a server runs on it.
    `fsync` flushes every enrolment and deletion to the disk before returning (power cuts);
    without it they survive a crash of the process. `index` chooses how searches find
    speakers (default: the configured `gallery_index` when `data_dir` is left out, else exact).
    Close the store (or use it in a `with`).
    """
    if data_dir is None:
        from voxmatch.config import load_settings

        settings = load_settings()
        folder = settings.data_dir
        index = index or index_settings(settings)
    else:
        folder = Path(data_dir)
    return GalleryStore(folder / GALLERIES_FOLDER, fsync=fsync, index=index)
