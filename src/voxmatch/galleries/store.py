"""Speaker galleries: enrol speakers once, search voices against all of them.

Layout inside the data folder::

    galleries/galleries.sqlite3              galleries, speakers (metadata JSON), recordings
    galleries/<gallery id>/embeddings-<generation>.f32   one float32 row per speaker version

A speaker is searched as one row: the speech-length-weighted mean of the embeddings of all its
recordings (as `merging` makes it), of the summed speech, with the condition that carries most
of that speech. docs/galleries.md has the measurements that chose this over keeping the best of
the recordings. Adding recordings merges them into the row; the weighted mean composes, so the
result is the mean of every recording.

Durability: rows are written to the embeddings file before the SQLite transaction that names
them commits, and an enrolment or deletion returns only once it has committed; SQLite (WAL) is
the truth on open: the valid rows, their traits and their speakers are read back from it, and
anything else in the files is garbage. With `fsync` the rows and the commit are flushed to the
disk first (power cuts); without it they are in the kernel's hands, which a crash of the
process (kill -9) does not lose.

Concurrency: writes to one gallery take its lock, one after the other; a search takes a
snapshot (row count, a copy of the validity mask, the map of the file) and runs without any
lock, so a compaction or a bulk enrolment never holds it up.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sqlite3
import threading
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from voxmatch._sqlite import immediate_transaction
from voxmatch.galleries.index import HnswIndex, IndexSettings, approximate_top_k, candidates_for
from voxmatch.galleries.matrix import EmbeddingFile, matrix_path, write_compacted
from voxmatch.models.registry import DEFAULT_MODEL_NAME, UnknownModelError, describe
from voxmatch.request_checks import MAX_TOP_K
from voxmatch.scoring import Traits
from voxmatch.stopping import StopCheck
from voxmatch.top_k import posteriors, search_top_k
from voxmatch.voiceprint import NARROWBAND, WIDEBAND, Voiceprint, VoiceprintBatch

DATABASE_FILE = "galleries.sqlite3"
MAX_METADATA_BYTES = 4096
"""Largest metadata of one speaker, as compact JSON (UTF-8)."""
MAX_SPEAKER_ID_LENGTH = 256
GALLERY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A gallery's name: it is a path segment of the REST API and of no file."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS galleries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    dim INTEGER NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    UNIQUE (owner, name)
);
CREATE TABLE IF NOT EXISTS speakers (
    -- Never reused (AUTOINCREMENT): a search that began before a deletion names its rows by
    -- key, and a key taken over by a new speaker would lend it the deleted one's score.
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    gallery INTEGER NOT NULL,
    speaker_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    condition INTEGER NOT NULL,
    speech_length REAL NOT NULL,
    voiceprints_count INTEGER NOT NULL,
    metadata TEXT,
    UNIQUE (gallery, speaker_id)
);
CREATE INDEX IF NOT EXISTS speakers_by_row ON speakers (gallery, row);
CREATE TABLE IF NOT EXISTS recordings (
    speaker INTEGER NOT NULL,
    speech_length REAL NOT NULL,
    condition INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS recordings_by_speaker ON recordings (speaker);
"""


class GalleryError(ValueError):
    """A gallery request that cannot be done; `reason` is a short code, `index` the item."""

    def __init__(self, reason: str, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.index = index


class UnknownGallery(GalleryError):
    def __init__(self, name: str) -> None:
        super().__init__("unknown-gallery", f"gallery {name!r} does not exist")


class UnknownSpeaker(GalleryError):
    def __init__(self, gallery: str, speaker_id: str) -> None:
        super().__init__(
            "unknown-speaker", f"speaker {speaker_id!r} is not enrolled in gallery {gallery!r}"
        )


@dataclass(frozen=True)
class GalleryInfo:
    gallery: str
    model: str
    speakers_count: int
    voiceprints_count: int


@dataclass(frozen=True)
class SpeakerInfo:
    speaker_id: str
    voiceprints_count: int
    speech_length: float
    metadata: dict[str, Any] | None


@dataclass(frozen=True)
class Match:
    speaker_id: str
    score: float
    """The calibrated LLR of the probe against the speaker."""
    probability: float
    """The posterior that the probe is this speaker (see `top_k.posteriors`)."""


@dataclass(frozen=True)
class Enrolment:
    """Many speakers at once: `voiceprints` row i belongs to speaker `owners[i]`, an index
    into `speaker_ids` (rows of one speaker side by side)."""

    speaker_ids: Sequence[str]
    voiceprints: VoiceprintBatch
    owners: npt.NDArray[np.intp]
    metadata: Sequence[dict[str, Any] | None]

    @classmethod
    def one(
        cls, speaker_id: str, voiceprints: VoiceprintBatch, metadata: dict[str, Any] | None = None
    ) -> Enrolment:
        return cls([speaker_id], voiceprints, np.zeros(len(voiceprints), np.intp), [metadata])


def check_gallery_name(name: str) -> None:
    if not GALLERY_NAME.fullmatch(name):
        raise GalleryError(
            "gallery-name",
            "a gallery name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter"
            f" or digit; got {name!r}",
        )


def check_speaker_id(speaker_id: str, index: int | None = None) -> None:
    if (
        not 0 < len(speaker_id) <= MAX_SPEAKER_ID_LENGTH
        or "/" in speaker_id
        or any(unicodedata.category(character).startswith("C") for character in speaker_id)
    ):
        raise GalleryError(
            "speaker-id",
            f"a speaker id is 1 to {MAX_SPEAKER_ID_LENGTH} printable characters other than '/'"
            " (it is a segment of a URL path)",
            index,
        )


def encode_metadata(metadata: dict[str, Any] | None, index: int | None = None) -> str | None:
    if metadata is None:
        return None
    text = json.dumps(metadata, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if len(text.encode("utf-8")) > MAX_METADATA_BYTES:
        raise GalleryError(
            "metadata-size", f"metadata is over {MAX_METADATA_BYTES} bytes of JSON", index
        )
    return text


class GalleryStore:
    """Every gallery of one folder (`<data_dir>/galleries` for the server). Thread-safe; one
    process at a time per folder: each keeps its own view of the rows in memory.

    `owner` is the name of the API key a gallery belongs to; "" (the default) when keys are
    off. Each owner has its own names. `index` says how searches find speakers (exact by
    default; see `galleries.index`).
    """

    def __init__(
        self, folder: Path, *, fsync: bool = False, index: IndexSettings | None = None
    ) -> None:
        self.folder = folder
        self._fsync = fsync
        self.index_settings = index or IndexSettings()
        folder.mkdir(parents=True, exist_ok=True)
        self._db = _connect(folder / DATABASE_FILE, fsync)
        self._db_lock = threading.RLock()
        # Reads have their own connection: in WAL mode they see the last commit while a long
        # write (a compaction renumbering a million rows) is under way, so searches never wait.
        self._reader = _connect(folder / DATABASE_FILE, fsync)
        self._reader_lock = threading.Lock()
        self._open: dict[int, Gallery] = {}
        self._open_lock = threading.Lock()
        with self._db_lock:
            self._db.executescript(_SCHEMA)
            known = {str(row[0]) for row in self._db.execute("SELECT id FROM galleries")}
        # Folders of galleries deleted just before a crash.
        for child in folder.iterdir():
            if child.is_dir() and child.name not in known:
                shutil.rmtree(child, ignore_errors=True)

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate_transaction(self._db, self._db_lock)

    def query(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        """Rows of a read, as of the last commit."""
        with self._reader_lock:
            return self._reader.execute(sql, parameters).fetchall()

    def query_in_chunks(self, sql: str, parameters: Sequence[Any] = ()) -> Iterator[list[Any]]:
        """The rows of a long read, a chunk at a time (each a list of rows)."""
        with self._reader_lock:
            cursor = self._reader.execute(sql, parameters)
            while chunk := cursor.fetchmany(65536):
                yield chunk

    def __enter__(self) -> GalleryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def create(
        self, name: str, *, model: str = DEFAULT_MODEL_NAME, owner: str = ""
    ) -> tuple[GalleryInfo, bool]:
        """Create the gallery (True) or find it (False); a gallery of another model is an
        error."""
        check_gallery_name(name)
        try:
            dim = describe(model).embedding_dim
        except UnknownModelError as error:
            raise GalleryError("model", str(error)) from None
        with self.transaction() as db:
            found = db.execute(
                "SELECT model FROM galleries WHERE owner = ? AND name = ?", (owner, name)
            ).fetchone()
            if found is None:
                cursor = db.execute(
                    "INSERT INTO galleries (owner, name, model, dim) VALUES (?, ?, ?, ?)",
                    (owner, name, model, dim),
                )
                folder = self.folder / str(cursor.lastrowid)
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
            elif found[0] != model:
                raise GalleryError(
                    "model",
                    f"gallery {name!r} exists with model {found[0]!r}, not {model!r}",
                )
        return self.gallery(name, owner=owner).info(), found is None

    def galleries(self, owner: str = "") -> list[GalleryInfo]:
        """Every gallery of `owner`, by name."""
        infos = []
        for name in self.names(owner):
            try:
                infos.append(self.gallery(name, owner=owner).info())
            except UnknownGallery:
                continue  # deleted while listed
        return infos

    def names(self, owner: str = "") -> list[str]:
        return [
            row[0]
            for row in self.query(
                "SELECT name FROM galleries WHERE owner = ? ORDER BY name", (owner,)
            )
        ]

    def gallery(self, name: str, *, owner: str = "") -> Gallery:
        found = self.query(
            "SELECT id, model, dim, generation FROM galleries WHERE owner = ? AND name = ?",
            (owner, name),
        )
        if not found:
            raise UnknownGallery(name)
        gallery_id, model, dim, generation = found[0]
        with self._open_lock:
            gallery = self._open.get(gallery_id)
            if gallery is None:
                gallery = Gallery(
                    self, gallery_id, name, model, dim, generation, self._fsync, self.index_settings
                )
                self._open[gallery_id] = gallery
        return gallery

    def delete(self, name: str, *, owner: str = "") -> None:
        gallery = self.gallery(name, owner=owner)
        with gallery.write_lock, self.transaction() as db:
            db.execute(
                "DELETE FROM recordings WHERE speaker IN"
                " (SELECT key FROM speakers WHERE gallery = ?)",
                (gallery.id,),
            )
            db.execute("DELETE FROM speakers WHERE gallery = ?", (gallery.id,))
            db.execute("DELETE FROM galleries WHERE id = ?", (gallery.id,))
            gallery.deleted = True
        with self._open_lock:
            self._open.pop(gallery.id, None)
        gallery.close()
        shutil.rmtree(self.folder / str(gallery.id), ignore_errors=True)

    def close(self) -> None:
        with self._open_lock:
            for gallery in self._open.values():
                gallery.close()
            self._open.clear()
        with self._db_lock:
            self._db.close()
        with self._reader_lock:
            self._reader.close()


def _connect(path: Path, fsync: bool) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
    return db


@dataclass(frozen=True)
class _Snapshot:
    rows: npt.NDArray[np.float32]
    valid: npt.NDArray[np.bool_]
    traits: Traits
    keys: npt.NDArray[np.int64]
    index: HnswIndex | None


class Gallery:
    """One gallery: its embeddings file and the in-memory traits of its rows."""

    def __init__(
        self,
        store: GalleryStore,
        gallery_id: int,
        name: str,
        model: str,
        dim: int,
        generation: int,
        fsync: bool,
        index_settings: IndexSettings | None = None,
    ) -> None:
        self.store = store
        self.id = gallery_id
        self.name = name
        self.model = model
        self.dim = dim
        self.deleted = False
        self.write_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._fsync = fsync
        self._folder = store.folder / str(gallery_id)
        self._generation = generation
        for stale in self._folder.glob("embeddings-*"):
            if stale != matrix_path(self._folder, generation):
                stale.unlink()
        self._file = EmbeddingFile(matrix_path(self._folder, generation), dim, fsync=fsync)
        self._used = 0
        self._valid = np.zeros(self._file.capacity, np.bool_)
        self._keys = np.full(self._file.capacity, -1, np.int64)
        self._conditions = np.zeros(self._file.capacity, np.uint8)
        self._speech = np.zeros(self._file.capacity, np.float32)
        for chunk in store.query_in_chunks(
            "SELECT row, key, condition, speech_length FROM speakers WHERE gallery = ?",
            (gallery_id,),
        ):
            # Keys and rows are below 2**53: exact in float64.
            table = np.array(chunk, dtype=np.float64)
            at = table[:, 0].astype(np.intp)
            self._used = max(self._used, int(at.max()) + 1)
            self._valid[at] = True
            self._keys[at] = table[:, 1].astype(np.int64)
            self._conditions[at] = table[:, 2].astype(np.uint8)
            self._speech[at] = table[:, 3].astype(np.float32)
        self._index_settings = index_settings or IndexSettings()
        self._index = self._build_index(
            self._file.rows[: self._used], self._conditions[: self._used]
        )

    # --- reading -------------------------------------------------------------------------

    def info(self) -> GalleryInfo:
        speakers, voiceprints = self.store.query(
            "SELECT count(*), coalesce(sum(voiceprints_count), 0) FROM speakers WHERE gallery = ?",
            (self.id,),
        )[0]
        return GalleryInfo(self.name, self.model, int(speakers), int(voiceprints))

    def speaker(self, speaker_id: str) -> SpeakerInfo:
        found = self.store.query(
            "SELECT speaker_id, voiceprints_count, speech_length, metadata FROM speakers"
            " WHERE gallery = ? AND speaker_id = ?",
            (self.id, speaker_id),
        )
        if not found:
            raise UnknownSpeaker(self.name, speaker_id)
        return _speaker_info(found[0])

    def speakers(self, offset: int = 0, limit: int = 100) -> list[SpeakerInfo]:
        """Speakers in the order of their ids (code points), `limit` from `offset` on."""
        return [
            _speaker_info(row)
            for row in self.store.query(
                "SELECT speaker_id, voiceprints_count, speech_length, metadata FROM speakers"
                " WHERE gallery = ? ORDER BY speaker_id LIMIT ? OFFSET ?",
                (self.id, limit, offset),
            )
        ]

    def _snapshot(self) -> _Snapshot:
        with self._state_lock:
            used = self._used
            return _Snapshot(
                self._file.rows[:used],
                self._valid[:used].copy(),
                Traits(self._conditions[:used], self._speech[:used]),
                self._keys[:used],
                self._index,
            )

    def search(
        self,
        probes: VoiceprintBatch | Sequence[Voiceprint],
        *,
        top_k: int = 10,
        prior_in_gallery: float = 0.5,
        should_stop: StopCheck | None = None,
    ) -> list[list[Match]]:
        """The `top_k` best speakers of each probe, best first, with their posteriors given
        `prior_in_gallery` (see `top_k.posteriors`). Exact (every speaker is scored) unless
        the store's index is "hnsw" and the gallery has more speakers than the graph is asked
        for: then the graph proposes the candidates, scored exactly (`galleries.index`).

        `should_stop` is asked between blocks of the gallery; when it says so,
        `stopping.Stopped` is raised.
        """
        probes = VoiceprintBatch.coerce(probes)
        self._check_model(probes)
        if not 1 <= top_k <= MAX_TOP_K:
            raise GalleryError("top-k", f"top_k must be 1 to {MAX_TOP_K}, got {top_k}")
        if not (math.isfinite(prior_in_gallery) and 0 <= prior_in_gallery <= 1):
            raise GalleryError(
                "prior", f"prior_in_gallery must be between 0 and 1, got {prior_in_gallery}"
            )
        snapshot = self._snapshot()
        calibration = describe(self.model).calibration
        if snapshot.index is not None and snapshot.valid.sum() > candidates_for(top_k):
            found = approximate_top_k(
                snapshot.index,
                probes.embeddings,
                Traits.of(probes),
                snapshot.rows,
                snapshot.traits,
                snapshot.valid,
                calibration,
                top_k,
                should_stop=should_stop,
            )
        else:
            found = search_top_k(
                probes.embeddings,
                snapshot.rows,
                calibration,
                top_k,
                row_traits=Traits.of(probes),
                column_traits=snapshot.traits,
                valid=snapshot.valid,
                should_stop=should_stop,
            )
        probabilities = posteriors(found.scores, found.log_sum_lr, found.counted, prior_in_gallery)
        hit = found.columns >= 0
        keys = np.unique(snapshot.keys[found.columns[hit]])
        names = self._speaker_ids(keys)
        results: list[list[Match]] = []
        for row, columns in enumerate(found.columns):
            matches = []
            for place, column in enumerate(columns):
                # A speaker deleted since the snapshot is not named any more: left out.
                name = names.get(int(snapshot.keys[column])) if column >= 0 else None
                if name is not None:
                    matches.append(
                        Match(
                            name,
                            float(found.scores[row, place]),
                            float(probabilities[row, place]),
                        )
                    )
            results.append(matches)
        return results

    def _speaker_ids(self, keys: npt.NDArray[np.int64]) -> dict[int, str]:
        names: dict[int, str] = {}
        listed = [int(key) for key in keys]
        for start in range(0, len(listed), 500):
            part = listed[start : start + 500]
            rows = self.store.query(
                f"SELECT key, speaker_id FROM speakers WHERE key IN ({','.join('?' * len(part))})",
                part,
            )
            names.update((int(key), str(name)) for key, name in rows)
        return names

    # --- writing -------------------------------------------------------------------------

    def _check_model(self, voiceprints: VoiceprintBatch) -> None:
        if voiceprints.model != self.model:
            raise GalleryError(
                "model",
                f"gallery {self.name!r} holds voiceprints of model {self.model!r}, not"
                f" {voiceprints.model!r}",
                0,
            )

    def enrol_speaker(
        self,
        speaker_id: str,
        voiceprints: VoiceprintBatch | Sequence[Voiceprint],
        metadata: dict[str, Any] | None = None,
    ) -> SpeakerInfo:
        """Enrol a speaker with one or more voiceprints, or replace an enrolled one."""
        self.enrol(Enrolment.one(speaker_id, VoiceprintBatch.coerce(voiceprints), metadata))
        return self.speaker(speaker_id)

    def enrol(self, enrolment: Enrolment) -> int:
        """Enrol every speaker of `enrolment`, replacing any speaker of the same id; how many
        were replaced."""
        self._check_model(enrolment.voiceprints)
        speakers = len(enrolment.speaker_ids)
        if len(set(enrolment.speaker_ids)) != speakers:
            seen: set[str] = set()
            for index, speaker_id in enumerate(enrolment.speaker_ids):
                if speaker_id in seen:
                    raise GalleryError(
                        "duplicate-speaker", f"speaker {speaker_id!r} is listed twice", index
                    )
                seen.add(speaker_id)
        for index, speaker_id in enumerate(enrolment.speaker_ids):
            check_speaker_id(speaker_id, index)
        metadata = [encode_metadata(item, index) for index, item in enumerate(enrolment.metadata)]
        batch = enrolment.voiceprints
        rows, speech, conditions, counts = _merge_groups(batch, enrolment.owners, speakers)
        with self.write_lock:
            self._check_alive()
            start = self._used
            self._write_rows(start, rows)
            new_rows = np.arange(start, start + speakers, dtype=np.int64)
            with self.store.transaction() as db:
                db.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS incoming (position INTEGER PRIMARY KEY,"
                    " speaker_id TEXT NOT NULL, row INTEGER NOT NULL, condition INTEGER NOT NULL,"
                    " speech_length REAL NOT NULL, voiceprints_count INTEGER NOT NULL,"
                    " metadata TEXT)"
                )
                db.execute("DELETE FROM incoming")
                db.executemany(
                    "INSERT INTO incoming VALUES (?, ?, ?, ?, ?, ?, ?)",
                    zip(
                        range(speakers),
                        enrolment.speaker_ids,
                        new_rows.tolist(),
                        conditions.tolist(),
                        speech.tolist(),
                        counts.tolist(),
                        metadata,
                        strict=True,
                    ),
                )
                replaced = db.execute(
                    "SELECT s.key, s.row FROM speakers s JOIN incoming i"
                    " ON s.gallery = ? AND s.speaker_id = i.speaker_id",
                    (self.id,),
                ).fetchall()
                db.execute(
                    "DELETE FROM recordings WHERE speaker IN (SELECT s.key FROM speakers s"
                    " JOIN incoming i ON s.gallery = ? AND s.speaker_id = i.speaker_id)",
                    (self.id,),
                )
                db.execute(
                    "INSERT INTO speakers (gallery, speaker_id, row, condition, speech_length,"
                    " voiceprints_count, metadata) SELECT ?, speaker_id, row, condition,"
                    " speech_length, voiceprints_count, metadata FROM incoming WHERE true"
                    " ON CONFLICT (gallery, speaker_id) DO UPDATE SET row = excluded.row,"
                    " condition = excluded.condition, speech_length = excluded.speech_length,"
                    " voiceprints_count = excluded.voiceprints_count,"
                    " metadata = excluded.metadata",
                    (self.id,),
                )
                keys = np.array(
                    db.execute(
                        "SELECT s.key FROM incoming i JOIN speakers s"
                        " ON s.gallery = ? AND s.speaker_id = i.speaker_id ORDER BY i.position",
                        (self.id,),
                    ).fetchall(),
                    dtype=np.int64,
                ).reshape(-1)
                db.executemany(
                    "INSERT INTO recordings VALUES (?, ?, ?)",
                    zip(
                        keys[enrolment.owners].tolist(),
                        batch.speech_lengths.tolist(),
                        batch.conditions.tolist(),
                        strict=True,
                    ),
                )
                db.execute("DELETE FROM incoming")
            if self._index is not None:
                self._index.add(start, rows, conditions)
            with self._state_lock:
                for _, old_row in replaced:
                    self._valid[old_row] = False
                self._valid[start : start + speakers] = True
                self._keys[start : start + speakers] = keys
                self._conditions[start : start + speakers] = conditions
                self._speech[start : start + speakers] = speech
                self._used = start + speakers
            self._compact_if_worth_it()
        return len(replaced)

    def add_voiceprints(
        self, speaker_id: str, voiceprints: VoiceprintBatch | Sequence[Voiceprint]
    ) -> SpeakerInfo:
        """Merge more recordings into an enrolled speaker."""
        voiceprints = VoiceprintBatch.coerce(voiceprints)
        self._check_model(voiceprints)
        with self.write_lock:
            self._check_alive()
            found = self.store.query(
                "SELECT key, row, voiceprints_count, metadata FROM speakers"
                " WHERE gallery = ? AND speaker_id = ?",
                (self.id, speaker_id),
            )
            if not found:
                raise UnknownSpeaker(self.name, speaker_id)
            key, old_row, old_count, metadata = found[0]
            per_condition = self.store.query(
                "SELECT condition, sum(speech_length), count(*) FROM recordings"
                " WHERE speaker = ? GROUP BY condition",
                (key,),
            )
            # The current row stands for every earlier recording: the weighted mean composes.
            old = VoiceprintBatch(
                np.array(self._file.rows[old_row : old_row + 1]),
                np.array([sum(row[1] for row in per_condition)], np.float32),
                self.model,
            )
            merged, speech, _, _ = _merge_groups(
                _concatenate(old, voiceprints),
                np.zeros(len(voiceprints) + 1, np.intp),
                1,
            )
            speech_by_condition = {int(c): float(s) for c, s, _ in per_condition}
            for condition, length in zip(
                voiceprints.conditions.tolist(), voiceprints.speech_lengths.tolist(), strict=True
            ):
                speech_by_condition[condition] = speech_by_condition.get(condition, 0.0) + length
            condition = _dominant(speech_by_condition)
            start = self._used
            self._write_rows(start, merged)
            count = old_count + len(voiceprints)
            with self.store.transaction() as db:
                db.execute(
                    "UPDATE speakers SET row = ?, condition = ?, speech_length = ?,"
                    " voiceprints_count = ? WHERE key = ?",
                    (start, condition, float(speech[0]), count, key),
                )
                db.executemany(
                    "INSERT INTO recordings VALUES (?, ?, ?)",
                    zip(
                        [key] * len(voiceprints),
                        voiceprints.speech_lengths.tolist(),
                        voiceprints.conditions.tolist(),
                        strict=True,
                    ),
                )
            if self._index is not None:
                self._index.add(start, merged, np.array([condition], np.uint8))
            with self._state_lock:
                self._valid[old_row] = False
                self._valid[start] = True
                self._keys[start] = key
                self._conditions[start] = condition
                self._speech[start] = speech[0]
                self._used = start + 1
            self._compact_if_worth_it()
        return SpeakerInfo(
            speaker_id, count, float(speech[0]), json.loads(metadata) if metadata else None
        )

    def delete_speaker(self, speaker_id: str) -> None:
        with self.write_lock:
            self._check_alive()
            with self.store.transaction() as db:
                found = db.execute(
                    "SELECT key, row FROM speakers WHERE gallery = ? AND speaker_id = ?",
                    (self.id, speaker_id),
                ).fetchone()
                if found is None:
                    raise UnknownSpeaker(self.name, speaker_id)
                db.execute("DELETE FROM recordings WHERE speaker = ?", (found[0],))
                db.execute("DELETE FROM speakers WHERE key = ?", (found[0],))
            with self._state_lock:
                self._valid[found[1]] = False
            self._compact_if_worth_it()

    def _check_alive(self) -> None:
        if self.deleted:
            raise UnknownGallery(self.name)

    def _write_rows(self, start: int, rows: npt.NDArray[np.float32]) -> None:
        """Rows on disk past the used ones; the arrays of traits grown to the file's size."""
        if self._file.write(start, rows):
            capacity = self._file.capacity
            with self._state_lock:
                self._valid = _grown(self._valid, capacity)
                self._keys = _grown(self._keys, capacity, fill=-1)
                self._conditions = _grown(self._conditions, capacity)
                self._speech = _grown(self._speech, capacity)

    def _compact_if_worth_it(self) -> None:
        """Copy the live rows into a new file once garbage outnumbers them: each row is then
        copied a bounded number of times in its life, and the file is at most twice its
        content. Searches go on against the old file meanwhile."""
        live = int(self._valid[: self._used].sum())
        if self._used - live <= max(live, 0) or self._used == 0:
            return
        keep = np.flatnonzero(self._valid[: self._used])
        generation = self._generation + 1
        path = matrix_path(self._folder, generation)
        write_compacted(self._file.rows, keep, path, fsync=self._fsync)
        keys = self._keys[keep]
        with self.store.transaction() as db:
            db.executemany(
                "UPDATE speakers SET row = ? WHERE key = ?",
                zip(range(len(keep)), keys.tolist(), strict=True),
            )
            db.execute("UPDATE galleries SET generation = ? WHERE id = ?", (generation, self.id))
        old_file = self._file
        new_file = EmbeddingFile(path, self.dim, fsync=self._fsync)
        capacity = new_file.capacity
        valid = np.zeros(capacity, np.bool_)
        valid[: len(keep)] = True
        new_keys = np.full(capacity, -1, np.int64)
        new_keys[: len(keep)] = keys
        conditions = np.zeros(capacity, np.uint8)
        conditions[: len(keep)] = self._conditions[keep]
        speech = np.zeros(capacity, np.float32)
        speech[: len(keep)] = self._speech[keep]
        index = self._build_index(new_file.rows[: len(keep)], conditions[: len(keep)])
        with self._state_lock:
            self._file = new_file
            self._index = index
            self._generation = generation
            self._valid, self._keys = valid, new_keys
            self._conditions, self._speech = conditions, speech
            self._used = len(keep)
        old_file.close()
        # Searches still reading the old rows keep their map: unlinking leaves it readable.
        old_file.path.unlink()

    def _build_index(
        self, rows: npt.NDArray[np.float32], conditions: npt.NDArray[np.uint8]
    ) -> HnswIndex | None:
        """The graphs of `rows` (of these conditions), when searches use them."""
        if self._index_settings.kind == "exact":
            return None
        return HnswIndex.build(rows, conditions, self._index_settings)

    def close(self) -> None:
        self._file.close()


def _grown(array: npt.NDArray[Any], capacity: int, fill: int = 0) -> npt.NDArray[Any]:
    grown = np.full(capacity, fill, array.dtype)
    grown[: len(array)] = array
    return grown


def _concatenate(first: VoiceprintBatch, second: VoiceprintBatch) -> VoiceprintBatch:
    return VoiceprintBatch(
        np.concatenate([first.embeddings, second.embeddings]),
        np.concatenate([first.speech_lengths, second.speech_lengths]),
        first.model,
        np.concatenate([first.conditions, second.conditions]),
    )


def _dominant(speech_by_condition: dict[int, float]) -> int:
    """The condition that carries the most speech (wideband on a tie)."""
    wide = speech_by_condition.get(WIDEBAND, 0.0)
    narrow = speech_by_condition.get(NARROWBAND, 0.0)
    return NARROWBAND if narrow > wide else WIDEBAND


def _merge_groups(
    batch: VoiceprintBatch, owners: npt.NDArray[np.intp], groups: int
) -> tuple[
    npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.uint8], npt.NDArray[np.int64]
]:
    """Per group: the speech-length-weighted mean embedding (merging's, vectorised), the summed
    speech, the condition carrying most speech, and the count of voiceprints. The rows of a
    group are side by side (`owners` does not decrease)."""
    owners = np.asarray(owners, dtype=np.intp)
    if owners.shape != (len(batch),) or (np.diff(owners) < 0).any():
        raise ValueError("owners must name a speaker for every voiceprint, in order")
    counts = np.bincount(owners, minlength=groups).astype(np.int64)
    if len(counts) != groups or (counts == 0).any():
        raise ValueError("every speaker needs at least one voiceprint")
    weights = batch.speech_lengths.astype(np.float64)
    totals = np.bincount(owners, weights=weights, minlength=groups)
    narrow = np.bincount(
        owners, weights=weights * (batch.conditions == NARROWBAND), minlength=groups
    )
    conditions = np.where(narrow > totals - narrow, NARROWBAND, WIDEBAND).astype(np.uint8)
    if groups == len(batch):
        # One voiceprint each: its mean is itself, bit for bit (w * e / w is exact).
        means = np.array(batch.embeddings, dtype=np.float32)
        return means, totals.astype(np.float32), conditions, counts
    means = np.empty((groups, batch.embeddings.shape[1]), np.float32)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    # float64 sums, as merging's: thousands of float32 terms would otherwise lose digits.
    for first in range(0, groups, 4096):
        last = min(first + 4096, groups)
        begin, end = starts[first], starts[last - 1] + counts[last - 1]
        part = batch.embeddings[begin:end].astype(np.float64)
        part_weights = weights[begin:end]
        part_totals = totals[first:last]
        local_starts = starts[first:last] - begin
        weighted = np.add.reduceat(part * part_weights[:, np.newaxis], local_starts)
        # As merging does: a speaker of voiceprints without speech lengths gets the plain mean.
        plain = np.add.reduceat(part, local_starts) / counts[first:last, np.newaxis]
        weightless = part_totals <= 0
        safe_totals = np.where(weightless, 1.0, part_totals)[:, np.newaxis]
        means[first:last] = np.where(weightless[:, np.newaxis], plain, weighted / safe_totals)
    return means, totals.astype(np.float32), conditions, counts


def _speaker_info(row: Sequence[Any]) -> SpeakerInfo:
    speaker_id, count, speech, metadata = row
    return SpeakerInfo(
        str(speaker_id), int(count), float(speech), json.loads(metadata) if metadata else None
    )
