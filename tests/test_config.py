from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tools.configuration_docs import render
from voxmatch.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("VOXMATCH_"):
            monkeypatch.delenv(name)
    settings = load_settings()
    assert (settings.host, settings.port, settings.grpc_port) == ("127.0.0.1", 8000, 8080)
    assert settings.data_dir == Path("voxmatch-data")
    assert (settings.max_list_length, settings.max_matrix_size) == (50_000, 1_000_000)


def test_priority_flags_over_environment_over_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "voxmatch.toml"
    config.write_text("port = 9001\nworkers = 3\nqueue_capacity = 7\n")
    monkeypatch.setenv("VOXMATCH_WORKERS", "5")
    settings = load_settings(config, queue_capacity=11, port=None)
    assert settings.port == 9001  # file (a flag that was not given does not mask it)
    assert settings.workers == 5  # environment beats file
    assert settings.queue_capacity == 11  # flag beats both


def test_invalid_values_name_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXMATCH_MAX_LIST_LENGTH", "0")
    with pytest.raises(ConfigError, match="max_list_length"):
        load_settings()


def test_unknown_keys_in_the_file_are_errors(tmp_path: Path) -> None:
    config = tmp_path / "voxmatch.toml"
    config.write_text("prot = 8000\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings(config)


def test_docs_list_every_setting_with_its_default() -> None:
    documented = (REPO / "docs" / "configuration.md").read_text()
    assert documented == render(), (
        "regenerate: python tools/configuration_docs.py > docs/configuration.md"
    )


def test_the_model_cache_is_the_users_cache_folder_unless_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VOXMATCH_MODEL_CACHE_DIR", raising=False)
    if sys.platform == "linux":
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert load_settings().model_cache == tmp_path / "xdg" / "voxmatch" / "models"
    monkeypatch.setenv("VOXMATCH_MODEL_CACHE_DIR", str(tmp_path / "models"))
    assert load_settings().model_cache == tmp_path / "models"
    assert load_settings(data_dir=tmp_path / "data").model_cache == tmp_path / "models"
