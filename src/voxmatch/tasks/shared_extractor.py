"""One extractor for every thread of the server, loaded on first use."""

from __future__ import annotations

import threading
from collections.abc import Callable

from voxmatch.extraction import Extractor


class SharedExtractor:
    """Loads the extractor on first use, once, for every thread that needs it.

    The server starts listening at once; the first extraction fetches, verifies and converts
    the model if the cache does not already hold it.
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
