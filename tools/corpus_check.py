"""Check the speaker labels of the corpora in tools.corpora with the real model.

Every file of a corpus is turned into a voiceprint with the Python API (`voxmatch.extract`, the
default model), and every unordered pair of files is a trial scored by raw cosine (the dot
product of `voxmatch.to_vector`, no calibration). A wrong label shows up as a high equal error
rate, as a same-speaker pair with a very low cosine or as a different-speaker pair with a very
high one; the extreme pairs are printed so they can be listened to.

    .venv/bin/python -m tools.corpus_check [--corpus NAME ...] [--min-seconds 0] [--pooled]
        [--cross-band] [--by-folder]

The default corpora are the ones added for issue 8 (asterisk-g722, ktuberling, asterisk-gsm).
`--pooled` adds one check of all the listed corpora of a band together, so that pairs across
corpora count too (a speaker in two corpora under two ids would show there). `--cross-band`
adds the trials of every wideband file against every narrowband file, except the pairs of the
same name (the same Asterisk prompt is one take encoded twice). `--by-folder` labels each file
by its voice folder instead of its speaker (Allison Smith's en_US and es_MX prompts become two
"speakers"), to see how much of an EER the pairs across languages make. Each file is extracted
once.
docs/data.md quotes the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

import voxmatch
from tools import corpora
from voxmatch.calibration import equal_error_rate

_DEFAULT_CORPORA = ("asterisk-g722", "ktuberling", "asterisk-gsm")


@dataclass(frozen=True)
class LabelCheck:
    corpus: str
    files: int
    speakers: int
    silent: int
    """Files whose voiceprint is empty (too little speech); left out of the trials."""
    same_pairs: int
    different_pairs: int
    eer: float
    lowest_same: tuple[float, str, str]
    highest_different: tuple[float, str, str]


class Voiceprints:
    """The unit vector of each file, extracted once however many checks use the file."""

    def __init__(self) -> None:
        self._vectors: dict[tuple[str, str], npt.NDArray[np.float32]] = {}

    def of(self, file: corpora.SpeechFile) -> npt.NDArray[np.float32]:
        key = (file.corpus, file.name)
        if key not in self._vectors:
            (voiceprint,) = voxmatch.extract(file.path, channel_mode="mix")
            self._vectors[key] = voxmatch.to_vector(voiceprint)
        return self._vectors[key]


def check(
    title: str,
    rows: list[corpora.SpeechFile],
    voiceprints: Voiceprints,
    columns: list[corpora.SpeechFile] | None = None,
) -> LabelCheck | None:
    """Every unordered pair of `rows`, or every pair of a row and a column (but those of the
    same name) when `columns` is given; None when there are not both kinds of pair."""
    kept_rows, row_units = _with_speech(rows, voiceprints)
    if columns is None:
        kept_columns, column_units = kept_rows, row_units
        first, second = np.triu_indices(len(kept_rows), 1)
    else:
        kept_columns, column_units = _with_speech(columns, voiceprints)
        first, second = (axis.ravel() for axis in np.indices((len(kept_rows), len(kept_columns))))
        names = np.array([file.name for file in kept_rows], dtype=object)
        column_names = np.array([file.name for file in kept_columns], dtype=object)
        distinct = names[first] != column_names[second]
        first, second = first[distinct], second[distinct]
    if not kept_rows or not kept_columns:
        return None
    scores = np.einsum("ij,ij->i", row_units[first], column_units[second])
    speakers = np.array([file.speaker for file in kept_rows], dtype=object)
    column_speakers = np.array([file.speaker for file in kept_columns], dtype=object)
    same = speakers[first] == column_speakers[second]
    if same.all() or not same.any():
        return None
    low = int(np.argmin(np.where(same, scores, np.inf)))
    high = int(np.argmax(np.where(same, -np.inf, scores)))
    everyone = rows + (columns or [])
    return LabelCheck(
        title,
        files=len(everyone),
        speakers=len({file.speaker for file in everyone}),
        silent=len(rows) - len(kept_rows) + (len(columns) - len(kept_columns) if columns else 0),
        same_pairs=int(same.sum()),
        different_pairs=int((~same).sum()),
        eer=equal_error_rate(scores[same], scores[~same]),
        lowest_same=(
            float(scores[low]),
            _label(kept_rows[first[low]]),
            _label(kept_columns[second[low]]),
        ),
        highest_different=(
            float(scores[high]),
            _label(kept_rows[first[high]]),
            _label(kept_columns[second[high]]),
        ),
    )


def _with_speech(
    files: list[corpora.SpeechFile], voiceprints: Voiceprints
) -> tuple[list[corpora.SpeechFile], npt.NDArray[np.float64]]:
    kept = [file for file in files if voiceprints.of(file).size]
    if not kept:
        return kept, np.empty((0, 0))
    return kept, np.array([voiceprints.of(file) for file in kept], dtype=np.float64)


def _labelled_by_folder(file: corpora.SpeechFile) -> corpora.SpeechFile:
    folder = Path(file.name).parent
    if folder == Path():
        return file
    return dataclasses.replace(file, speaker=f"{file.speaker}/{folder}")


def _label(file: corpora.SpeechFile) -> str:
    return f"{file.corpus}:{file.name}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [corpus.name for corpus in corpora.CORPORA if corpus.single_speaker]
    parser.add_argument("--corpus", action="append", choices=names, help="repeatable")
    parser.add_argument("--min-seconds", type=float, default=0.0)
    parser.add_argument("--pooled", action="store_true")
    parser.add_argument("--cross-band", action="store_true")
    parser.add_argument("--by-folder", action="store_true")
    args = parser.parse_args(argv)
    wanted = args.corpus or list(_DEFAULT_CORPORA)
    print(f"raw cosine, every pair of files of at least {args.min_seconds} s")
    voiceprints = Voiceprints()
    by_band: dict[str, list[corpora.SpeechFile]] = {}
    for corpus in corpora.CORPORA:
        if corpus.name not in wanted:
            continue
        files = [corpora.with_seconds(file) for file in corpus.list_files()]
        files = [file for file in files if (file.seconds or 0.0) >= args.min_seconds]
        if args.by_folder:
            files = [_labelled_by_folder(file) for file in files]
        _report(corpus.name, check(corpus.name, files, voiceprints))
        by_band.setdefault(corpus.band, []).extend(files)
    if args.pooled:
        for band, files in by_band.items():
            title = f"all {band} corpora above"
            _report(title, check(title, files, voiceprints))
    if args.cross_band:
        title = "wideband against narrowband"
        wideband = by_band.get(corpora.WIDEBAND, [])
        narrowband = by_band.get(corpora.NARROWBAND, [])
        _report(title, check(title, wideband, voiceprints, narrowband))
    return 0


def _report(title: str, result: LabelCheck | None) -> None:
    if result is None:
        print(f"{title}: too few files for both same- and different-speaker pairs")
        return
    low, high = result.lowest_same, result.highest_different
    print(
        f"{result.corpus}: {result.files} files ({result.silent} without speech), "
        f"{result.speakers} speakers, {result.same_pairs} same-speaker / "
        f"{result.different_pairs} different pairs: EER {100 * result.eer:.2f} %\n"
        f"  lowest same-speaker cosine {low[0]:.3f} ({low[1]} ~ {low[2]})\n"
        f"  highest different-speaker cosine {high[0]:.3f} ({high[1]} ~ {high[2]})"
    )


if __name__ == "__main__":
    sys.exit(main())
