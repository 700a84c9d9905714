"""The server's extraction tasks on a Ray cluster, from a driver process of the server's own.

A Ray driver whose cluster dies ends its own process (docs/scale-out.md), and the server must
outlive its cluster: so the server is never a Ray driver. One child process is, for every
extraction task of the server (its actor pool, `extraction_actors.server_actors`, then loads
the model once for all of them). Tasks send it the path of their stored upload (the child runs
on this machine and reads it; its bytes travel to an actor through the object store) and get
the file's outcome back; a task cancelled meanwhile tells the child to drop its file. When the
child ends (the cluster went away), every task waiting on it fails with ClusterUnreachable, and
the next task starts a new child, which joins the cluster again if it is back.

This module does not import Ray; only the child does.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import queue
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from voxmatch.bulk_extraction import ExtractionOptions, FileOutcome, portable
from voxmatch.cluster import ClusterUnreachable
from voxmatch.config import Settings
from voxmatch.stopping import Stopped

log = logging.getLogger(__name__)

STOP_POLL_SECONDS = 0.2
"""How often a waiting task looks whether it was cancelled."""

_ENDED = "ended"


class ClusterExtraction:
    """Extracts the server's files on the cluster of `settings.ray_address` (thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        assert settings.ray_address is not None
        self._settings = portable(settings)
        self._lock = threading.Lock()
        self._driver: _Driver | None = None

    def extract(
        self,
        path: Path,
        options: ExtractionOptions,
        should_stop: Callable[[], bool],
        on_lost: Callable[[str], None],
        on_sent: Callable[[], None],
    ) -> FileOutcome:
        """The file's outcome. `on_lost` is told the error's name of each actor lost on the
        way (the file then goes to another), `on_sent` each time the file is given to an
        actor. Raises Stopped when `should_stop` says so,
        ClusterUnreachable when the cluster cannot be reached or goes away, RuntimeError when
        the cluster cannot extract (no model on its nodes, too many actors lost)."""
        driver = self._running_driver()
        request_id, answers = driver.send_extraction(path, options)
        try:
            while True:
                if should_stop():
                    driver.stop_extraction(request_id)
                    raise Stopped("the extraction stopped on request")
                try:
                    kind, payload = answers.get(timeout=STOP_POLL_SECONDS)
                except queue.Empty:
                    continue
                if kind == "sent":
                    on_sent()
                elif kind == "lost":
                    on_lost(str(payload))
                elif kind == "done":
                    outcome: FileOutcome = payload
                    return outcome
                elif kind == "failed":
                    raise RuntimeError(str(payload))
                else:  # "unreachable", or the driver ended
                    raise ClusterUnreachable(str(payload))
        finally:
            driver.forget(request_id)

    def _running_driver(self) -> _Driver:
        with self._lock:
            if self._driver is None or not self._driver.alive():
                self._driver = _Driver(self._settings)
            return self._driver


class _Driver:
    """The child process and the server's end of its pipe; a thread hands each answer to the
    task that waits for it."""

    def __init__(self, settings: Settings) -> None:
        spawning = multiprocessing.get_context("spawn")
        self._connection, theirs = spawning.Pipe()
        self._process: BaseProcess = spawning.Process(
            target=_serve,
            args=(theirs, settings),
            name="voxmatch-ray-extraction",
            daemon=True,
        )
        self._process.start()
        theirs.close()
        self._address = settings.ray_address
        self._send_lock = threading.Lock()
        self._answers_lock = threading.Lock()
        self._answers: dict[int, queue.Queue[tuple[str, Any]]] = {}
        self._ids = itertools.count()
        self._ended = False
        threading.Thread(
            target=self._read, name="voxmatch-ray-extraction-answers", daemon=True
        ).start()

    def alive(self) -> bool:
        with self._answers_lock:
            return not self._ended

    def send_extraction(
        self, path: Path, options: ExtractionOptions
    ) -> tuple[int, queue.Queue[tuple[str, Any]]]:
        answers: queue.Queue[tuple[str, Any]] = queue.Queue()
        with self._answers_lock:
            request_id = next(self._ids)
            self._answers[request_id] = answers
            if self._ended:
                answers.put((_ENDED, self._ended_message()))
                return request_id, answers
        self._send(("extract", request_id, str(path), options))
        return request_id, answers

    def stop_extraction(self, request_id: int) -> None:
        self._send(("stop", request_id))

    def forget(self, request_id: int) -> None:
        with self._answers_lock:
            self._answers.pop(request_id, None)

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            with self._send_lock:
                self._connection.send(message)
        except (OSError, EOFError):
            pass  # the child ended: its reader tells every waiting task

    def _read(self) -> None:
        while True:
            try:
                request_id, kind, payload = self._connection.recv()
            except (EOFError, OSError):
                break
            with self._answers_lock:
                answers = self._answers.get(request_id)
            if answers is not None:
                answers.put((kind, payload))
        self._process.join(10)
        with self._answers_lock:
            self._ended = True
            waiting = list(self._answers.values())
        for answers in waiting:
            answers.put((_ENDED, self._ended_message()))
        self._connection.close()

    def _ended_message(self) -> str:
        return (
            f"the Ray cluster at {self._address} failed during the extraction (its driver process"
            " ended); a retry may succeed once it is back"
        )


def _serve(connection: Connection, settings: Settings) -> None:
    """The child: joins the cluster, then extracts each file it is sent on the actor pool, a
    thread per file, until the server's end of the pipe closes."""
    from ray.exceptions import RayActorError, RayError

    from voxmatch import cluster
    from voxmatch.extraction_actors import server_actors
    from voxmatch.shared_extractor import ModelError

    assert settings.ray_address is not None
    address = settings.ray_address
    send_lock = threading.Lock()
    stops: dict[int, threading.Event] = {}

    def send(request_id: int, kind: str, payload: Any) -> None:
        with send_lock:
            connection.send((request_id, kind, payload))

    def extract(
        request_id: int, path: str, options: ExtractionOptions, stop: threading.Event
    ) -> None:
        try:
            cluster.connect(address)
            outcome = server_actors(address, settings).extract(
                Path(path).read_bytes(),
                options,
                stop.is_set,
                lambda error: send(request_id, "lost", type(error).__name__),
                lambda: send(request_id, "sent", None),
            )
        except Stopped:
            send(request_id, "stopped", None)
        except cluster.ClusterUnreachable as error:
            send(request_id, "unreachable", str(error))
        except RayActorError as error:
            send(request_id, "failed", f"the cluster lost every worker given the file: {error}")
        except ModelError as error:
            send(request_id, "failed", str(error))
        except (RayError, ConnectionError) as error:
            send(
                request_id,
                "unreachable",
                f"the Ray cluster at {address} failed during the extraction"
                f" ({type(error).__name__}); a retry may succeed once it is back",
            )
        except OSError as error:
            send(request_id, "failed", f"the stored upload cannot be read: {error.strerror}")
        else:
            send(request_id, "done", outcome)
        finally:
            stops.pop(request_id, None)

    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message[0] == "extract":
            _, request_id, path, options = message
            stop = stops[request_id] = threading.Event()
            threading.Thread(
                target=extract, args=(request_id, path, options, stop), daemon=True
            ).start()
        elif message[0] == "stop":
            event = stops.get(message[1])
            if event is not None:
                event.set()
