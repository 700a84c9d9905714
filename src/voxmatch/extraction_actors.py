"""Extraction on a Ray cluster: actors that each load the model once, fed file contents through
the object store (the nodes need not see this machine's disk).

Imported only where a Ray address is given (`voxmatch extract --ray`, the server's
`ray_address`): it imports Ray. The process must be connected first (`cluster.connect`).
An actor lost with its node takes its files with it; they go to the other actors, so a
collection or a task still completes (docs/scale-out.md).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from voxmatch.bulk_extraction import ExtractionOptions, FileOutcome, limit_blas_threads, portable
from voxmatch.config import Settings
from voxmatch.extraction import Extractor
from voxmatch.shared_extractor import ModelError, build_extractor
from voxmatch.stopping import Stopped

ATTEMPTS = 3
"""Actors a file may lose (each with its node) before it is reported failed."""

FILES_PER_ACTOR = 2
"""Files queued at each actor: one running, one waiting, so that an actor never stands idle
while the next file's bytes travel, and no more than that waits in the object store."""

STOP_POLL_SECONDS = 0.5
"""How often a task that waits for its actor checks whether it was cancelled."""


class ExtractionWorker:
    """One actor on a node: the configured model, loaded once, on `extraction_threads`
    onnxruntime threads."""

    def __init__(self, settings: Settings) -> None:
        self._extractor: Extractor | None = None
        self._problem: str | None = None
        limit_blas_threads(settings)
        try:
            self._extractor = build_extractor(settings).get()
        # Fetching, converting, onnxruntime: their errors vary, and each means no model.
        except Exception as error:  # noqa: BLE001
            self._problem = f"cannot load the speaker model on a cluster node: {error}"

    def extract(self, content: bytes, options: ExtractionOptions) -> FileOutcome:
        if self._extractor is None:
            raise ModelError(self._problem or "the speaker model is not loaded")
        return options.run(self._extractor, content)


# Typed as Any: Ray's actor classes (`.options`, `.remote`) are made at run time.
_ACTOR: Any = ray.remote(ExtractionWorker)


@dataclass
class _File:
    path: Path
    content: Any  # the ObjectRef of its bytes
    lost_actors: int = 0


class ExtractionActors:
    """A pool of extraction actors, spread over the nodes of the connected cluster.

    `reserve_cpus`: each actor holds `extraction_threads` CPUs for its life (a bulk run,
    which owns the cluster while it runs); otherwise an actor needs a free CPU to be placed but
    holds none, so that other work of the server (comparison blocks) still gets scheduled.
    `size` defaults to one actor per `extraction_threads` CPUs of the cluster.
    """

    def __init__(self, settings: Settings, size: int | None = None, *, reserve_cpus: bool) -> None:
        self._settings = portable(settings)
        self._size = size
        self._reserve_cpus = reserve_cpus
        self._lock = threading.Lock()
        self._actors: dict[Any, int] = {}
        """Each actor and how many files are queued at it."""
        self.lost_actors = 0
        """Actors lost so far (with their nodes), whose files went to the others."""
        self._abandoned: dict[Any, Any] = {}
        """Results no one waits for any more (their tasks were cancelled), and their actors:
        an actor stays busy with such a file until it is done."""

    def _fill(self) -> None:
        """Start actors up to the pool's size (called with the lock held)."""
        threads = self._settings.extraction_threads
        # Of the live nodes: right after a node is lost, the cluster's totals may still count it.
        nodes = ray.nodes()  # type: ignore[no-untyped-call]
        cpus = int(sum(node["Resources"].get("CPU", 0) for node in nodes if node["Alive"]))
        size = self._size or max(1, cpus // threads)
        options: dict[str, Any] = {"scheduling_strategy": "SPREAD"}
        if self._reserve_cpus:
            options["num_cpus"] = threads
        while len(self._actors) < size:
            self._actors[_ACTOR.options(**options).remote(self._settings)] = 0

    def _submit(self, content: Any, options: ExtractionOptions) -> tuple[Any, Any]:
        with self._lock:
            if self._abandoned:
                finished, _ = ray.wait(
                    list(self._abandoned), num_returns=len(self._abandoned), timeout=0
                )
                for result in finished:
                    actor = self._abandoned.pop(result)
                    if actor in self._actors:
                        self._actors[actor] -= 1
            if not self._actors:
                self._fill()
            actor = min(self._actors, key=self._actors.__getitem__)
            self._actors[actor] += 1
        return actor, actor.extract.remote(content, options)

    def _done(self, actor: Any, *, lost: bool) -> None:
        with self._lock:
            if actor not in self._actors:
                return
            if lost:
                self.lost_actors += 1
                # Not replaced: its node is gone, and a new actor would wait for CPUs that the
                # live actors hold. The pool starts afresh only once every actor is lost.
                del self._actors[actor]
                ray.kill(actor, no_restart=True)
            else:
                self._actors[actor] -= 1

    @property
    def capacity(self) -> int:
        with self._lock:
            if not self._actors:
                self._fill()
            return FILES_PER_ACTOR * len(self._actors)

    def extract(
        self,
        content: bytes,
        options: ExtractionOptions,
        should_stop: Callable[[], bool],
        on_lost: Callable[[RayActorError], None] | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> FileOutcome:
        """One file's outcome (for a server's task: safe to call from several threads).
        `on_lost` is told of each actor lost on the way (the file then goes to another),
        `on_sent` each time the file is given to an actor.
        Raises Stopped when `should_stop` says so, ModelError when the model cannot be
        loaded on the cluster."""
        stored = ray.put(content)
        attempt = 1
        while True:
            actor, result = self._submit(stored, options)
            if on_sent is not None:
                on_sent()
            try:
                return self._wait(actor, result, should_stop)
            except RayActorError as error:
                self._done(actor, lost=True)
                if attempt == ATTEMPTS:
                    raise
                attempt += 1
                if on_lost is not None:
                    on_lost(error)

    def _wait(self, actor: Any, result: Any, should_stop: Callable[[], bool]) -> FileOutcome:
        while not should_stop():
            try:
                outcome: FileOutcome = ray.get(result, timeout=STOP_POLL_SECONDS)
            except GetTimeoutError:
                continue
            self._done(actor, lost=False)
            return outcome
        # A file the actor already runs is finished there and dropped; a queued one is not run.
        ray.cancel(result)
        with self._lock:
            self._abandoned[result] = actor
        raise Stopped

    def extract_files(
        self, paths: Iterable[Path], options: ExtractionOptions, max_bytes: int
    ) -> Iterator[tuple[Path, FileOutcome]]:
        """Each file's outcome as soon as it is done (a bulk run). A file is read only when an
        actor is about to be free for it, so at most `capacity` files' bytes are in the object
        store; one larger than `max_bytes` is not sent. Raises ModelError when the model cannot
        be loaded on the cluster."""
        waiting = iter(paths)
        retried: deque[_File] = deque()
        running: dict[Any, tuple[Any, _File]] = {}
        while True:
            while len(running) < self.capacity:
                item = retried.popleft() if retried else None
                if item is None:
                    path = next(waiting, None)
                    if path is None:
                        break
                    content = _read(path, max_bytes)
                    if isinstance(content, FileOutcome):
                        yield path, content
                        continue
                    item = _File(path, ray.put(content))
                actor, result = self._submit(item.content, options)
                running[result] = (actor, item)
            if not running:
                return
            finished, _ = ray.wait(list(running), num_returns=1)
            for result in finished:
                actor, item = running.pop(result)
                try:
                    outcome: FileOutcome = ray.get(result)
                except RayActorError as error:
                    self._done(actor, lost=True)
                    item.lost_actors += 1
                    if item.lost_actors < ATTEMPTS:
                        retried.append(item)
                    else:
                        problem = f"lost {ATTEMPTS} cluster workers: {error}"
                        yield item.path, FileOutcome((), problem)
                    continue
                self._done(actor, lost=False)
                yield item.path, outcome

    def close(self) -> None:
        with self._lock:
            for actor in self._actors:
                ray.kill(actor, no_restart=True)
            self._actors.clear()


def _read(path: Path, max_bytes: int) -> bytes | FileOutcome:
    """The file's bytes, or why they are not sent to the cluster."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return FileOutcome(
                (),
                f"{size} bytes, over max_upload_bytes ({max_bytes}) for the cluster;"
                " extract it without --ray",
            )
        return path.read_bytes()
    except OSError as error:
        return FileOutcome((), str(error.strerror or error))


_server_pools: dict[str, ExtractionActors] = {}
_server_pools_lock = threading.Lock()


def server_actors(address: str, settings: Settings) -> ExtractionActors:
    """The actors of a server's extraction tasks, started on first use, one pool per process
    (the process is connected to the cluster at `address`)."""
    with _server_pools_lock:
        pool = _server_pools.get(address)
        if pool is None:
            pool = _server_pools[address] = ExtractionActors(settings, reserve_cpus=False)
        return pool
