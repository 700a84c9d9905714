"""How a gallery should score a speaker enrolled with several recordings, measured on real speech.

Every single-speaker stretch of `tools.corpora` (AMI segments of at least 1 s, AN4, LibriVox)
becomes a voiceprint of the default model. For k = 1, 2, 3, in repeated random draws: each
speaker with more than k recordings is enrolled with k of them and searched with the others;
the open-set probes are the recordings of the speakers not enrolled (too few recordings) and,
speaker by speaker, the probes of an enrolled speaker searched against the gallery without them.

Choices scored, all calibrated LLRs through `scoring.score_matrix`:

- mean: the speech-length-weighted mean embedding (as merging makes it), its speech the sum;
- best: each recording on its own, the speaker's score is the best of them;
- mean+best: the average of those two scores.

Reported: top-1 identification rate (enrolled probes whose best speaker is theirs) and the
open-set false-alarm rate (non-enrolled probes whose best score is above 0, the LLR at which
the evidence favours "this speaker").

    .venv/bin/python -m bench.gallery_enrolment [--draws 40]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

import voxmatch
from tools import corpora
from voxmatch.models.registry import describe
from voxmatch.scoring import Traits, score_matrix
from voxmatch.voiceprint import Voiceprint, VoiceprintBatch


@dataclass(frozen=True)
class Recording:
    speaker: str
    voiceprint: Voiceprint


def recordings() -> list[Recording]:
    found: list[Recording] = []
    for segment in corpora.ami_segments(1.0):
        (voiceprint,) = voxmatch.extract(segment.path, start=segment.start, end=segment.end)
        found.append(Recording(f"ami:{segment.speaker}", voiceprint))
    for speech_file in (*corpora.an4_files(), *corpora.librivox_files()):
        assert speech_file.speaker is not None
        (voiceprint,) = voxmatch.extract(speech_file.path)
        found.append(Recording(f"{speech_file.corpus}:{speech_file.speaker}", voiceprint))
    return [recording for recording in found if recording.voiceprint.speech_length > 0]


Scorer = Callable[[VoiceprintBatch, list[VoiceprintBatch]], npt.NDArray[np.float64]]
"""(probes, enrolments per speaker) -> probes x speakers scores."""


def _llrs(probes: VoiceprintBatch, enrolled: VoiceprintBatch) -> npt.NDArray[np.float64]:
    calibration = describe(probes.model).calibration
    scores = score_matrix(
        probes.embeddings,
        enrolled.embeddings,
        calibration,
        row_traits=Traits.of(probes),
        column_traits=Traits.of(enrolled),
    )
    return scores.astype(np.float64)


def score_mean(probes: VoiceprintBatch, speakers: list[VoiceprintBatch]) -> npt.NDArray[np.float64]:
    merged = VoiceprintBatch.of([voxmatch.merge(enrolment) for enrolment in speakers])
    return _llrs(probes, merged)


def score_best(probes: VoiceprintBatch, speakers: list[VoiceprintBatch]) -> npt.NDArray[np.float64]:
    return np.stack([_llrs(probes, enrolment).max(axis=1) for enrolment in speakers], axis=1)


def score_mean_and_best(
    probes: VoiceprintBatch, speakers: list[VoiceprintBatch]
) -> npt.NDArray[np.float64]:
    return (score_mean(probes, speakers) + score_best(probes, speakers)) / 2


SCORERS: dict[str, Scorer] = {
    "mean": score_mean,
    "best": score_best,
    "mean+best": score_mean_and_best,
}


@dataclass
class Tally:
    right: int = 0
    searched: int = 0
    false_alarms: int = 0
    open_set: int = 0


def run(all_recordings: list[Recording], enrolled_count: int, draws: int) -> dict[str, Tally]:
    by_speaker: dict[str, list[Voiceprint]] = {}
    for recording in all_recordings:
        by_speaker.setdefault(recording.speaker, []).append(recording.voiceprint)
    eligible = sorted(s for s, vps in by_speaker.items() if len(vps) > enrolled_count)
    strangers = [vp for s, vps in by_speaker.items() if s not in eligible for vp in vps]
    tallies = {name: Tally() for name in SCORERS}
    rng = np.random.default_rng(enrolled_count)
    for _ in range(draws):
        enrolments: list[VoiceprintBatch] = []
        probes: list[tuple[int, Voiceprint]] = []
        for column, speaker in enumerate(eligible):
            order = rng.permutation(len(by_speaker[speaker]))
            own = [by_speaker[speaker][i] for i in order]
            enrolments.append(VoiceprintBatch.of(own[:enrolled_count]))
            probes.extend((column, vp) for vp in own[enrolled_count:])
        probe_batch = VoiceprintBatch.of([vp for _, vp in probes])
        truth = np.array([column for column, _ in probes])
        stranger_batch = VoiceprintBatch.of(strangers) if strangers else None
        for name, scorer in SCORERS.items():
            tally = tallies[name]
            scores = scorer(probe_batch, enrolments)
            tally.right += int((scores.argmax(axis=1) == truth).sum())
            tally.searched += len(truth)
            # Each enrolled speaker's probes against the gallery without that speaker.
            others = np.where(truth[:, np.newaxis] == np.arange(len(eligible)), -np.inf, scores)
            tally.false_alarms += int((others.max(axis=1) > 0).sum())
            tally.open_set += len(truth)
            if stranger_batch is not None:
                stranger_scores = scorer(stranger_batch, enrolments)
                tally.false_alarms += int((stranger_scores.max(axis=1) > 0).sum())
                tally.open_set += len(stranger_batch)
    return tallies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=40, help="random enrolment draws per k")
    args = parser.parse_args()
    found = recordings()
    speakers = {recording.speaker for recording in found}
    print(f"{len(found)} recordings of {len(speakers)} speakers, {args.draws} draws per k")
    print("| recordings enrolled | speakers | choice | top-1 | open-set false alarms |")
    print("|---|---|---|---|---|")
    for enrolled_count in (1, 2, 3):
        counts: dict[str, int] = {}
        for recording in found:
            counts[recording.speaker] = counts.get(recording.speaker, 0) + 1
        eligible = sum(1 for count in counts.values() if count > enrolled_count)
        for name, tally in run(found, enrolled_count, args.draws).items():
            print(
                f"| {enrolled_count} | {eligible} | {name} | {tally.right / tally.searched:.3f}"
                f" ({tally.right}/{tally.searched}) |"
                f" {tally.false_alarms / tally.open_set:.3f}"
                f" ({tally.false_alarms}/{tally.open_set}) |"
            )


if __name__ == "__main__":
    main()
