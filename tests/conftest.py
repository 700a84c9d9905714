"""Shared fixtures: real voxmatch servers in subprocesses, on free ports, in temp data folders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from _helpers import RunningServer, ServerFactory, start_server
from tools import corpora


def pytest_configure() -> None:
    """Every server, CLI run and loader of the tests keeps model files in the tests' shared
    cache, never in the model cache of whoever runs the tests (unless that is the same folder)."""
    os.environ["VOXMATCH_MODEL_CACHE_DIR"] = str(corpora.models_cache_dir())


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    started: list[RunningServer] = []

    def factory(
        env: dict[str, str] | None = None, *args: str, data_dir: Path | None = None
    ) -> RunningServer:
        server = start_server(data_dir or tmp_path / "data", env, *args)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server on the embedded defaults, shared by the tests of a module."""
    running = start_server(tmp_path_factory.mktemp("server") / "data")
    yield running
    running.stop()
