"""The `voxmatch` command: serve, extract, compare, models.

Every bad input ends in one line `voxmatch: ...` on stderr and a non-zero exit: 2 for a wrong
command line or settings, 1 for inputs or resources that cannot be used. Progress bars go to
stderr, only when it is a terminal or `--progress` asks for them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

# Typer's own copy of click: its usage errors are caught in `main` to print them on one line.
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from voxmatch._version import __version__
from voxmatch.config import ConfigError, Settings, load_settings
from voxmatch.gallery_cli import gallery_app

if TYPE_CHECKING:
    from rich.progress import TaskID

    from voxmatch.bulk_extraction import ExtractionOptions, FileOutcome
    from voxmatch.profile_fitting import CalibrationReport

app = typer.Typer(
    name="voxmatch",
    help="Open speaker identification: SPE4-compatible server, voiceprints, comparison.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(
    help="Speaker models: list them, pull them for offline use.", no_args_is_help=True
)
app.add_typer(models_app, name="models")
app.add_typer(gallery_app, name="gallery")

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
    typer.Option("--data-dir", help="Folder for tasks (default: ./voxmatch-data)", file_okay=False),
]
ProgressOption = Annotated[
    bool | None,
    typer.Option(
        "--progress/--no-progress",
        help="Progress bars on stderr (default: when stderr is a terminal)",
    ),
]


def _show_version(shown: bool) -> None:
    if shown:
        typer.echo(f"voxmatch {__version__}")
        raise typer.Exit()


@app.callback()
def _group(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_show_version
        ),
    ] = False,
) -> None:
    """Open speaker identification: SPE4-compatible server, voiceprints, comparison.

    Model files are fetched once into the user's cache folder (`model_cache_dir`, see
    docs/configuration.md), shared by every working folder.
    """


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
    host: Annotated[str | None, typer.Option(help="REST address (default: 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="REST port (default: 8000)")] = None,
    grpc_port: Annotated[
        int | None, typer.Option("--grpc-port", help="gRPC port (default: 8080)")
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
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Media files, or folders of them (sub-folders too; see docs/cli.md for the"
            " file types).",
            exists=True,
        ),
    ] = None,
    lists: Annotated[
        list[Path] | None,
        typer.Option(
            "--list",
            help="A list file: one media file per line, relative to the list's folder"
            " (repeatable).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the voiceprint files.", file_okay=False)
    ] = Path("."),
    keep_extension: Annotated[
        bool,
        typer.Option(
            "--keep-extension",
            help="Name voiceprints after the whole file name (a.mp3 -> a.mp3.vp), so that"
            " a.mp3 and a.flac can go to one folder.",
        ),
    ] = False,
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
    processes: Annotated[
        int | None,
        typer.Option(
            "--processes",
            help="Worker processes, each with the model loaded once and extraction_threads"
            " onnxruntime threads (default 1); with --ray, actors (default: one per"
            " extraction_threads CPUs of the cluster).",
            min=1,
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray", help="Extract on the Ray cluster at this address (HOST:PORT, or auto)."
        ),
    ] = None,
    redo: Annotated[
        bool,
        typer.Option(
            "--redo",
            help="Extract the files of folders and lists again, even those whose voiceprints"
            " an earlier run wrote.",
        ),
    ] = False,
    progress: ProgressOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Extract voiceprints: one `<stem>.vp` per file (`<stem>.ch<N>.vp` per channel), holding
    the voiceprint's base64 text as SPE4's REST API carries it.

    The files of a folder go to the same sub-folders of --out (a/b/c.wav -> OUT/b/c.vp for
    the folder a). Two inputs that would write the same file (a.mp3 and a.flac) are refused
    before any work: use --keep-extension or separate --out folders. A file named on the
    command line is extracted again on every run; one of a folder or a list is skipped when
    its voiceprints are already in --out (an interrupted run resumes), unless --redo.
    """
    from voxmatch.audio import TimeRange, parse_channel_mode, parse_channels
    from voxmatch.bulk_extraction import ExtractionOptions, is_finished
    from voxmatch.request_checks import RequestError, speech_cap

    settings = _settings(config, data_dir=data_dir)
    try:
        parse_channel_mode(channel_mode)
        selected = parse_channels(channels or "")
        time_range = TimeRange(start, end)
        max_speech = speech_cap(max_speech)
    except RequestError as error:
        # The option at fault, by the name of the request field it sets.
        _fail(f"--{error.field[0]} {error.problem}", code=2)
    if not inputs and not lists:
        _fail("give media files, folders of them, or --list FILE", code=2)
    sources, relative_names, resumable = _sources(inputs or [], lists or [])
    names = _voiceprint_names(sources, relative_names, out, keep_extension=keep_extension)
    options = ExtractionOptions(
        channel_mode=channel_mode,
        channels=None if selected is None else tuple(selected),
        time_range=time_range,
        max_speech_seconds=max_speech,
        max_duration=settings.max_audio_seconds,
    )
    pending = [
        path
        for path in sources
        if redo
        or path not in resumable
        or not is_finished(options.expected_voiceprints(out / names[path], path))
    ]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        _fail(f"cannot create the folder {out}: {error.strerror}")
    with _Progress(progress) as bars:
        if len(pending) < len(sources):
            bars.warn(
                f"{len(sources) - len(pending)} of {len(sources)} files already extracted"
                f" into {out}, skipped (--redo extracts them again)"
            )
        if ray_address is not None:
            outcomes = _extract_on_cluster(bars, pending, options, settings, ray_address, processes)
        elif (processes or 1) > 1:
            outcomes = _extract_in_processes(bars, pending, options, settings, processes or 1)
        else:
            outcomes = _extract_here(bars, pending, options, settings)
        unusable = _write_voiceprints(bars, outcomes, len(pending), out, names)
    if unusable:
        _fail(f"{unusable} of {len(sources)} files could not be used")


def _sources(
    inputs: list[Path], lists: list[Path]
) -> tuple[list[Path], dict[Path, str], set[Path]]:
    """The media files to extract, in order, each once however it was named (a.wav, ./a.wav);
    the path of each relative to --out (its voiceprint's name, with the media's suffix); and
    those of folders and lists, which a later run skips once they are done."""
    from voxmatch.bulk_extraction import listed_files, media_files

    sources: list[Path] = []
    relative_names: dict[Path, str] = {}
    resumable: set[Path] = set()
    seen: set[Path] = set()

    def add(path: Path, relative: PurePosixPath, *, of_collection: bool) -> None:
        if path.resolve() in seen:
            return
        seen.add(path.resolve())
        sources.append(path)
        relative_names[path] = relative.as_posix()
        if of_collection:
            resumable.add(path)

    for item in inputs:
        if item.is_dir():
            found = media_files(item)
            if not found:
                typer.echo(f"voxmatch: {item} holds no media files", err=True)
            for path in found:
                add(path, PurePosixPath(path.relative_to(item).as_posix()), of_collection=True)
        else:
            add(item, PurePosixPath(item.name), of_collection=False)
    for list_file in lists:
        try:
            listed = listed_files(list_file)
        except OSError as error:
            _fail(f"cannot read the list file {list_file}: {error.strerror}", code=2)
        except UnicodeDecodeError:
            _fail(f"{list_file} is not a list file of paths, one a line (UTF-8)", code=2)
        folder = list_file.parent.resolve()
        for path in listed:
            try:
                relative = PurePosixPath(*path.resolve().relative_to(folder).parts)
            except ValueError:  # outside the list's folder (../x.wav, /elsewhere/x.wav)
                relative = PurePosixPath(path.name)
            add(path, relative, of_collection=True)
    return sources, relative_names, resumable


def _voiceprint_names(
    files: list[Path], relative_names: dict[Path, str], out: Path, *, keep_extension: bool
) -> dict[Path, str]:
    """The name each input's voiceprint files start with, relative to --out; two inputs that
    would write the same file are refused now, before any work. Names are compared ignoring
    case, because on the file systems of macOS and Windows A.vp and a.vp are one file."""
    names: dict[Path, str] = {}
    claimed: dict[str, Path] = {}
    for path in files:
        relative = PurePosixPath(relative_names[path])
        name = relative if keep_extension else relative.with_name(Path(relative.name).stem)
        earlier = claimed.setdefault(name.as_posix().casefold(), path)
        if earlier is not path:
            if keep_extension or earlier.name.casefold() == path.name.casefold():
                remedy = "rename one or extract them into separate --out folders"
            else:
                remedy = (
                    f"use --keep-extension (writes {earlier.name}.vp and {path.name}.vp)"
                    " or separate --out folders"
                )
            written = out / f"{names[earlier]}.vp"
            _fail(f"{earlier} and {path} would both write {written}; {remedy}", code=2)
        names[path] = name.as_posix()
    return names


def _extract_here(
    bars: _Progress, paths: list[Path], options: ExtractionOptions, settings: Settings
) -> Iterator[tuple[Path, FileOutcome]]:
    """In this process, with a bar over each recording's seconds."""
    from voxmatch.assets import reporting_downloads
    from voxmatch.shared_extractor import build_extractor

    if not paths:
        return
    try:
        with reporting_downloads(bars.download), bars.step("loading the speaker model"):
            extractor = build_extractor(settings).get()
    except Exception as error:  # noqa: BLE001 - fetching, converting, onnxruntime: errors vary
        bars.fail(f"cannot load the speaker model: {error}")
    for path in paths:
        with bars.recording(path.name) as on_progress:
            outcome = options.run(extractor, path, on_progress)
        yield path, outcome


def _extract_in_processes(
    bars: _Progress,
    paths: list[Path],
    options: ExtractionOptions,
    settings: Settings,
    processes: int,
) -> Iterator[tuple[Path, FileOutcome]]:
    from concurrent.futures.process import BrokenProcessPool

    from voxmatch.assets import reporting_downloads
    from voxmatch.bulk_extraction import extract_in_processes
    from voxmatch.shared_extractor import ModelError, build_extractor

    if not paths:
        return
    try:
        # Here first, once: a model to fetch is fetched once (with its progress bar), and a
        # model that cannot be loaded is one clear error instead of one per process.
        with reporting_downloads(bars.download), bars.step("loading the speaker model"):
            build_extractor(settings).get()
    except Exception as error:  # noqa: BLE001 - fetching, converting, onnxruntime: errors vary
        bars.fail(f"cannot load the speaker model: {error}")
    try:
        yield from extract_in_processes(paths, options, settings, processes)
    except ModelError as error:
        bars.fail(str(error))
    except BrokenProcessPool:
        bars.fail("a worker process died (out of memory?); run again to resume")


def _extract_on_cluster(
    bars: _Progress,
    paths: list[Path],
    options: ExtractionOptions,
    settings: Settings,
    address: str,
    actors: int | None,
) -> Iterator[tuple[Path, FileOutcome]]:
    from voxmatch.cluster import ClusterUnreachable, connect
    from voxmatch.shared_extractor import ModelError

    if not paths:
        return
    try:
        with bars.step(f"connecting to the Ray cluster at {address}"):
            connect(address)
    except ClusterUnreachable as error:
        bars.fail(str(error))
    from voxmatch.extraction_actors import ExtractionActors

    pool = ExtractionActors(settings, actors, reserve_cpus=True)
    try:
        yield from pool.extract_files(paths, options, settings.max_upload_bytes)
    except ModelError as error:
        bars.fail(str(error))
    finally:
        pool.close()
    if pool.lost_actors:
        bars.warn(
            f"lost {pool.lost_actors} cluster worker(s) with their nodes during the run;"
            " their files were extracted by the others"
        )


def _write_voiceprints(
    bars: _Progress,
    outcomes: Iterable[tuple[Path, FileOutcome]],
    count: int,
    out: Path,
    names: dict[Path, str],
) -> int:
    """Write each file's voiceprints as soon as it is done; the number of files unusable."""
    from voxmatch.bulk_extraction import voiceprint_path
    from voxmatch.voiceprint import NARROWBAND

    written: set[str] = set()
    unusable = 0
    with bars.collection(count) as finished:
        for path, outcome in outcomes:
            finished(outcome.audio_seconds)
            if outcome.problem is not None:
                bars.warn(f"{path}: {outcome.problem}")
                unusable += 1
                continue
            collided = False
            for result in outcome.channels:
                target = voiceprint_path(
                    out / names[path], result.channel_number, len(outcome.channels)
                )
                if target.as_posix().casefold() in written:
                    bars.warn(f"{path}: not written: {target} was written for another input")
                    collided = True
                    continue
                voiceprint = result.extraction.voiceprint
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _write_text_atomically(target, voiceprint.to_base64() + "\n")
                except OSError as error:
                    bars.fail(f"cannot write {target}: {error.strerror}")
                written.add(target.as_posix().casefold())
                condition = "narrowband" if voiceprint.condition == NARROWBAND else "wideband"
                typer.echo(
                    f"{target}\tspeech {voiceprint.speech_length:.2f} s\t{condition}"
                    f" {voiceprint.bandwidth:.0f} Hz"
                )
                if voiceprint.speech_length == 0:
                    bars.warn(f"{target}: no speech found: the empty voiceprint, which scores 0")
            unusable += collided
    return unusable


def _write_text_atomically(target: Path, text: str) -> None:
    """Write the whole file or nothing: an interrupted run never leaves half a voiceprint.
    The scratch file is opened as usual (not mkstemp), so the result gets the user's umask."""
    scratch = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with scratch.open("x", encoding="ascii", newline="\n") as stream:
            stream.write(text)
        os.replace(scratch, target)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise


class _Progress:
    """Progress bars on stderr, one task per long step: each model download, the loading of
    the model, the files of an extraction. Shown when stderr is a terminal, or when asked; a
    record of the finished downloads stays on screen, the other steps vanish when done."""

    def __init__(self, shown: bool | None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        self.shown = console.is_terminal if shown is None else shown
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            TextColumn("{task.fields[amount]}"),
            TimeRemainingColumn(),
            console=console,
            disable=not self.shown,
            # Lines printed to a terminal stdout go through the display, which would otherwise
            # overwrite them; a redirected stdout is left alone.
            redirect_stdout=sys.stdout.isatty(),
            redirect_stderr=False,
        )
        self._downloads: dict[str, TaskID] = {}

    def __enter__(self) -> _Progress:
        self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def download(self, name: str, received: int, total: int | None) -> None:
        """An `assets.DownloadProgress`."""
        amount = (
            f"{received / 1e6:.1f}/{total / 1e6:.1f} MB" if total else f"{received / 1e6:.1f} MB"
        )
        task = self._downloads.get(name)
        if task is None:
            # Distribution files are named NAME-VERSION-... (a wheel) or NAME-VERSION.tar.gz.
            package, _, rest = name.removesuffix(".tar.gz").partition("-")
            version = rest.partition("-")[0].removesuffix(".whl")
            self._downloads[name] = self._progress.add_task(
                f"fetching {package} {version}", total=total, completed=received, amount=amount
            )
        else:
            self._progress.update(task, completed=received, amount=amount)

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        task = self._progress.add_task(description, total=None, amount="")
        try:
            yield
        finally:
            self._progress.remove_task(task)

    @contextmanager
    def recording(self, name: str) -> Iterator[Callable[[float, float | None], None]]:
        """A bar over the seconds of one recording, for extract_source's `on_progress`: a
        long recording takes minutes, and the files bar alone would stand still meanwhile."""
        task = self._progress.add_task(name, total=None, amount="")

        def advance(done: float, total: float | None) -> None:
            amount = f"{done:.0f}/{total:.0f} s" if total else f"{done:.0f} s"
            self._progress.update(task, completed=done, total=total, amount=amount)

        try:
            yield advance
        finally:
            self._progress.remove_task(task)

    @contextmanager
    def collection(self, count: int) -> Iterator[Callable[[float], None]]:
        """A bar over the files of an extraction, for a callback called as each file is done
        with its seconds of audio: files per second and audio seconds per wall second (how
        many times real time) since the first file began."""
        import time

        task = self._progress.add_task("extracting", total=count, amount=f"0/{count} files")
        started = time.perf_counter()
        done = 0
        audio_seconds = 0.0

        def finished(seconds: float) -> None:
            nonlocal done, audio_seconds
            done += 1
            audio_seconds += seconds
            elapsed = max(time.perf_counter() - started, 1e-9)
            self._progress.update(
                task,
                completed=done,
                amount=f"{done}/{count} files, {done / elapsed:.2f} files/s,"
                f" {audio_seconds / elapsed:.1f}x real time",
            )

        try:
            yield finished
        finally:
            self._progress.remove_task(task)

    def files(self, paths: list[Path]) -> Iterable[Path]:
        task = self._progress.add_task(
            "extracting", total=len(paths), amount=f"0/{len(paths)} files"
        )
        for done, path in enumerate(paths, start=1):
            yield path
            self._progress.update(task, completed=done, amount=f"{done}/{len(paths)} files")
        self._progress.remove_task(task)

    def warn(self, message: str) -> None:
        """One `voxmatch: ...` line on stderr, above the bars when they are shown."""
        if self.shown:
            self._progress.console.print(
                f"voxmatch: {message}", markup=False, highlight=False, soft_wrap=True
            )
        else:
            typer.echo(f"voxmatch: {message}", err=True)

    def fail(self, message: str, code: int = 1) -> NoReturn:
        """`_fail` while the bars are shown, without drawing over them."""
        self.warn(message)
        raise typer.Exit(code)


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
    target = None
    try:
        if npy_out is not None:
            target = npy_out
            # Through an open file: np.save given a name would add ".npy" to it.
            with npy_out.open("wb") as stream:
                np.save(stream, scores)
        if json_out is not None:
            target = json_out
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
    except OSError as error:
        _fail(f"cannot write {target}: {error.strerror}")
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


@models_app.command("list")
def list_models(data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """The models voxmatch knows, whether their files are at hand, and where the cache is."""
    from voxmatch.models.registry import known_models
    from voxmatch.models.speaker_model import converted_path

    settings = _settings(config, data_dir=data_dir)
    folders = [folder for folder in (settings.models_dir, settings.model_cache) if folder]
    for model in known_models():
        weights = model.weights
        cached = weights is not None and any(
            (folder / weights.filename).exists() or converted_path(weights, folder).exists()
            for folder in folders
        )
        default = " (default)" if model.name == settings.default_model else ""
        typer.echo(
            f"{model.name}{default}\t{model.embedding_dim} dims\t"
            f"{model.calibration.describe()}\t"
            f"{'cached' if cached else 'not fetched yet'}"
        )
    typer.echo(f"model cache: {settings.model_cache}")


@models_app.command("pull")
def pull_models(
    to: Annotated[
        Path | None,
        typer.Option(
            "--to",
            help="Folder to fill (then point models_dir / VOXMATCH_MODELS_DIR at it)"
            " (default: the model cache, model_cache_dir)",
            file_okay=False,
        ),
    ] = None,
    progress: ProgressOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Fetch, verify and keep every model file the server needs, for offline use."""
    from voxmatch.assets import AssetError, locate_all, reporting_downloads
    from voxmatch.models.registry import describe
    from voxmatch.vad import SILERO_VAD_SEQUENCE

    settings = _settings(config, data_dir=data_dir)
    target = to or settings.model_cache
    weights = describe(settings.default_model).weights
    wanted = [asset for asset in (weights, SILERO_VAD_SEQUENCE) if asset is not None]
    try:
        with _Progress(progress) as bars, reporting_downloads(bars.download):
            paths = locate_all(wanted, target)
    except AssetError as error:
        _fail(str(error))
    except OSError as error:
        _fail(f"cannot fill {target}: {error.strerror}")
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
            help="Key file to append to (created owner-only) (default: the configured"
            " api_keys_file)",
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


@app.command()
def calibrate(
    name: Annotated[
        str, typer.Argument(help="The profile's name: letters, digits, '.', '_', '-' (<= 64).")
    ],
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Folders holding one sub-folder per speaker (recordings in any format the"
            " server reads, and/or .vp voiceprints), or list files of path<TAB>speaker lines.",
            exists=True,
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for the profile and its plots (default: the configured"
            " calibration_profiles_dir, where the server looks).",
            file_okay=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a profile of that name.")] = False,
    dcf_prior: Annotated[
        float,
        typer.Option(
            "--dcf-prior", help="Target prior of the detection cost (DCF).", min=1e-6, max=0.5
        ),
    ] = 0.01,
    prior: Annotated[
        float,
        typer.Option(
            "--prior", help="Target prior the calibration is fitted at.", min=0.01, max=0.99
        ),
    ] = 0.5,
    progress: ProgressOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Fit a calibration profile on your own labelled speech, report how well it does, save it.

    Every pair of different recordings is a trial (a recording of several channels counts as
    their mix). The table compares the shipped calibration and the fitted one on those trials,
    and, with 4 speakers or more, gives a speaker-disjoint cross-validated figure: what to
    expect on speakers the profile has not seen. Writes NAME.json (the profile), NAME.det.png
    and NAME.tippett.png into --out; a comparison request names it as "calibration": "NAME".
    See docs/calibration-profiles.md.
    """
    from voxmatch._voiceprint_files import VoiceprintFileError, read_voiceprints
    from voxmatch.assets import reporting_downloads
    from voxmatch.calibration_profiles import ProfileError, profile_path, save_profile
    from voxmatch.models.registry import describe
    from voxmatch.models.speaker_model import SpeakerModelError
    from voxmatch.profile_fitting import FittingError, fit_profile, labelled_files, write_plots
    from voxmatch.shared_extractor import SharedExtractor, build_extractor
    from voxmatch.voiceprint import Voiceprint, VoiceprintError

    settings = _settings(config, data_dir=data_dir)
    folder = out or settings.calibration_profiles
    try:
        target = profile_path(folder, name)
    except ProfileError as error:
        _fail(str(error), code=2)
    if target.exists() and not force:
        _fail(f"profile {name!r} exists ({target}); use --force to replace it", code=2)
    try:
        files, warnings = labelled_files(inputs)
    except FittingError as error:
        _fail(str(error), code=2)
    listed_speakers = len({item.speaker for item in files})
    if listed_speakers < 2:
        _fail(f"calibration needs recordings of at least 2 speakers, found {listed_speakers}", 2)
    speaker_of = {item.path: item.speaker for item in files}
    voiceprints: list[Voiceprint] = []
    speakers: list[str] = []
    with _Progress(progress) as bars:
        for warning in warnings:
            bars.warn(warning)
        extractor: SharedExtractor | None = None
        for path in bars.files(list(speaker_of)):
            if path.suffix.lower() == ".vp":
                try:
                    _, batch = read_voiceprints([path])
                except (VoiceprintFileError, VoiceprintError) as error:
                    bars.warn(f"{error}; left out")
                    continue
                found = list(batch)
            else:
                if extractor is None:
                    try:
                        with (
                            reporting_downloads(bars.download),
                            bars.step("loading the speaker model"),
                        ):
                            extractor = build_extractor(settings)
                            extractor.get()
                    except Exception as error:  # noqa: BLE001 - fetching, converting: errors vary
                        bars.fail(f"cannot load the speaker model: {error}")
                try:
                    with bars.recording(path.name) as on_progress:
                        results = extractor.get().extract_source(
                            path,
                            channel_mode="mix",
                            max_duration=settings.max_audio_seconds,
                            on_progress=on_progress,
                        )
                except (OSError, ValueError, SpeakerModelError) as error:  # AudioError: ValueError
                    bars.warn(f"{path}: {getattr(error, 'strerror', None) or error}; left out")
                    continue
                found = [result.extraction.voiceprint for result in results]
            for voiceprint in found:
                if voiceprint.speech_length == 0:
                    bars.warn(f"{path}: no speech found; left out")
                    continue
                voiceprints.append(voiceprint)
                speakers.append(speaker_of[path])
        for speaker in sorted(set(speaker_of.values())):
            if speakers.count(speaker) == 1:
                bars.warn(
                    f"speaker {speaker!r} has one usable recording: it gives no same-speaker trial"
                )
        if not voiceprints:
            bars.fail("none of the recordings could be used", code=2)
        shipped = describe(voiceprints[0].model).calibration
        try:
            report = fit_profile(
                name, voiceprints, speakers, shipped, prior=prior, dcf_prior=dcf_prior
            )
        except FittingError as error:
            bars.fail(str(error), code=2)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # The plots first: a profile in the folder is the sign that the run went through.
        plots = write_plots(report, folder)
        saved = save_profile(report.profile, folder, replace=force)
    except FileExistsError:
        _fail(f"profile {name!r} appeared at {target} meanwhile; use --force to replace it", 2)
    except OSError as error:
        _fail(f"cannot write into {folder}: {error.strerror}")
    _print_calibration_report(report)
    for path in (saved, *plots):
        typer.echo(f"wrote {path}")


def _print_calibration_report(report: CalibrationReport) -> None:
    from rich.console import Console
    from rich.table import Table

    provenance = report.profile.provenance
    # Redirected to a file, the table is kept whole rather than squeezed into 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=120)
    console.print(
        f"{provenance.recordings} recordings of {provenance.speakers} speakers:"
        f" {provenance.target_trials} same-speaker and {provenance.nontarget_trials}"
        f" different-speaker trials; pairs of conditions fitted on their own trials:"
        f" {', '.join(provenance.fitted_pairs)} (the others use the wideband fit)",
        highlight=False,
    )
    prior = report.fitted.evaluation.dcf_prior
    table = Table(
        title=f"calibration profile {report.profile.name} (DCF at target prior {prior:g})"
    )
    table.add_column("calibration")
    for heading in ("EER", "Cllr", "min Cllr", "DCF", "min DCF", "FA > 0", "FA > 2", "miss < 0"):
        table.add_column(heading, justify="right")
    for scored in report.scored():
        figures = scored.evaluation
        table.add_row(
            scored.label,
            f"{figures.eer:.2%}",
            f"{figures.cllr:.3f}",
            f"{figures.min_cllr:.3f}",
            f"{figures.actual_dcf:.3f}",
            f"{figures.min_dcf:.3f}",
            f"{figures.false_alarms_above_0:.1%}",
            f"{figures.false_alarms_above_2:.1%}",
            f"{figures.misses_below_0:.1%}",
        )
    console.print(table)
    console.print(
        "DCF: actual detection cost; FA > 0, FA > 2: different-speaker trials above LLR 0 and 2;"
        " miss < 0: same-speaker trials below LLR 0. The fitted row is measured on the trials it"
        " was fitted on.",
        highlight=False,
    )
    console.print(report.cross_validation_note, highlight=False)


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as error:
        error.show()
        code = error.exit_code
    except UsageError as error:
        hint = f" (see '{error.ctx.command_path} --help')" if error.ctx is not None else ""
        typer.echo(f"voxmatch: {error.format_message()}{hint}", err=True)
        code = error.exit_code
    except typer.TyperException as error:  # click's other errors, a file that cannot be opened
        typer.echo(f"voxmatch: {error.format_message()}", err=True)
        code = 1
    except typer.Abort:
        typer.echo("voxmatch: aborted", err=True)
        code = 1
    except BrokenPipeError:
        # The reader went away (`voxmatch compare ... | head`): not an error worth a message.
        # Point stdout at /dev/null so that the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    sys.exit(code or 0)
