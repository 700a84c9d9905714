"""Settings: embedded defaults, overridden by a TOML file, then VOXMATCH_* variables, then flags.

Every setting is listed, with its default, in docs/configuration.md, which a test keeps in step
with this module.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from voxmatch.assets import user_model_cache_dir
from voxmatch.compute_slots import available_cpus
from voxmatch.models.registry import DEFAULT_MODEL_NAME, UnknownModelError, describe

MIB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOXMATCH_", extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Address the REST API listens on.")
    port: int = Field(8000, ge=0, le=65535, description="REST port (0 picks a free port).")
    grpc_enabled: bool = Field(True, description="Serve the Phonexia gRPC API as well.")
    grpc_host: str | None = Field(None, description="Address for gRPC; defaults to `host`.")
    grpc_port: int = Field(
        8080, ge=0, le=65535, description="gRPC port (8080 is where Phonexia's clients look)."
    )
    grpc_max_concurrent_rpcs: int = Field(
        8,
        ge=1,
        description="gRPC calls in progress at once (those waiting for a compute slot count);"
        " more get RESOURCE_EXHAUSTED.",
    )
    tls_cert: Path | None = Field(None, description="PEM certificate: serve gRPC over TLS.")
    tls_key: Path | None = Field(None, description="PEM private key for `tls_cert`.")
    data_dir: Path = Field(
        Path("voxmatch-data"), description="Folder for the task database and task files."
    )
    model_cache_dir: Path | None = Field(
        None,
        description="Folder for fetched and converted model files, shared by every data folder"
        " and working folder; default: the user's cache folder (platformdirs' user_cache_dir:"
        " `~/.cache/voxmatch/models` on Linux, `~/Library/Caches/voxmatch/models` on macOS)."
        " Besides the data folder, the only place voxmatch writes to unasked.",
    )
    models_dir: Path | None = Field(
        None,
        description="Pre-pulled model folder (`voxmatch models pull --to DIR`), for air-gapped"
        " installs; files found there are used instead of fetching.",
    )
    model_file: Path | None = Field(
        None,
        description="A user's own ONNX speaker model (sherpa-onnx / WeSpeaker export) to use"
        " instead of the default model.",
    )
    model_name: str | None = Field(
        None, description="Name given to `model_file`'s voiceprints (default: the file's stem)."
    )
    extraction_threads: int = Field(
        1,
        ge=1,
        description="onnxruntime threads of one extraction (per worker: of the server, of"
        " `voxmatch extract --processes`, and per Ray extraction actor, which holds as many"
        " CPUs in a bulk run).",
    )
    default_model: str = Field(
        DEFAULT_MODEL_NAME, description="Model used for extraction when none is named."
    )
    max_list_length: int = Field(
        50_000, ge=1, description="Most voiceprints in one list of a request."
    )
    max_matrix_size: int = Field(
        1_000_000, ge=1, description="Most scores in one comparison (len(a) x len(b))."
    )
    max_top_k_scores: int = Field(
        2_500_000_000,
        ge=1,
        description="Most scores computed by one comparison with `top_k` (len(a) x len(b)),"
        " which returns only the k best of a for each voiceprint of b, instead of"
        " `max_matrix_size`: 2,500,000,000 is 50,000 x 50,000.",
    )
    max_request_bytes: int = Field(
        128 * MIB, ge=1024, description="Largest JSON request body, in bytes (else 413)."
    )
    max_upload_bytes: int = Field(
        256 * MIB, ge=1024, description="Largest uploaded media file, in bytes (else 413)."
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Largest request line plus headers of a REST request, in bytes, and largest"
        " trailer fields of a chunked body (else 431, and the connection is closed).",
    )
    max_header_count: int = Field(
        100, ge=8, description="Most headers in one REST request (else 431)."
    )
    max_audio_seconds: float = Field(
        7200.0,
        gt=0,
        description="Most audio decoded for one extraction, in seconds, counted over all the"
        " channels used (a stereo file of 1 h uses 2 h).",
    )
    workers: int = Field(2, ge=1, description="Tasks processed at the same time.")
    compute_slots: int | None = Field(
        None,
        ge=1,
        description="The CPU budget: how many heavy jobs (extractions; comparisons: every REST"
        " one, gRPC ones over 1,000,000 scores) run at once, REST tasks and gRPC calls together;"
        " more wait in line. Default: the number of CPUs the server may use. See docs/grpc.md.",
    )
    queue_capacity: int = Field(
        64, ge=1, description="Tasks waiting to run before new ones get 429."
    )
    retry_after_seconds: int = Field(
        1, ge=1, description="`retry-after` sent with 429 when the queue is full."
    )
    poll_wait_seconds: float = Field(
        0.25,
        ge=0,
        description="A GET of an unfinished task waits up to this long for it to finish before"
        " answering, so that a client polling often gets its result at once and costs less.",
    )
    task_ttl_seconds: float = Field(
        3600.0,
        gt=0,
        description="How long a finished task (done, failed, rejected) is kept, then 404.",
    )
    expiry_interval_seconds: float = Field(
        30.0, gt=0, description="How often expired tasks are swept from disk."
    )
    fsync: bool = Field(
        False,
        description="Flush accepted tasks to the disk before answering 202. Off, an accepted"
        " task survives a crash of voxmatch (kill -9); on, it also survives a power cut.",
    )
    blas_threads: int = Field(
        1,
        ge=1,
        description="Threads of one matrix product (also NumPy's BLAS threads of each worker"
        " of `voxmatch extract --processes` and of each Ray extraction actor). Tasks already"
        " run in parallel (`workers`), and idle BLAS threads spin on the cores the other work"
        " needs.",
    )
    memory_budget_bytes: int = Field(
        64 * MIB, ge=MIB, description="Working memory of one block of a score matrix."
    )
    ray_address: str | None = Field(
        None,
        description="Run comparison and extraction work on this Ray cluster (an address as"
        " `ray.init` takes it: `HOST:PORT` of the head node, or `auto`); unset, everything runs"
        " in this process and nothing of Ray is imported. See docs/scale-out.md.",
    )
    gallery_max_bulk_speakers: int = Field(
        10_000,
        ge=1,
        description="Most speakers in one bulk enrolment request of a gallery (POST"
        " /api/galleries/{gallery}/speakers); their voiceprints count against"
        " `max_list_length`. See docs/galleries.md.",
    )
    gallery_index: Literal["exact", "hnsw"] = Field(
        "exact",
        description="How a gallery search finds speakers: `exact` scores every enrolled"
        " speaker; `hnsw` asks a FAISS HNSW graph (built in memory when a gallery opens) for"
        " the candidates of highest cosine and scores those exactly: much faster on galleries"
        " of millions, at a measured recall, with posteriors that are lower bounds. See"
        " docs/galleries.md.",
    )
    gallery_hnsw_m: int = Field(
        32,
        ge=4,
        le=256,
        description='Links per speaker of the HNSW graph (`gallery_index = "hnsw"`): more'
        " gives better recall, a slower build and more memory (about 8 bytes per link).",
    )
    gallery_hnsw_ef_construction: int = Field(
        40, ge=1, description="Breadth of the HNSW graph's search when a speaker is added."
    )
    gallery_hnsw_ef_search: int = Field(
        128,
        ge=1,
        description="Breadth of the HNSW graph's search of a probe (at least the candidates"
        " retrieved, max(4 top_k, 64)): higher gives better recall, slower searches.",
    )
    api_keys_file: Path | None = Field(
        None,
        description="File of API keys (`voxmatch keys add NAME`): when set, every request needs"
        " a key, and a task is seen only by the key that created it. See docs/api-keys.md.",
    )
    calibration_profiles_dir: Path | None = Field(
        None,
        description="Folder of calibration profiles (`voxmatch calibrate` writes them), which a"
        " comparison request may name (its `calibration` field); profiles added while the"
        " server runs are found without a restart. Default: `calibration-profiles` in"
        " `data_dir`. See docs/calibration-profiles.md.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Server log level."
    )

    @model_validator(mode="after")
    def _known_default_model(self) -> Settings:
        try:
            describe(self.default_model)
        except UnknownModelError as error:
            raise ValueError(f"default_model: {error}") from None
        return self

    @model_validator(mode="after")
    def _tls_needs_both(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        return self

    @property
    def grpc_address(self) -> str:
        return self.grpc_host or self.host

    @property
    def model_cache(self) -> Path:
        """The folder model files are cached in: `model_cache_dir`, else the user's cache."""
        return self.model_cache_dir or user_model_cache_dir()

    @property
    def calibration_profiles(self) -> Path:
        """The folder of calibration profiles: `calibration_profiles_dir`, else in `data_dir`."""
        return self.calibration_profiles_dir or self.data_dir / "calibration-profiles"

    @property
    def compute_slot_count(self) -> int:
        return self.compute_slots or available_cpus()


class ConfigError(ValueError):
    """Settings that cannot be used, with a message naming the setting."""


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from (lowest to highest priority) defaults, TOML file, environment, overrides.

    The TOML file is `config_file`, else $VOXMATCH_CONFIG when set. Overrides that are None
    are ignored, so command-line flags that were not given do not mask the other sources.
    """
    path_text = str(config_file) if config_file else os.environ.get("VOXMATCH_CONFIG")
    path = Path(path_text) if path_text else None
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")

    class _Sourced(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if path is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            return tuple(sources)

    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return _Sourced(**given)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    except ValidationError as error:
        problems = "; ".join(
            ": ".join(
                part
                for part in (
                    ".".join(str(part) for part in item["loc"]),
                    str(item["msg"]).removeprefix("Value error, "),
                )
                if part
            )
            for item in error.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
