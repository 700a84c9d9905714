"""Extraction of many recordings at once: which files a folder or list holds, which of them an
earlier run finished, and worker processes that each load the model once.

`voxmatch extract` runs a collection here (with `--processes N`) or on Ray actors
(`extraction_actors`, with `--ray`); both hand back one `FileOutcome` per file as it finishes,
and the caller writes the voiceprints. Nothing here imports Ray.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from voxmatch.audio import DEFAULT_MAX_DURATION, AudioError, Source, TimeRange, stream_audio
from voxmatch.config import Settings
from voxmatch.extraction import ChannelExtraction, Extractor, Progress
from voxmatch.models.speaker_model import SpeakerModelError
from voxmatch.shared_extractor import ModelError, build_extractor
from voxmatch.voiceprint import Voiceprint, VoiceprintError

MEDIA_SUFFIXES = frozenset(
    {
        ".wav", ".wave", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".mp4", ".aac",
        ".wma", ".webm", ".mka", ".mkv", ".amr", ".gsm", ".au", ".snd", ".aif", ".aiff",
        ".caf", ".sph", ".w64", ".ac3", ".mov", ".3gp",
    }
)  # fmt: skip
"""The files of a folder that are extracted (case ignored): the audio and video containers
libsndfile and FFmpeg read. Other files of the folder (.vp, notes, images) are left alone."""

POLL_SECONDS = 1.0
"""How often a worker process checks that the process that started it is still there."""


@dataclass(frozen=True)
class ExtractionOptions:
    """What to extract of each file, as `voxmatch extract`'s options say."""

    channel_mode: str = "split"
    channels: tuple[int, ...] | None = None
    time_range: TimeRange = field(default_factory=TimeRange)
    max_speech_seconds: float | None = None
    max_duration: float = DEFAULT_MAX_DURATION

    def run(
        self, extractor: Extractor, source: Source, on_progress: Progress | None = None
    ) -> FileOutcome:
        """One file's voiceprints, or why it cannot be used. A file that cannot be read or
        decoded is an outcome, not an exception, so that a collection goes on."""
        try:
            results = extractor.extract_source(
                source,
                time_range=self.time_range,
                channel_mode=self.channel_mode,
                channels=self.channels,
                max_speech_seconds=self.max_speech_seconds,
                max_duration=self.max_duration,
                on_progress=on_progress,
            )
        except AudioError as error:
            return FileOutcome((), str(error), media_invalid=True)
        except (OSError, ValueError, SpeakerModelError) as error:
            return FileOutcome((), str(getattr(error, "strerror", None) or error))
        return FileOutcome(tuple(results), None)

    def expected_voiceprints(self, base: Path, source: Path) -> list[Path] | None:
        """The voiceprint files a finished extraction of `source` left, named from `base`
        (OUT/sub/name without `.vp`), as `voiceprint_path` names them; None when `source`
        cannot be opened or nothing was written for it. The number of channels is read from
        the file only when the options do not say how many voiceprints there are and one was
        written."""
        if self.channel_mode == "mix":
            return [voiceprint_path(base, 0, 1)]
        numbers: Sequence[int] | None = self.channels
        if numbers is None:
            if not any(voiceprint_path(base, 0, count).exists() for count in (1, 2)):
                return None  # nothing written yet: no need to open the file
            try:
                stream = stream_audio(source, time_range=self.time_range)
            except (AudioError, OSError, ValueError):
                return None
            numbers = stream.channel_numbers
            stream.close()
        return [voiceprint_path(base, number, len(numbers)) for number in numbers]


@dataclass(frozen=True)
class FileOutcome:
    """One file's voiceprints, channel by channel, or the reason it gave none."""

    channels: tuple[ChannelExtraction, ...]
    problem: str | None
    media_invalid: bool = False
    """The problem is the media itself (SPE4's `media.invalid`), not reading it."""

    @property
    def audio_seconds(self) -> float:
        return sum(result.extraction.processed_seconds for result in self.channels)


def voiceprint_path(base: Path, channel_number: int, channel_count: int) -> Path:
    """`base.vp` for a file of one voiceprint, `base.chN.vp` for each channel of several."""
    suffix = "" if channel_count == 1 else f".ch{channel_number}"
    return base.with_name(f"{base.name}{suffix}.vp")


def is_finished(expected: list[Path] | None) -> bool:
    """Every expected voiceprint is there and whole. Voiceprints are written whole or not at
    all (a scratch file renamed into place), and each holds a checksum, so a file of an
    interrupted run is never taken for a finished one."""
    if not expected:
        return False
    for path in expected:
        try:
            Voiceprint.from_base64(path.read_text(encoding="ascii").strip())
        except (OSError, UnicodeDecodeError, VoiceprintError):
            return False
    return True


def media_files(folder: Path) -> list[Path]:
    """The media files under `folder` (MEDIA_SUFFIXES), in every sub-folder, in name order;
    hidden files and folders (a leading dot) are left out."""
    found: list[Path] = []
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        found.extend(
            Path(root, name)
            for name in sorted(files)
            if not name.startswith(".") and Path(name).suffix.lower() in MEDIA_SUFFIXES
        )
    return found


def listed_files(list_file: Path) -> list[Path]:
    """The paths of a list file: one a line, relative to the list file's folder unless
    absolute; blank lines and lines starting with # are skipped. Raises OSError or
    UnicodeDecodeError when it cannot be read as UTF-8 text."""
    paths: list[Path] = []
    for line in list_file.read_text(encoding="utf-8-sig").splitlines():
        name = line.strip()
        if name and not name.startswith("#"):
            paths.append(list_file.parent / name)
    return paths


def portable(settings: Settings) -> Settings:
    """The same settings as a plain `Settings`, which another process can unpickle (those of
    `load_settings` are of a class made inside it, which pickle cannot name)."""
    return Settings.model_construct(**dict(settings))


class _Worker:
    """The extractor of one worker process, loaded by the pool's initializer."""

    extractor: Extractor | None = None
    problem: str | None = None


def limit_blas_threads(settings: Settings) -> None:
    """Hold NumPy's BLAS (the filterbank's products) to `blas_threads` in a worker: by default it
    starts a thread per core in every process, and P processes would then spin P x cores
    threads on the cores the networks need."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(settings.blas_threads, user_api="blas")


def _start_worker(settings: Settings, parent: int) -> None:
    limit_blas_threads(settings)
    try:
        _Worker.extractor = build_extractor(settings).get()
    # Fetching, converting, onnxruntime: their errors vary, and each means no model.
    except Exception as error:  # noqa: BLE001
        _Worker.problem = f"cannot load the speaker model: {error}"
    threading.Thread(target=_exit_without, args=(parent,), daemon=True).start()


def _exit_without(parent: int) -> None:
    """A worker whose driver was killed (kill -9 gives it no chance to stop its pool) would
    otherwise wait for work for ever."""
    while os.getppid() == parent:
        threading.Event().wait(POLL_SECONDS)
    os._exit(1)


def _extract_in_worker(path: Path, options: ExtractionOptions) -> FileOutcome:
    if _Worker.extractor is None:
        raise ModelError(_Worker.problem or "the speaker model is not loaded")
    return options.run(_Worker.extractor, path)


def extract_in_processes(
    paths: Iterable[Path], options: ExtractionOptions, settings: Settings, processes: int
) -> Iterator[tuple[Path, FileOutcome]]:
    """Each file's outcome as soon as it is done, by `processes` worker processes that load
    the model once each and run onnxruntime on `settings.extraction_threads` threads.

    Two files per process are in flight, so none waits for work and the queue stays short
    whatever the size of the collection. Raises ModelError when the model cannot be loaded.
    """
    # Spawned, not forked: the caller runs threads (progress display), which a fork copies
    # in whatever state they are.
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(portable(settings), os.getpid()),
    )
    waiting = iter(paths)
    running: dict[concurrent.futures.Future[FileOutcome], Path] = {}
    try:
        while True:
            while len(running) < 2 * processes:
                path = next(waiting, None)
                if path is None:
                    break
                running[pool.submit(_extract_in_worker, path, options)] = path
            if not running:
                break
            finished, _ = concurrent.futures.wait(
                running, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in finished:
                yield running.pop(future), future.result()
    except BaseException:
        # Interrupted (Ctrl-C, a model that cannot be loaded): the files in hand are dropped,
        # not waited for; a later run does them.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
