"""Check the speaker labels of the corpora in tools.corpora with the real model.

Every file of a corpus is turned into a voiceprint with the Python API (`voxmatch.extract`, the
default model), and every unordered pair of files is a trial scored by raw cosine (the dot
product of `voxmatch.to_vector`, no calibration). A wrong label shows up as a high equal error
rate, as a same-speaker pair with a very low cosine or as a different-speaker pair with a very
high one; the extreme pairs are printed so they can be listened to.

    .venv/bin/python -m tools.corpus_check [--corpus NAME ...] [--min-seconds 0] [--pooled]

The default corpora are the ones added for issue 8 (asterisk-g722, ktuberling, asterisk-gsm).
`--pooled` adds one check of all the listed corpora of a band together, so that pairs across
corpora count too (a speaker in two corpora under two ids would show there).
docs/data.md quotes the figures.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

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


def check(corpus: str, files: list[corpora.SpeechFile]) -> LabelCheck:
    vectors: list[npt.NDArray[np.float32]] = []
    kept: list[corpora.SpeechFile] = []
    for file in files:
        (voiceprint,) = voxmatch.extract(file.path, channel_mode="mix")
        vector = voxmatch.to_vector(voiceprint)
        if vector.size:
            vectors.append(vector)
            kept.append(file)
    units = np.array(vectors, dtype=np.float64)
    cosines = units @ units.T
    labels = np.array([file.speaker for file in kept])
    first, second = np.triu_indices(len(kept), 1)
    scores = cosines[first, second]
    same = labels[first] == labels[second]
    low = int(np.argmin(np.where(same, scores, np.inf)))
    high = int(np.argmax(np.where(same, -np.inf, scores)))
    return LabelCheck(
        corpus,
        files=len(files),
        speakers=len({file.speaker for file in files}),
        silent=len(files) - len(kept),
        same_pairs=int(same.sum()),
        different_pairs=int((~same).sum()),
        eer=equal_error_rate(scores[same], scores[~same]),
        lowest_same=(float(scores[low]), _label(kept[first[low]]), _label(kept[second[low]])),
        highest_different=(
            float(scores[high]),
            _label(kept[first[high]]),
            _label(kept[second[high]]),
        ),
    )


def _label(file: corpora.SpeechFile) -> str:
    return f"{file.corpus}:{file.name}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [corpus.name for corpus in corpora.CORPORA if corpus.single_speaker]
    parser.add_argument("--corpus", action="append", choices=names, help="repeatable")
    parser.add_argument("--min-seconds", type=float, default=0.0)
    parser.add_argument("--pooled", action="store_true")
    args = parser.parse_args(argv)
    wanted = args.corpus or list(_DEFAULT_CORPORA)
    print(f"raw cosine, every unordered pair of files of at least {args.min_seconds} s")
    pooled: dict[str, list[corpora.SpeechFile]] = {}
    for corpus in corpora.CORPORA:
        if corpus.name not in wanted:
            continue
        files = [corpora.with_seconds(file) for file in corpus.list_files()]
        files = [file for file in files if (file.seconds or 0.0) >= args.min_seconds]
        _report(corpus.name, files)
        pooled.setdefault(corpus.band, []).extend(files)
    if args.pooled:
        for band, files in pooled.items():
            _report(f"all {band} corpora above", files)
    return 0


def _has_trials(files: list[corpora.SpeechFile]) -> bool:
    speakers = [file.speaker for file in files]
    return len(set(speakers)) >= 2 and len(set(speakers)) < len(speakers)


def _report(corpus: str, files: list[corpora.SpeechFile]) -> None:
    if not _has_trials(files):
        print(f"{corpus}: {len(files)} files, too few for same- and different-speaker pairs")
        return
    result = check(corpus, files)
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
