"""The `voxmatch` command: serve, extract, compare, models."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from voxmatch.config import ConfigError, Settings, load_settings

app = typer.Typer(
    name="voxmatch",
    help="Open speaker identification: SPE4-compatible server, voiceprints, comparison.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="Speaker models: list them, pull them for offline use.")
app.add_typer(models_app, name="models")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML settings file (also $VOXMATCH_CONFIG). Keys as in docs/configuration.md.",
        dir_okay=False,
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder for tasks and the model cache [default: ./voxmatch-data]",
        file_okay=False,
    ),
]


@app.callback()
def _group() -> None:
    """Open speaker identification: SPE4-compatible server, voiceprints, comparison."""


def _settings(config: Path | None, **overrides: object) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ConfigError as error:
        _fail(str(error), code=2)


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"voxmatch: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="REST address [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="REST port [default: 8000]")] = None,
    grpc_port: Annotated[
        int | None, typer.Option("--grpc-port", help="gRPC port [default: 8080]")
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    assignments: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Any setting as NAME=VALUE (repeatable), e.g. --set max_matrix_size=2000000;"
            " see docs/configuration.md.",
        ),
    ] = None,
) -> None:
    """Start the server (REST and gRPC) on the embedded defaults unless told otherwise."""
    overrides: dict[str, object] = {}
    for assignment in assignments or []:
        name, separator, value = assignment.partition("=")
        if not separator or not name.strip():
            _fail(f"--set takes NAME=VALUE, got {assignment!r}", code=2)
        overrides[name.strip()] = value
    flags = {"host": host, "port": port, "grpc_port": grpc_port, "data_dir": data_dir}
    overrides.update({name: value for name, value in flags.items() if value is not None})
    settings = _settings(config, **overrides)
    from voxmatch.api_keys import KeyFileError
    from voxmatch.models.speaker_model import SpeakerModelError
    from voxmatch.server import serve as run_server

    try:
        run_server(settings)
    except KeyFileError as error:
        _fail(str(error), code=2)
    except SpeakerModelError as error:
        _fail(f"cannot use the configured model: {error}", code=2)
    except OSError as error:
        _fail(f"cannot start the server: {error}")


@app.command()
def extract(
    files: Annotated[list[Path], typer.Argument(help="Media files.", exists=True, dir_okay=False)],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the voiceprint files.", file_okay=False)
    ] = Path("."),
    channel_mode: Annotated[
        str, typer.Option(help="split: one voiceprint per channel; mix: one of their average.")
    ] = "split",
    channels: Annotated[
        str | None, typer.Option(help="0-based channels to use, comma-separated (all if unset).")
    ] = None,
    max_speech: Annotated[
        float | None,
        typer.Option("--max-speech", help="Stop after this many seconds of speech.", min=0.1),
    ] = None,
    start: Annotated[
        float | None, typer.Option(help="Skip the audio before this many seconds.", min=0)
    ] = None,
    end: Annotated[
        float | None, typer.Option(help="Ignore the audio after this many seconds.", min=0)
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Extract voiceprints: one `<file>.vp` per file (`<file>.ch<N>.vp` per channel), holding
    the voiceprint's base64 text as SPE4's REST API carries it."""
    from rich.console import Console
    from rich.progress import track

    from voxmatch.audio import AudioError, TimeRange, decode, parse_channel_mode
    from voxmatch.models.speaker_model import SpeakerModelError
    from voxmatch.server import build_extractor

    settings = _settings(config, data_dir=data_dir)
    try:
        parse_channel_mode(channel_mode)
        selected = _parse_channels(channels)
        time_range = TimeRange(start, end)
    except (AudioError, ValueError) as error:
        _fail(str(error), code=2)
    out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    try:
        extractor = build_extractor(settings).get()
    except Exception as error:
        _fail(f"cannot load the speaker model: {error}")
    failures = 0
    for path in track(files, description="Extracting", console=console, transient=True):
        try:
            audio = decode(path, time_range=time_range, max_duration=settings.max_audio_seconds)
            results = extractor.extract_audio(
                audio,
                channel_mode=channel_mode,
                channels=selected,
                max_speech_seconds=max_speech,
            )
        except (ValueError, SpeakerModelError) as error:  # AudioError is a ValueError
            console.print(f"[red]{path}[/red]: {error}")
            failures += 1
            continue
        for result in results:
            name = path.stem if len(results) == 1 else f"{path.stem}.ch{result.channel_number}"
            target = out / f"{name}.vp"
            voiceprint = result.extraction.voiceprint
            target.write_text(voiceprint.to_base64() + "\n")
            typer.echo(f"{target}\tspeech {voiceprint.speech_length:.2f} s")
    if failures:
        _fail(f"{failures} of {len(files)} files could not be used")


@app.command()
def compare(
    voiceprints: Annotated[
        list[Path],
        typer.Argument(
            help="Voiceprints: .vp files, list files (one base64 per line, or a JSON list),"
            " or folders of .vp files.",
            exists=True,
        ),
    ],
    against: Annotated[
        list[Path] | None,
        typer.Option(
            "--against",
            "-b",
            help="Voiceprints to compare with (the columns); default: the first set itself.",
            exists=True,
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the matrix as JSON here.", dir_okay=False)
    ] = None,
    npy_out: Annotated[
        Path | None, typer.Option("--npy", help="Write the matrix as .npy here.", dir_okay=False)
    ] = None,
) -> None:
    """Compare voiceprints locally and print the LLR matrix (rows: first set; columns: --against).

    Scores are calibrated log-likelihood ratios: positive favours the same speaker.
    """
    import numpy as np
    import orjson

    from voxmatch import VoiceprintError
    from voxmatch import compare as compare_voiceprints
    from voxmatch._voiceprint_files import VoiceprintFileError, read_voiceprints

    try:
        labels_a, batch_a = read_voiceprints(voiceprints)
        labels_b, batch_b = read_voiceprints(against) if against else (labels_a, batch_a)
        scores = compare_voiceprints(batch_a, batch_b)
    except (VoiceprintFileError, VoiceprintError) as error:
        _fail(str(error), code=1)
    if npy_out is not None:
        np.save(npy_out, scores)
    if json_out is not None:
        json_out.write_bytes(
            orjson.dumps(
                {
                    "rows": labels_a,
                    "columns": labels_b,
                    "scores": {
                        "rows_count": scores.shape[0],
                        "columns_count": scores.shape[1],
                        "values": scores.reshape(-1),
                    },
                },
                option=orjson.OPT_SERIALIZE_NUMPY,
            )
        )
    if (npy_out is None and json_out is None) or sys.stdout.isatty():
        _print_matrix(labels_a, labels_b, scores)


def _print_matrix(rows: list[str], columns: list[str], scores: object) -> None:
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    matrix = np.asarray(scores)
    console = Console()
    shown_columns = min(len(columns), 12)
    shown_rows = min(len(rows), 200)
    table = Table(title="LLR scores (positive: same speaker more likely)", show_lines=False)
    table.add_column("")
    for label in columns[:shown_columns]:
        table.add_column(label, justify="right")
    for row in range(shown_rows):
        cells = [
            f"[{'green' if value > 0 else 'red'}]{value:.2f}"
            for value in matrix[row, :shown_columns]
        ]
        table.add_row(rows[row], *cells)
    console.print(table)
    if shown_rows < len(rows) or shown_columns < len(columns):
        console.print(
            f"(showing {shown_rows} x {shown_columns} of {len(rows)} x {len(columns)};"
            " use --json or --npy for all)"
        )


def _parse_channels(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--channels must be like 0,1; got {text!r}") from None


@models_app.command("list")
def list_models(data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """The models voxmatch knows, and whether their files are in the cache."""
    from voxmatch.models.registry import known_models

    settings = _settings(config, data_dir=data_dir)
    for model in known_models():
        cached = (
            model.weights is not None
            and (settings.model_cache_dir / model.weights.filename).exists()
        )
        default = " (default)" if model.name == settings.default_model else ""
        typer.echo(
            f"{model.name}{default}\t{model.embedding_dim} dims\t"
            f"llr = {model.calibration.scale:.4g} * cos + {model.calibration.offset:.4g}\t"
            f"{'cached' if cached else 'not fetched yet'}"
        )


@models_app.command("pull")
def pull_models(
    to: Annotated[
        Path | None,
        typer.Option(
            "--to",
            help="Folder to fill (then point models_dir / VOXMATCH_MODELS_DIR at it)"
            " [default: the data folder's model cache]",
            file_okay=False,
        ),
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Fetch, verify and keep every model file the server needs, for offline use."""
    from voxmatch.assets import AssetError, locate_all
    from voxmatch.models.registry import describe
    from voxmatch.vad import SILERO_VAD_SEQUENCE

    settings = _settings(config, data_dir=data_dir)
    target = to or settings.model_cache_dir
    weights = describe(settings.default_model).weights
    wanted = [asset for asset in (weights, SILERO_VAD_SEQUENCE) if asset is not None]
    try:
        paths = locate_all(wanted, target)
    except AssetError as error:
        _fail(str(error))
    for path in paths:
        typer.echo(f"{path}\t{path.stat().st_size} bytes\tSHA-256 verified")


keys_app = typer.Typer(help="API keys: when `api_keys_file` is set, requests need a key.")
app.add_typer(keys_app, name="keys")


@keys_app.command("add")
def add_api_key(
    name: Annotated[str, typer.Argument(help="Who the key is for: one word, unique in the file.")],
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="Key file to append to (created owner-only) [default: the configured"
            " api_keys_file]",
            dir_okay=False,
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Make a new API key, print it (this once only: the file keeps its hash) and add it."""
    from voxmatch.api_keys import KeyFileError, add_key

    target = file or _settings(config).api_keys_file
    if target is None:
        _fail("no key file: give --file F or set api_keys_file (VOXMATCH_API_KEYS_FILE)", code=2)
    try:
        key = add_key(target, name)
    except KeyFileError as error:
        _fail(str(error), code=2)
    typer.echo(key)
    typer.echo(f"added key {name!r} to {target}; it is not shown again", err=True)


def main() -> None:
    app()
