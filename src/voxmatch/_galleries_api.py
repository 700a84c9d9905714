"""`voxmatch.open_galleries`: the speaker galleries of a data folder, used in-process."""

from __future__ import annotations

import os
from pathlib import Path

from voxmatch.galleries import GalleryStore

GALLERIES_FOLDER = "galleries"
"""Where in a data folder the galleries live (the server's, `voxmatch gallery`'s, this one's)."""


def open_galleries(
    data_dir: str | os.PathLike[str] | None = None, *, fsync: bool = False
) -> GalleryStore:
    """The galleries of a data folder, the very ones the server serves from that folder.

    `data_dir` defaults to the configured one (`data_dir` of $VOXMATCH_CONFIG and VOXMATCH_*,
    else ./voxmatch-data). Use one process at a time per folder: not while a server runs on it.
    `fsync` flushes every enrolment and deletion to the disk before returning (power cuts);
    without it they survive a crash of the process. Close the store (or use it in a `with`).
    """
    if data_dir is None:
        from voxmatch.config import load_settings

        folder = load_settings().data_dir
    else:
        folder = Path(data_dir)
    return GalleryStore(folder / GALLERIES_FOLDER, fsync=fsync)
