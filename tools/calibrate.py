"""Fit the default model's score calibration on real speech, and judge it on held-out speakers.

Data (fetched from registry packages by tools.corpora, never committed):
- AMI meeting excerpts from the pyannote.audio sdist: single-speaker runs of at least
  --min-seconds, 16 speakers. Used for fitting, with speaker-disjoint cross-validation to
  report how the fit does on speakers it has not seen.
- CMU AN4 (5 speakers) and a LibriVox reader (1 speaker): never used for fitting; reported as
  an independent held-out set (pairs within each corpus only).

Every unordered pair of clips is a trial. The calibration is prior-weighted logistic regression
(voxmatch.calibration.LinearCalibration); the shipped values are the fit on all AMI trials.
The sets are small (tens of speakers): the figures rank choices and catch regressions; they are
not a production error rate.

    .venv/bin/python -m tools.calibrate [--min-seconds 1.0] [--folds 4]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tools import corpora
from voxmatch.calibration import LinearCalibration, cllr, equal_error_rate
from voxmatch.extraction import load_extractor
from voxmatch.models.registry import DEFAULT_MODEL_NAME
from voxmatch.scoring import unit_rows


@dataclass
class Trials:
    cosines: npt.NDArray[np.float64]
    same: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.cosines.size)

    @property
    def counts(self) -> str:
        return f"{int(self.same.sum())} same-speaker / {int((~self.same).sum())} different"


def pairs(
    embeddings: npt.NDArray[np.float32], speakers: list[str], keep: npt.NDArray[np.bool_]
) -> Trials:
    """Every unordered pair of the clips selected by `keep`."""
    units, _ = unit_rows(embeddings[keep])
    labels = np.array(speakers)[keep]
    cosines = units.astype(np.float64) @ units.T.astype(np.float64)
    upper = np.triu_indices(len(labels), 1)
    same = labels[:, None] == labels[None, :]
    return Trials(cosines[upper], same[upper])


def figures(
    cosines: npt.NDArray[np.float64], llrs: npt.NDArray[np.float64], same: npt.NDArray[np.bool_]
) -> str:
    eer = equal_error_rate(cosines[same], cosines[~same])
    return f"EER {100 * eer:5.2f} %, Cllr {cllr(llrs[same], llrs[~same]):.3f}"


def report(name: str, trials: Trials, scale: float, offset: float) -> None:
    llrs = scale * trials.cosines + offset
    print(
        f"  {name:34s} {len(trials):6d} trials ({trials.counts}):"
        f" {figures(trials.cosines, llrs, trials.same)}"
    )


def embed_all(
    clips: list[npt.NDArray[np.float32]],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    extractor = load_extractor(DEFAULT_MODEL_NAME, corpora.models_cache_dir())
    embeddings = []
    speech = []
    for samples in clips:
        extraction = extractor.extract(samples)
        embeddings.append(extraction.voiceprint.embedding)
        speech.append(extraction.speech_length)
    return np.stack(embeddings), np.array(speech, dtype=np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--folds", type=int, default=4)
    args = parser.parse_args()

    segments = corpora.ami_segments(args.min_seconds)
    ami_clips = [corpora.load_segment(segment) for segment in segments]
    ami_speakers = [segment.speaker for segment in segments]
    held_out = corpora.an4_files() + corpora.librivox_files()
    other_clips = [corpora.load(item.path) for item in held_out]
    other_speakers = [f"{item.corpus}:{item.speaker}" for item in held_out]
    other_corpora = [item.corpus for item in held_out]

    ami_embeddings, ami_speech = embed_all(ami_clips)
    other_embeddings, _ = embed_all(other_clips)
    usable = ami_speech > 0
    print(
        f"AMI: {len(segments)} runs >= {args.min_seconds} s of {len(set(ami_speakers))} speakers,"
        f" {int(usable.sum())} with detected speech"
    )

    # Speaker-disjoint folds: each fold's speakers are never seen by the fit that scores them.
    speakers = sorted(set(ami_speakers))
    rng = np.random.default_rng(0)
    rng.shuffle(speakers)
    folds = [set(speakers[index :: args.folds]) for index in range(args.folds)]
    held_llrs: list[npt.NDArray[np.float64]] = []
    held_same: list[npt.NDArray[np.bool_]] = []
    held_cos: list[npt.NDArray[np.float64]] = []
    speaker_array = np.array(ami_speakers)
    for fold in folds:
        in_fold = np.isin(speaker_array, list(fold))
        train = pairs(ami_embeddings, ami_speakers, usable & ~in_fold)
        test = pairs(ami_embeddings, ami_speakers, usable & in_fold)
        if not test.same.any() or test.same.all():
            continue
        fitted = LinearCalibration().fit(train.cosines, train.same)
        fold_llrs = fitted.transform(test.cosines)
        print(
            f"  fold of {len(fold)} speakers: scale {fitted.scale_:.2f},"
            f" offset {fitted.offset_:.2f}, {len(test)} trials ({test.counts}),"
            f" {figures(test.cosines, fold_llrs, test.same)}"
        )
        held_llrs.append(fold_llrs)
        held_same.append(test.same)
        held_cos.append(test.cosines)
    llrs = np.concatenate(held_llrs)
    same = np.concatenate(held_same)
    cosines = np.concatenate(held_cos)
    print(f"AMI, {args.folds}-fold speaker-disjoint cross-validation (pairs within a fold):")
    print(f"  {len(llrs)} held-out trials: {figures(cosines, llrs, same)}")

    everything = pairs(ami_embeddings, ami_speakers, usable)
    final = LinearCalibration().fit(everything.cosines, everything.same)
    print(f"Fit on all AMI trials: scale = {final.scale_:.4f}, offset = {final.offset_:.4f}")
    report("AMI (the fitting set itself)", everything, final.scale_, final.offset_)

    print("Held-out corpora, never used for fitting (pairs within each corpus):")
    corpus_array = np.array(other_corpora)
    for corpus in sorted(set(other_corpora)):
        trials = pairs(other_embeddings, other_speakers, corpus_array == corpus)
        if trials.same.any() and not trials.same.all():
            report(corpus, trials, final.scale_, final.offset_)
        else:
            llrs_only = final.scale_ * trials.cosines + final.offset_
            print(
                f"  {corpus:34s} {len(trials):6d} trials, all same-speaker: LLR min"
                f" {llrs_only.min():.2f}, median {np.median(llrs_only):.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
