"""Fitting a calibration profile on a user's labelled voiceprints: what `voxmatch calibrate` does
once the recordings are voiceprints.

Every pair of different recordings is a trial (same speaker or not). The profile's calibration is
`calibration.ConditionCalibration` fitted on all of them; it is judged beside the model's shipped
calibration on the same trials, and, with enough speakers, by speaker-disjoint cross-validation:
fitted on some speakers, scored on the others, which is what the profile will meet in use (on
the trials it was fitted on, any calibration looks better than it is).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from voxmatch.calibration import (
    ConditionCalibration,
    Evaluation,
    apply_calibration,
    det_points,
    evaluate,
)
from voxmatch.calibration_profiles import CalibrationProfile, Provenance
from voxmatch.models.registry import Calibration
from voxmatch.voiceprint import Voiceprint

FloatArray = npt.NDArray[np.float64]

MIN_CROSS_VALIDATION_SPEAKERS = 4
"""Speakers needed for a cross-validated figure: two folds of two speakers each, so that every
held-out fold has different-speaker trials of its own."""
MAX_FOLDS = 5
CONDITION_PAIR_NAMES = ("wideband", "cross", "narrowband")
"""Names of the pairs of conditions, indexed by the sum of the two condition codes."""


class FittingError(ValueError):
    """Labelled data that cannot give a calibration (too few speakers or trials)."""


@dataclass(frozen=True)
class LabelledFile:
    path: Path
    speaker: str


def labelled_files(inputs: Sequence[Path]) -> tuple[list[LabelledFile], list[str]]:
    """The files of the inputs with their speakers, and warnings about what was left out.

    An input folder holds one sub-folder per speaker (named after the speaker) of recordings
    and .vp voiceprints; any other file is a list file of `path<TAB>speaker` lines (paths
    relative to the list file's folder; blank lines and lines starting with # are skipped).
    """
    files: list[LabelledFile] = []
    warnings: list[str] = []
    for source in inputs:
        if source.is_dir():
            found, skipped = _speaker_folders(source)
            files.extend(found)
            warnings.extend(skipped)
        else:
            files.extend(_list_file(source))
    speaker_of: dict[Path, LabelledFile] = {}
    distinct: list[LabelledFile] = []
    for item in files:
        earlier = speaker_of.setdefault(item.path.resolve(), item)
        if earlier is item:
            distinct.append(item)
        elif earlier.speaker != item.speaker:
            raise FittingError(
                f"{item.path} is labelled both {earlier.speaker!r} and {item.speaker!r}"
            )
    return distinct, warnings


def _speaker_folders(root: Path) -> tuple[list[LabelledFile], list[str]]:
    files: list[LabelledFile] = []
    warnings: list[str] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            files.extend(
                LabelledFile(path, entry.name)
                for path in sorted(entry.iterdir())
                if path.is_file() and not path.name.startswith(".")
            )
        else:
            warnings.append(f"{entry}: not in a speaker's folder, left out")
    return files, warnings


def _list_file(path: Path) -> list[LabelledFile]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise FittingError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise FittingError(
            f"{path} is neither a folder nor a list file of path<TAB>speaker lines (UTF-8)"
        ) from None
    files: list[LabelledFile] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, separator, speaker = line.rstrip("\r\n").partition("\t")
        if not separator or not name.strip() or not speaker.strip():
            raise FittingError(f"{path} line {number}: expected path<TAB>speaker")
        files.append(LabelledFile(path.parent / name.strip(), speaker.strip()))
    return files


@dataclass(frozen=True)
class Trials:
    """Every pair of different voiceprints, with what calibration needs of each pair."""

    cosines: FloatArray
    same_speaker: npt.NDArray[np.bool_]
    pair_conditions: npt.NDArray[np.int64]
    shorter_speech: FloatArray
    speakers: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]
    """Index of each side's speaker (into the sorted speaker names)."""

    @classmethod
    def of(cls, voiceprints: Sequence[Voiceprint], speakers: Sequence[str]) -> Trials:
        names = sorted(set(speakers))
        speaker_index = np.array([names.index(speaker) for speaker in speakers], np.int64)
        embeddings = np.stack([vp.embedding for vp in voiceprints]).astype(np.float64)
        units = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
        first, second = np.triu_indices(len(voiceprints), k=1)
        conditions = np.array([vp.condition for vp in voiceprints], np.int64)
        speech = np.array([vp.speech_length for vp in voiceprints], np.float64)
        return cls(
            cosines=np.einsum("ij,ij->i", units[first], units[second]),
            same_speaker=speaker_index[first] == speaker_index[second],
            pair_conditions=conditions[first] + conditions[second],
            shorter_speech=np.minimum(speech[first], speech[second]),
            speakers=(speaker_index[first], speaker_index[second]),
        )

    def __len__(self) -> int:
        return len(self.cosines)

    def subset(self, chosen: npt.NDArray[np.bool_]) -> Trials:
        return Trials(
            self.cosines[chosen],
            self.same_speaker[chosen],
            self.pair_conditions[chosen],
            self.shorter_speech[chosen],
            (self.speakers[0][chosen], self.speakers[1][chosen]),
        )

    def llrs(self, calibration: Calibration) -> FloatArray:
        return apply_calibration(
            calibration, self.cosines, self.pair_conditions, self.shorter_speech
        )

    def split(self, llrs: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(same-speaker LLRs, different-speaker LLRs)."""
        return llrs[self.same_speaker], llrs[~self.same_speaker]


@dataclass(frozen=True)
class Scored:
    """One calibration's LLRs of the trials, and how good they are."""

    label: str
    targets: FloatArray
    nontargets: FloatArray
    evaluation: Evaluation


@dataclass(frozen=True)
class CalibrationReport:
    profile: CalibrationProfile
    shipped: Scored
    fitted: Scored
    cross_validated: Scored | None
    cross_validation_note: str
    """How the cross-validated figure was made, or why there is none."""

    def scored(self) -> list[Scored]:
        return [
            scored
            for scored in (self.shipped, self.fitted, self.cross_validated)
            if scored is not None
        ]


def fit_profile(
    name: str,
    voiceprints: Sequence[Voiceprint],
    speakers: Sequence[str],
    shipped: Calibration,
    *,
    prior: float = 0.5,
    dcf_prior: float = 0.01,
) -> CalibrationReport:
    """The profile fitted on every pair of the voiceprints, and the figures that judge it.

    Raises FittingError when the voiceprints cannot give a calibration.
    """
    if len(voiceprints) != len(speakers):
        raise ValueError("every voiceprint needs its speaker")
    models = sorted({vp.model for vp in voiceprints})
    if len(models) > 1:
        raise FittingError(f"the voiceprints are of several models ({', '.join(models)})")
    if len(set(speakers)) < 2:
        raise FittingError(
            f"calibration needs recordings of at least 2 speakers, got {len(set(speakers))}"
        )
    trials = Trials.of(voiceprints, speakers)
    if not trials.same_speaker.any():
        raise FittingError(
            "no same-speaker trials: calibration needs at least one speaker with 2 recordings"
        )
    fitter = _fitter(shipped, prior)
    try:
        calibration = fitter.fit(
            trials.cosines, trials.same_speaker, trials.pair_conditions, trials.shorter_speech
        ).calibration_
    except ValueError as error:
        raise FittingError(f"{error} (got {_trial_counts(trials)})") from None
    fitted_pairs = [CONDITION_PAIR_NAMES[index] for index in fitter.fitted_pairs_]
    shipped_scored = _scored("shipped", trials, trials.llrs(shipped), dcf_prior)
    fitted_scored = _scored("fitted", trials, trials.llrs(calibration), dcf_prior)
    cross_validated, note = _cross_validate(trials, shipped, prior, dcf_prior)
    profile = CalibrationProfile(
        name=name,
        model=models[0],
        calibration=calibration,
        provenance=Provenance(
            created_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            speakers=len(set(speakers)),
            recordings=len(voiceprints),
            target_trials=int(trials.same_speaker.sum()),
            nontarget_trials=int((~trials.same_speaker).sum()),
            fitted_pairs=fitted_pairs,
            evaluation=_figures(fitted_scored.evaluation),
            cross_validated=None
            if cross_validated is None
            else _figures(cross_validated.evaluation),
        ),
    )
    return CalibrationReport(profile, shipped_scored, fitted_scored, cross_validated, note)


def _fitter(shipped: Calibration, prior: float) -> ConditionCalibration:
    # The shipped calibration's speech cap and floor: a profile's quality terms then mean what
    # the shipped ones mean.
    return ConditionCalibration(
        prior, speech_cap=shipped.speech_cap, speech_floor=shipped.speech_floor
    )


def _trial_counts(trials: Trials) -> str:
    targets = int(trials.same_speaker.sum())
    return f"{targets} same-speaker and {len(trials) - targets} different-speaker trials"


def _scored(label: str, trials: Trials, llrs: FloatArray, dcf_prior: float) -> Scored:
    targets, nontargets = trials.split(llrs)
    return Scored(label, targets, nontargets, evaluate(targets, nontargets, dcf_prior))


def _figures(evaluation: Evaluation) -> dict[str, float]:
    return {key: float(value) for key, value in evaluation.as_dict().items()}


def _cross_validate(
    trials: Trials, shipped: Calibration, prior: float, dcf_prior: float
) -> tuple[Scored | None, str]:
    """Speaker-disjoint folds: each fold's speakers are scored by a calibration fitted on the
    trials of the other speakers only, the held-out LLRs pooled and judged together."""
    speaker_count = int(max(trials.speakers[0].max(), trials.speakers[1].max())) + 1
    if speaker_count < MIN_CROSS_VALIDATION_SPEAKERS:
        return None, (
            f"no cross-validated figure: it needs at least {MIN_CROSS_VALIDATION_SPEAKERS}"
            f" speakers, got {speaker_count}"
        )
    folds = min(MAX_FOLDS, speaker_count // 2)
    fold_of_speaker = np.arange(speaker_count) % folds
    fold_a, fold_b = (fold_of_speaker[side] for side in trials.speakers)
    held_out_llrs: list[FloatArray] = []
    held_out_same: list[npt.NDArray[np.bool_]] = []
    for fold in range(folds):
        training = trials.subset((fold_a != fold) & (fold_b != fold))
        testing = trials.subset((fold_a == fold) & (fold_b == fold))
        try:
            calibration = (
                _fitter(shipped, prior)
                .fit(
                    training.cosines,
                    training.same_speaker,
                    training.pair_conditions,
                    training.shorter_speech,
                )
                .calibration_
            )
        except ValueError:
            return None, (
                f"no cross-validated figure: with {folds} speaker-disjoint folds, the trials"
                f" left for fitting fold {fold + 1} ({_trial_counts(training)}) are too few"
            )
        held_out_llrs.append(testing.llrs(calibration))
        held_out_same.append(testing.same_speaker)
    llrs = np.concatenate(held_out_llrs)
    same = np.concatenate(held_out_same)
    if same.all() or not same.any():
        return None, "no cross-validated figure: the held-out folds lack one kind of trial"
    targets, nontargets = llrs[same], llrs[~same]
    label = "cross-validated"
    return (
        Scored(label, targets, nontargets, evaluate(targets, nontargets, dcf_prior)),
        f"cross-validated: {folds} speaker-disjoint folds, {len(llrs)} held-out trials"
        " (each fitted without the speakers it scores)",
    )


_DET_TICKS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6)
_STYLES = {"shipped": ":", "fitted": "-", "cross-validated": "--"}


def write_plots(report: CalibrationReport, folder: Path) -> list[Path]:
    """`<name>.det.png` and `<name>.tippett.png` in `folder`: the DET curve (error trade-off,
    which calibration does not change, save for the cross-validated one), and the Tippett plot
    (how far the LLRs of each kind of trial reach, which calibration does)."""
    # The figure's own canvas (Agg), not pyplot: no global state, no display needed.
    from matplotlib.figure import Figure

    name = report.profile.name
    probit = np.vectorize(NormalDist().inv_cdf)
    floor, ceiling = _DET_TICKS[0] / 2, _DET_TICKS[-1]

    det = Figure(figsize=(6, 6))
    axes = det.add_subplot()
    for scored in report.scored():
        miss, false_alarm = det_points(scored.targets, scored.nontargets)
        axes.plot(
            probit(np.clip(false_alarm, floor, ceiling)),
            probit(np.clip(miss, floor, ceiling)),
            _STYLES[scored.label],
            label=f"{scored.label} (EER {scored.evaluation.eer:.2%})",
        )
    ticks = probit(np.array(_DET_TICKS))
    labels = [f"{tick:.1%}".replace(".0%", "%") for tick in _DET_TICKS]
    axes.set_xticks(ticks, labels)
    axes.set_yticks(ticks, labels)
    axes.set_xlim(ticks[0], ticks[-1])
    axes.set_ylim(ticks[0], ticks[-1])
    axes.set_xlabel("false alarm rate")
    axes.set_ylabel("miss rate")
    axes.set_title(f"DET: calibration profile {name}")
    axes.grid(True, alpha=0.4)
    axes.legend(loc="upper right")

    tippett = Figure(figsize=(7, 5))
    axes = tippett.add_subplot()
    for scored in report.scored():
        for llrs, kind, colour in (
            (scored.targets, "same speaker", "tab:blue"),
            (scored.nontargets, "different speakers", "tab:red"),
        ):
            ordered = np.sort(llrs)
            share_above = 1 - np.arange(len(ordered)) / len(ordered)
            axes.step(
                ordered,
                share_above,
                _STYLES[scored.label],
                where="post",
                color=colour,
                label=f"{kind}, {scored.label} (Cllr {scored.evaluation.cllr:.3f})",
            )
    axes.axvline(0, color="grey", linewidth=0.8)
    axes.set_xlabel("LLR (natural log)")
    axes.set_ylabel("share of trials with LLR >= x")
    axes.set_ylim(0, 1.02)
    axes.set_title(f"Tippett: calibration profile {name}")
    axes.grid(True, alpha=0.4)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize="small")

    paths = [folder / f"{name}.det.png", folder / f"{name}.tippett.png"]
    for figure, path in zip((det, tippett), paths, strict=True):
        figure.savefig(path, dpi=100, bbox_inches="tight")
    return paths
