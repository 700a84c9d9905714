"""The `voxmatch` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from voxmatch.config import ConfigError, Settings, load_settings

app = typer.Typer(
    name="voxmatch",
    help="Open speaker identification: SPE4-compatible server, voiceprints, comparison.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

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
        typer.echo(f"voxmatch: {error}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="REST address [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="REST port [default: 8000]")] = None,
    grpc_port: Annotated[
        int | None, typer.Option("--grpc-port", help="gRPC port [default: 8080]")
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Start the server (REST and gRPC) on the embedded defaults unless told otherwise."""
    settings = _settings(config, host=host, port=port, grpc_port=grpc_port, data_dir=data_dir)
    from voxmatch.server import serve as run_server

    try:
        run_server(settings)
    except OSError as error:
        typer.echo(f"voxmatch: cannot start the server: {error}", err=True)
        raise typer.Exit(1) from None


def main() -> None:
    app()
