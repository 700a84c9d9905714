"""`voxmatch gallery ...`: speaker galleries of a data folder, in-process (no server).

The galleries are those of the data folder (`--data-dir`, else `data_dir` of the settings), the
very ones a server on that folder serves; use the command while no server runs on it. Errors end
in one line `voxmatch: ...` on stderr: exit 2 for a wrong command line or settings, 1 for inputs
that cannot be used (an unknown gallery or speaker, a bad voiceprint file).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from voxmatch.config import ConfigError, load_settings

if TYPE_CHECKING:
    from voxmatch.galleries import Enrolment, GalleryStore

gallery_app = typer.Typer(
    help="Speaker galleries: enrol speakers once, search voices against all of them.",
    no_args_is_help=True,
)

IMPORT_BATCH = 10_000
"""Speakers written to the gallery in one durable step while importing."""

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data folder (default: ./voxmatch-data)", file_okay=False),
]
Config = Annotated[
    Path | None,
    typer.Option("--config", help="TOML settings file (also $VOXMATCH_CONFIG).", dir_okay=False),
]
Name = Annotated[str, typer.Argument(help="The gallery's name.")]


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"voxmatch: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _galleries(data_dir: Path | None, config: Path | None) -> Iterator[GalleryStore]:
    from voxmatch._galleries_api import index_settings, open_galleries
    from voxmatch.galleries import GalleryError

    try:
        overrides = {"data_dir": data_dir} if data_dir is not None else {}
        settings = load_settings(config, **overrides)
    except ConfigError as error:
        _fail(str(error), code=2)
    try:
        store = open_galleries(
            settings.data_dir, fsync=settings.fsync, index=index_settings(settings)
        )
    except OSError as error:
        _fail(f"cannot open the galleries of {settings.data_dir}: {error.strerror}")
    try:
        yield store
    except GalleryError as error:
        _fail(error.message)
    finally:
        store.close()


@gallery_app.command("create")
def create(
    name: Name,
    model: Annotated[
        str | None, typer.Option(help="Model of its voiceprints (default: default_model).")
    ] = None,
    data_dir: DataDir = None,
    config: Config = None,
) -> None:
    """Create a gallery (nothing happens if it exists with that model)."""
    from voxmatch.models.registry import DEFAULT_MODEL_NAME

    with _galleries(data_dir, config) as store:
        info, created = store.create(name, model=model or DEFAULT_MODEL_NAME)
    typer.echo(f"{'created' if created else 'found'} gallery {info.gallery!r} ({info.model})")


@gallery_app.command("enrol")
def enrol(
    name: Name,
    speaker_id: Annotated[str, typer.Argument(help="The speaker's id.")],
    voiceprints: Annotated[
        list[Path],
        typer.Argument(
            help="Voiceprints of the speaker: .vp files, list files or folders.", exists=True
        ),
    ],
    metadata: Annotated[
        str | None, typer.Option(help="A JSON object stored with the speaker.")
    ] = None,
    add: Annotated[
        bool, typer.Option("--add", help="Add to an enrolled speaker instead of replacing it.")
    ] = False,
    data_dir: DataDir = None,
    config: Config = None,
) -> None:
    """Enrol (or replace) a speaker with one or more voiceprints."""
    batch = _read(voiceprints)[1]
    parsed = _metadata(metadata)
    with _galleries(data_dir, config) as store:
        gallery = store.gallery(name)
        if add:
            if parsed is not None:
                _fail("--metadata is for enrolling; --add keeps the speaker's metadata", code=2)
            info = gallery.add_voiceprints(speaker_id, batch)
        else:
            info = gallery.enrol_speaker(speaker_id, batch, parsed)
    typer.echo(
        f"{info.speaker_id}: {info.voiceprints_count} voiceprints,"
        f" {info.speech_length:.1f} s of speech"
    )


@gallery_app.command("import")
def import_speakers(
    name: Name,
    source: Annotated[
        Path,
        typer.Argument(
            help="A folder (each .vp file a speaker named by the file; each subfolder a speaker"
            " named by the folder, its .vp files the recordings) or a JSON-lines file (one"
            ' {"speaker_id", "voiceprints": [base64...], "metadata"} per line).',
            exists=True,
        ),
    ],
    progress: Annotated[
        bool | None,
        typer.Option("--progress/--no-progress", help="Progress bar (default: on a terminal)"),
    ] = None,
    data_dir: DataDir = None,
    config: Config = None,
) -> None:
    """Enrol many speakers at once (each replaces an enrolled speaker of its id)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    shown = console.is_terminal if progress is None else progress
    enrolled = 0
    with (
        _galleries(data_dir, config) as store,
        Progress(
            TextColumn("importing"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            console=console,
            disable=not shown,
        ) as bar,
    ):
        gallery = store.gallery(name)
        task = bar.add_task("import", total=_count_speakers(source))
        for enrolment in _enrolments(source, gallery.model):
            gallery.enrol(enrolment)
            enrolled += len(enrolment.speaker_ids)
            bar.update(task, completed=enrolled)
    typer.echo(f"imported {enrolled} speakers into {name!r}")


@gallery_app.command("search")
def search(
    name: Name,
    probes: Annotated[
        list[Path],
        typer.Argument(
            help="Voiceprints to search: .vp files, list files or folders.", exists=True
        ),
    ],
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Matches per probe.")] = 5,
    prior_in_gallery: Annotated[
        float,
        typer.Option(
            "--prior-in-gallery",
            min=0.0,
            max=1.0,
            help="Prior probability that a probe's speaker is enrolled at all.",
        ),
    ] = 0.5,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the results as JSON here.", dir_okay=False)
    ] = None,
    data_dir: DataDir = None,
    config: Config = None,
) -> None:
    """Search voiceprints against every speaker of a gallery: the best matches of each, with
    their LLR score and posterior probability."""
    labels, batch = _read(probes)
    with _galleries(data_dir, config) as store:
        results = store.gallery(name).search(batch, top_k=top_k, prior_in_gallery=prior_in_gallery)
    if json_out is not None:
        document = [
            {"probe": label, "matches": [vars(match) for match in matches]}
            for label, matches in zip(labels, results, strict=True)
        ]
        try:
            json_out.write_text(json.dumps(document, ensure_ascii=False, indent=1))
        except OSError as error:
            _fail(f"cannot write {json_out}: {error.strerror}")
    if json_out is None or sys.stdout.isatty():
        for label, matches in zip(labels, results, strict=True):
            for rank, match in enumerate(matches, start=1):
                typer.echo(
                    f"{label}\t{rank}\t{match.speaker_id}\t{match.score:.3f}"
                    f"\t{match.probability:.4f}"
                )


@gallery_app.command("list")
def list_galleries(
    name: Annotated[
        str | None, typer.Argument(help="A gallery: list its speakers instead.")
    ] = None,
    data_dir: DataDir = None,
    config: Config = None,
) -> None:
    """List the galleries (name, model, speakers, voiceprints), or the speakers of one."""
    with _galleries(data_dir, config) as store:
        if name is None:
            for info in store.galleries():
                typer.echo(
                    f"{info.gallery}\t{info.model}\t{info.speakers_count}\t{info.voiceprints_count}"
                )
            return
        gallery = store.gallery(name)
        offset = 0
        while page := gallery.speakers(offset, 1000):
            for speaker in page:
                typer.echo(
                    f"{speaker.speaker_id}\t{speaker.voiceprints_count}"
                    f"\t{speaker.speech_length:.1f}"
                )
            offset += len(page)


@gallery_app.command("delete")
def delete(
    name: Name,
    speaker_id: Annotated[
        str | None, typer.Argument(help="Delete only this speaker of the gallery.")
    ] = None,
    data_dir: DataDir = None,
    config: Config = None,
) -> None:
    """Delete a gallery with all its speakers, or one speaker of it."""
    with _galleries(data_dir, config) as store:
        if speaker_id is None:
            store.delete(name)
            typer.echo(f"deleted gallery {name!r}")
        else:
            store.gallery(name).delete_speaker(speaker_id)
            typer.echo(f"deleted speaker {speaker_id!r} of {name!r}")


def _read(paths: list[Path]) -> tuple[list[str], Any]:
    from voxmatch._voiceprint_files import VoiceprintFileError, read_voiceprints

    try:
        return read_voiceprints(paths)
    except VoiceprintFileError as error:
        _fail(str(error))


def _metadata(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        _fail(f"--metadata is not valid JSON: {error}", code=2)
    if not isinstance(value, dict):
        _fail("--metadata must be a JSON object", code=2)
    return value


def _count_speakers(source: Path) -> int:
    if source.is_dir():
        return sum(1 for child in source.iterdir() if child.is_dir() or child.suffix == ".vp")
    with source.open("rb") as stream:
        return sum(1 for line in stream if line.strip())


def _enrolments(source: Path, model: str) -> Iterator[Enrolment]:
    """Batches of `IMPORT_BATCH` speakers of the folder or JSON-lines file."""
    import numpy as np

    from voxmatch.galleries import Enrolment
    from voxmatch.voiceprint import VoiceprintError, decode_base64_batch

    speaker_ids: list[str] = []
    texts: list[str] = []
    counts: list[int] = []
    metadata: list[dict[str, Any] | None] = []
    places: list[str] = []

    def batch() -> Enrolment:
        try:
            voiceprints = decode_base64_batch(texts, model=model)
        except VoiceprintError as error:
            _fail(f"{places[error.index]}: {error}")
        return Enrolment(
            list(speaker_ids),
            voiceprints,
            np.repeat(np.arange(len(counts)), counts),
            list(metadata),
        )

    for speaker_id, items, extra, where in _speakers_in(source):
        speaker_ids.append(speaker_id)
        texts.extend(items)
        places.extend(f"{where} (item {number})" for number in range(len(items)))
        counts.append(len(items))
        metadata.append(extra)
        if len(speaker_ids) == IMPORT_BATCH:
            yield batch()
            for pending in (speaker_ids, texts, counts, metadata, places):
                pending.clear()
    if speaker_ids:
        yield batch()


def _speakers_in(source: Path) -> Iterator[tuple[str, list[str], dict[str, Any] | None, str]]:
    """(speaker id, base64 voiceprints, metadata, where it was read) of each speaker."""
    if source.is_dir():
        from voxmatch._voiceprint_files import VoiceprintFileError, read_voiceprints

        for child in sorted(source.iterdir()):
            if not (child.is_dir() or child.suffix == ".vp"):
                continue
            try:
                _, voiceprints = read_voiceprints([child])
            except VoiceprintFileError as error:
                _fail(str(error))
            speaker_id = child.stem if child.is_file() else child.name
            yield speaker_id, voiceprints.to_base64_list(), None, str(child)
        return
    with source.open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            where = f"{source} line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                _fail(f"{where}: not valid JSON: {error.msg}")
            if not (
                isinstance(record, dict)
                and isinstance(record.get("speaker_id"), str)
                and isinstance(record.get("voiceprints"), list)
                and record["voiceprints"]
                and all(isinstance(item, str) for item in record["voiceprints"])
                and isinstance(record.get("metadata"), dict | None)
            ):
                _fail(
                    f'{where}: expected {{"speaker_id": str, "voiceprints": [base64, ...],'
                    ' "metadata": {...} (optional)}'
                )
            yield record["speaker_id"], record["voiceprints"], record.get("metadata"), where
