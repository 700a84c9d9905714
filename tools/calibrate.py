"""Fit the default model's condition-aware calibration on real speech, judged on held-out speakers.

Data (tools.trials; fetched from registry packages by tools.corpora, never committed): the
wideband recordings of real speech that tools.corpora has (AMI single-speaker runs of at least
--min-seconds, CMU AN4, a LibriVox reader, KTuberling voices, a few prompts of each Asterisk
G.722 voice), each also through the six telephone chains of tools.telephone (G.711 mu-law and
A-law, GSM 06.10, G.726 32k, AMR-NB 12.2k, Opus 8k), stored at 8 kHz and at 16 kHz; and a few
real 8 kHz prompts of each Asterisk GSM voice. Voiceprints come from the real extractor and are
cached.

Trials: every pair of clips of different recordings. Conditions are the ground truth of how each
clip was made (the "detector" choice uses what the energy above 4 kHz says): wideband-wideband,
wideband-narrowband (enrol on one, test on the other) and narrowband-narrowband (across codecs
too). Speaker-disjoint k-fold: each fold's speakers are scored by a calibration fitted on the other
folds' speakers only (trials with one speaker in each are used by neither). Reported per
condition on the held-out trials (and for the pairs with real telephone recordings): (a) the
calibration shipped before (one line for everything) and (b)
`voxmatch.calibration.ConditionCalibration` with the chosen settings; then the choices (quality
measure cap and ridge, AS-norm, bandwidth matching, detected conditions, trial weights), each
measured the same way; then the fit on every speaker, which is what registry.py ships.

Trial weights (WEIGHTINGS): the fit weighs the trials of each pair of sources (wideband, made
telephone, real telephone) by the square root of their number, per class and pair of conditions,
so that a few hundred real telephone trials are not swamped by a million made ones.

    .venv/bin/python -m tools.calibrate [--folds 5] [--plots docs/images]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tools import telephone, trials
from tools.trials import ClipSet, TrialList
from voxmatch.calibration import ConditionCalibration, Evaluation, apply_calibration, evaluate
from voxmatch.models.registry import Calibration
from voxmatch.voiceprint import NARROWBAND, WIDEBAND

FloatArray = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]

BEFORE = Calibration.linear(scale=19.3122, offset=-5.4251)
"""The calibration voxmatch shipped before this one: fitted on AMI meeting speech only."""
AS_NORM_UNIT = 10.0
"""AS-norm scores (standard deviations of the cohort, about -20 to 20 here) are divided by this
before calibration: ConditionCalibration's Newton iterations start at scale 1 with no step
control, and diverge on scores of that range, while they converge on cosine-like ranges. A fixed
factor changes nothing else: the fitted scale absorbs it."""
CONDITIONS = {0: "wideband-wideband", 1: "wideband-narrowband", 2: "narrowband-narrowband"}
DETECTOR_THRESHOLD = 1e-4
"""A clip with less than this share of its energy above 4 kHz (-40 dB) is called narrowband."""


@dataclass(frozen=True)
class Setup:
    """One way of turning a pair of voiceprints into an LLR, fitted on training speakers."""

    name: str
    quality: bool = True
    speech_cap: float = 30.0
    ridge: float = 1e-3
    as_norm_top: int | None = None
    """AS-norm with the top-N of the cohort (0: the whole cohort); None: no AS-norm."""
    as_norm_conditions: tuple[int, ...] = (0, 1, 2)
    """The pairs of conditions whose scores are AS-normed (the others keep their cosines)."""
    cohort_matched: bool = False
    """AS-norm cohort of the voiceprint's own condition only, rather than every clip."""
    bandwidth_matching: bool = False
    """Score a wideband-narrowband pair with the narrowband simulation of the wideband side."""
    detected: bool = False
    """Conditions from the energy-above-4-kHz detector rather than the ground truth."""
    weighting: str = "none"
    """How much each trial counts in the fit: a key of WEIGHTINGS."""

    def calibrator(self) -> ConditionCalibration:
        return ConditionCalibration(
            with_quality=self.quality, speech_cap=self.speech_cap, quality_ridge=self.ridge
        )


CHOSEN = Setup("chosen", speech_cap=5.0, ridge=1e-5, weighting="source-sqrt")
"""What registry.py ships (the choices below are measured against it)."""
AS_NORM_CHOSEN = Setup(
    "AS-norm top 200, narrowband pairs only",
    speech_cap=5.0,
    ridge=1e-5,
    as_norm_top=200,
    as_norm_conditions=(2,),
)
"""The AS-norm that paid on held-out speakers (for the lead to wire; not applied by the server)."""


SOURCES = {0: "wideband", 1: "made telephone", 2: "real telephone"}
"""Where a clip comes from: a wideband recording as it is, a wideband recording through a
telephone chain made here, or a real telephone recording as it is."""


@dataclass(frozen=True)
class Weighting:
    """Trial weights that give each group of trials (per class) the same total weight, or, with
    `power` below 1, a share between equal and proportional to its size (weight count^-power)."""

    description: str
    by_corpus: bool = False
    """Groups by the pair of corpora as well as the pair of sources."""
    real_or_not: bool = False
    """Two groups only: pairs with a real telephone recording and pairs without."""
    power: float = 1.0


WEIGHTINGS = {
    "none": Weighting("every trial the same", power=0),
    "source": Weighting("each pair of sources the same"),
    "source-sqrt": Weighting("each pair of sources as the square root of its size", power=0.5),
    "corpus": Weighting("each pair of sources and of corpora the same", by_corpus=True),
    "corpus-sqrt": Weighting(
        "each pair of sources and of corpora as the square root of its size",
        by_corpus=True,
        power=0.5,
    ),
    "real-half": Weighting(
        "pairs with a real telephone recording as much as pairs without", real_or_not=True
    ),
}
"""Ways of weighting the trials of the fit, per class and pair of conditions (the pairs of
sources: wideband, made telephone, real telephone). Without weights, the few hundred trials of
real telephone recordings are swamped by the hundreds of thousands of made ones."""


@dataclass
class Experiment:
    clip_set: ClipSet
    trial_clips: Mask
    """The clips trials are made of (every clip but the narrowband simulations)."""
    all_trials: TrialList
    folds: list[set[str]]
    cosines: FloatArray
    matched_cosines: FloatArray
    """Cosines with each wideband original replaced by its narrowband simulation in pairs with a
    narrowband clip."""
    detected_conditions: npt.NDArray[np.int64]
    sources: npt.NDArray[np.int64]
    """Each clip's key of SOURCES."""

    @classmethod
    def build(cls, clip_set: ClipSet, folds: int, seed: int) -> Experiment:
        chains = clip_set.chains
        trial_clips = chains != telephone.NARROWBAND_ONLY.name
        cosines = clip_set.embeddings @ clip_set.embeddings.T
        simulation = _simulations(clip_set)
        matched = cosines.copy()
        # An original whose simulation kept too little speech for a voiceprint keeps its own.
        has_simulation = simulation >= 0
        has_simulation[has_simulation] = clip_set.usable()[simulation[has_simulation]]
        originals = np.flatnonzero(has_simulation)
        narrow = clip_set.conditions == NARROWBAND
        block = cosines[np.ix_(simulation[originals], np.flatnonzero(narrow))]
        matched[np.ix_(originals, np.flatnonzero(narrow))] = block
        matched[np.ix_(np.flatnonzero(narrow), originals)] = block.T
        detected = np.where(
            clip_set.high_band_share < DETECTOR_THRESHOLD, NARROWBAND, WIDEBAND
        ).astype(np.int64)
        all_trials = trials.every_pair(clip_set, trial_clips)
        speakers = list(clip_set.speakers[trial_clips])
        recorded_narrow = np.array(
            [clip_set.recordings[clip.recording].condition == NARROWBAND for clip in clip_set.clips]
        )
        sources = np.where(recorded_narrow, 2, np.where(chains == trials.ORIGINAL, 0, 1))
        return cls(
            clip_set,
            trial_clips,
            all_trials,
            trials.speaker_folds(speakers, folds, seed),
            cosines,
            matched,
            detected,
            sources.astype(np.int64),
        )

    @property
    def cohort_clips(self) -> Mask:
        """Clips a cohort may hold: trial clips with speech (an empty voiceprint says nothing)."""
        usable: Mask = self.trial_clips & self.clip_set.usable()
        return usable

    def pair_conditions(self, trial_list: TrialList, setup: Setup) -> npt.NDArray[np.int64]:
        if not setup.detected:
            return trial_list.condition
        detected = self.detected_conditions
        both: npt.NDArray[np.int64] = detected[trial_list.first] + detected[trial_list.second]
        return both

    def trial_weights(self, trial_list: TrialList, setup: Setup) -> FloatArray:
        """Each trial's weight in the fit under `setup.weighting`: its group of trials (pair of
        sources, perhaps of corpora; per class) shares one total, as `Weighting` says."""
        weighting = WEIGHTINGS[setup.weighting]
        first, second = trial_list.first, trial_list.second
        lower = np.minimum(self.sources[first], self.sources[second])
        higher = np.maximum(self.sources[first], self.sources[second])
        # Groups are kinds of recordings, so by true condition even when the fit is told the
        # detector's (a group of a few misdetected clips would otherwise weigh like a corpus).
        keys = [trial_list.condition, trial_list.same]
        keys += [higher == 2] if weighting.real_or_not else [lower, higher]
        if weighting.by_corpus:
            _, corpus = np.unique(self.clip_set.corpus, return_inverse=True)
            keys += [
                np.minimum(corpus[first], corpus[second]),
                np.maximum(corpus[first], corpus[second]),
            ]
        _, group, counts = np.unique(
            np.stack(keys).astype(np.int64), axis=1, return_inverse=True, return_counts=True
        )
        weights: FloatArray = counts[group.ravel()].astype(np.float64) ** -weighting.power
        return weights

    def scores(self, setup: Setup, cohort: Mask) -> FloatArray:
        """The score matrix of every clip against every clip under `setup`."""
        raw = self.matched_cosines if setup.bandwidth_matching else self.cosines
        if setup.as_norm_top is None:
            return raw
        mean, spread = self.cohort_statistics(setup, cohort)
        normed: FloatArray = 0.5 * (
            (raw - mean[:, None]) / spread[:, None] + (raw - mean[None, :]) / spread[None, :]
        )
        conditions = self.clip_set.conditions
        normed_pairs = np.isin(np.add.outer(conditions, conditions), setup.as_norm_conditions)
        return np.where(normed_pairs, normed / AS_NORM_UNIT, raw)

    def cohort_statistics(self, setup: Setup, cohort: Mask) -> tuple[FloatArray, FloatArray]:
        """Mean and spread of each clip's top-N cosines against the cohort, leaving out the
        clip's own speaker (which only a training clip can share with the cohort)."""
        assert setup.as_norm_top is not None
        clip_set = self.clip_set
        members = np.flatnonzero(cohort)
        against = self.cosines[:, members].copy()
        speakers = clip_set.speakers
        against[speakers[:, None] == speakers[members][None, :]] = -np.inf
        if setup.cohort_matched:
            conditions = clip_set.conditions
            against[conditions[:, None] != conditions[members][None, :]] = -np.inf
        ordered = -np.sort(-against, axis=1)
        available = int(np.isfinite(ordered).sum(axis=1).min())
        top = available if setup.as_norm_top == 0 else min(setup.as_norm_top, available)
        best = ordered[:, :top]
        # Empty voiceprints have no top cosines worth the name; they are in no trial either.
        return best.mean(axis=1), np.maximum(best.std(axis=1), 1e-6)

    def held_out(self, setup: Setup) -> tuple[TrialList, FloatArray, FloatArray]:
        """(held-out trials, their LLRs under `setup`, their LLRs under BEFORE), pooled over
        the folds."""
        speakers = self.clip_set.speakers
        chosen: list[TrialList] = []
        after: list[FloatArray] = []
        before: list[FloatArray] = []
        for fold in self.folds:
            in_fold = np.isin(speakers, sorted(fold))
            first, second = self.all_trials.first, self.all_trials.second
            test = self.all_trials.subset(in_fold[first] & in_fold[second])
            train = self.all_trials.subset(~in_fold[first] & ~in_fold[second])
            matrix = self.scores(setup, self.cohort_clips & ~in_fold)
            fitted = setup.calibrator().fit(
                train.scores(matrix),
                train.same,
                self.pair_conditions(train, setup),
                train.shorter_speech,
                trial_weights=self.trial_weights(train, setup),
            )
            chosen.append(test)
            after.append(
                fitted.transform(
                    test.scores(matrix), self.pair_conditions(test, setup), test.shorter_speech
                )
            )
            before.append(
                apply_calibration(
                    BEFORE, test.scores(self.cosines), test.condition, test.shorter_speech
                )
            )
        return _joined(chosen), np.concatenate(after), np.concatenate(before)

    def fit_everyone(self, setup: Setup) -> Calibration:
        matrix = self.scores(setup, self.cohort_clips)
        every = self.all_trials
        fitted = setup.calibrator().fit(
            every.scores(matrix),
            every.same,
            self.pair_conditions(every, setup),
            every.shorter_speech,
            trial_weights=self.trial_weights(every, setup),
        )
        return fitted.calibration_

    def speakers_in(self, trial_list: TrialList) -> int:
        speakers = self.clip_set.speakers
        return len(set(speakers[trial_list.first]) | set(speakers[trial_list.second]))


def _simulations(clip_set: ClipSet) -> npt.NDArray[np.int64]:
    """For each wideband original, the index of its narrowband simulation at 16 kHz; else -1."""
    index = {
        clip.recording: number
        for number, clip in enumerate(clip_set.clips)
        if clip.chain == telephone.NARROWBAND_ONLY.name and clip.sample_rate == 16_000
    }
    return np.array(
        [
            index.get(clip.recording, -1)
            if clip.chain == trials.ORIGINAL and clip.condition == WIDEBAND
            else -1
            for clip in clip_set.clips
        ],
        dtype=np.int64,
    )


def _joined(lists: Sequence[TrialList]) -> TrialList:
    return TrialList(
        np.concatenate([item.first for item in lists]),
        np.concatenate([item.second for item in lists]),
        np.concatenate([item.same for item in lists]),
        np.concatenate([item.condition for item in lists]),
        np.concatenate([item.shorter_speech for item in lists]),
    )


# --- Reporting ------------------------------------------------------------------------------


REAL_TELEPHONE_GROUPS = {
    "real telephone, narrowband-narrowband": (2, 2),
    "real telephone, wideband-narrowband": (1, 1),
}
"""Extra rows: pairs of that condition with this many sides real narrowband recordings."""
SHORT_NAMES = {
    "wideband-wideband": "wb-wb",
    "wideband-narrowband": "wb-nb",
    "narrowband-narrowband": "nb-nb",
    "real telephone, narrowband-narrowband": "real nb-nb",
    "real telephone, wideband-narrowband": "wb-real nb",
}


def per_condition(
    experiment: Experiment, trial_list: TrialList, llrs: FloatArray
) -> dict[str, tuple[Evaluation, int]]:
    """Evaluation and speaker count of each true condition (and of the real telephone
    recordings' pairs) that has both kinds of trial."""
    clip_set = experiment.clip_set
    real = np.array(
        [clip_set.recordings[clip.recording].condition == NARROWBAND for clip in clip_set.clips]
    )
    real_sides = real[trial_list.first].astype(int) + real[trial_list.second]
    groups = {name: trial_list.condition == index for index, name in CONDITIONS.items()}
    for name, (condition, sides) in REAL_TELEPHONE_GROUPS.items():
        groups[name] = (trial_list.condition == condition) & (real_sides == sides)
    results: dict[str, tuple[Evaluation, int]] = {}
    for name, chosen in groups.items():
        same = trial_list.same[chosen]
        if not same.any() or same.all():
            continue
        scores = llrs[chosen]
        results[name] = (
            evaluate(scores[same], scores[~same]),
            experiment.speakers_in(trial_list.subset(chosen)),
        )
    return results


TABLE_HEADER = (
    "| condition | trials (same / different) | speakers | EER | Cllr | min Cllr | actual / min DCF"
    " | different > 0 | different > 2 | same < 0 |\n|---|---|---|---|---|---|---|---|---|---|"
)


def table_rows(results: dict[str, tuple[Evaluation, int]]) -> list[str]:
    rows = []
    for name, (result, speakers) in results.items():
        rows.append(
            f"| {name} | {result.targets} / {result.nontargets} | {speakers}"
            f" | {100 * result.eer:.2f} % | {result.cllr:.3f} | {result.min_cllr:.3f}"
            f" | {result.actual_dcf:.3f} / {result.min_dcf:.3f}"
            f" | {100 * result.false_alarms_above_0:.1f} %"
            f" | {100 * result.false_alarms_above_2:.1f} %"
            f" | {100 * result.misses_below_0:.1f} % |"
        )
    return rows


def summary(results: dict[str, tuple[Evaluation, int]]) -> str:
    """One line: EER, Cllr / min Cllr and false alarms above 2, per condition."""
    parts = []
    for name, (result, _) in results.items():
        parts.append(
            f"{SHORT_NAMES[name]} EER {100 * result.eer:5.2f} %"
            f" Cllr {result.cllr:.3f}/{result.min_cllr:.3f}"
            f" >2 {100 * result.false_alarms_above_2:4.1f} %"
        )
    return " | ".join(parts)


def choices() -> list[Setup]:
    base = CHOSEN
    return [
        replace(base, name="no quality measure", quality=False),
        *(
            replace(base, name=f"speech cap {cap:g} s", speech_cap=cap)
            for cap in (3.0, 10.0, 20.0, 30.0)
        ),
        *(
            replace(base, name=f"quality ridge {ridge:g}", ridge=ridge)
            for ridge in (1e-4, 1e-3, 1e-2, 0.1)
        ),
        *(
            replace(base, name=f"AS-norm top {top or 'all'}", as_norm_top=top)
            for top in (20, 50, 100, 200, 0)
        ),
        *(
            replace(
                base,
                name=f"AS-norm top {top}, cohort of the same condition",
                as_norm_top=top,
                cohort_matched=True,
            )
            for top in (50, 200)
        ),
        *(
            replace(
                base,
                name=f"AS-norm top {top}, narrowband pairs only",
                as_norm_top=top,
                as_norm_conditions=(2,),
            )
            for top in (100, 200)
        ),
        replace(base, name="bandwidth matching", bandwidth_matching=True),
        replace(
            base,
            name="bandwidth matching, no quality measure",
            bandwidth_matching=True,
            quality=False,
        ),
        replace(base, name="conditions from the 4 kHz detector", detected=True),
        *(
            replace(base, name=f"weighting {name}: {weighting.description}", weighting=name)
            for name, weighting in WEIGHTINGS.items()
            if name != base.weighting
        ),
    ]


def plots(
    folder: Path,
    trial_list: TrialList,
    before: FloatArray,
    after: FloatArray,
) -> list[Path]:
    """DET curves and Tippett plots per condition (held-out trials), as small PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from voxmatch.calibration import det_points

    folder.mkdir(parents=True, exist_ok=True)
    probit: Callable[[FloatArray], FloatArray] = np.vectorize(
        lambda p: statistics.NormalDist().inv_cdf(min(max(p, 1e-4), 1 - 1e-4))
    )
    ticks = [0.001, 0.01, 0.05, 0.2, 0.5, 0.8]
    figure, axis = plt.subplots(figsize=(4.2, 4.2), dpi=90)
    for (index, name), colour in zip(CONDITIONS.items(), ("C0", "C1", "C2"), strict=True):
        chosen = trial_list.condition == index
        same = trial_list.same[chosen]
        for llrs, style, label in ((before, ":", "before"), (after, "-", "after")):
            miss, false_alarm = det_points(llrs[chosen][same], llrs[chosen][~same])
            axis.plot(probit(false_alarm), probit(miss), colour + style, label=f"{name}, {label}")
    limits = probit(np.array([0.0005, 0.9]))
    axis.set_xlim(*limits)
    axis.set_ylim(*limits)
    axis.set_xticks(probit(np.array(ticks)), [f"{100 * t:g}" for t in ticks])
    axis.set_yticks(probit(np.array(ticks)), [f"{100 * t:g}" for t in ticks])
    axis.set_xlabel("false alarms (%)")
    axis.set_ylabel("misses (%)")
    axis.set_title("DET, held-out speakers", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=6)
    figure.tight_layout()
    det_path = folder / "calibration-det.png"
    figure.savefig(det_path)
    plt.close(figure)

    figure, axes = plt.subplots(1, 3, figsize=(10, 3.2), dpi=80, sharey=True)
    grid = np.linspace(-25, 25, 501)
    for axis, (index, name) in zip(axes, CONDITIONS.items(), strict=True):
        chosen = trial_list.condition == index
        same = trial_list.same[chosen]
        for llrs, style, label in ((before, "--", "before"), (after, "-", "after")):
            values = llrs[chosen]
            axis.plot(
                grid,
                (values[same][:, None] >= grid).mean(axis=0),
                "b" + style,
                label=f"same speaker, {label}",
            )
            axis.plot(
                grid,
                (values[~same][:, None] >= grid).mean(axis=0),
                "r" + style,
                label=f"different, {label}",
            )
        axis.axvline(0, color="grey", lw=0.5)
        axis.axvline(2, color="grey", lw=0.5, ls=":")
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("LLR")
    axes[0].set_ylabel("share of trials with LLR >= x")
    axes[0].legend(fontsize=6)
    figure.tight_layout()
    tippett_path = folder / "calibration-tippett.png"
    figure.savefig(tippett_path)
    plt.close(figure)
    return [det_path, tippett_path]


def calibration_source(calibration: Calibration) -> str:
    def pair(value: object) -> str:
        assert value is not None
        fields = ", ".join(
            f"{name}={getattr(value, name):.4f}"
            for name in ("scale", "offset", "scale_per_log_speech", "offset_per_log_speech")
        )
        return f"PairCalibration({fields})"

    return (
        "Calibration(\n"
        f"        wideband={pair(calibration.wideband)},\n"
        f"        cross={pair(calibration.cross)},\n"
        f"        narrowband={pair(calibration.narrowband)},\n"
        f"        speech_cap={calibration.speech_cap:g},\n"
        f"        speech_floor={calibration.speech_floor:g},\n"
        "    )"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plots", type=Path, help="write the DET and Tippett PNGs here")
    parser.add_argument("--no-choices", action="store_true", help="skip measuring the choices")
    parser.add_argument(
        "--no-real-telephone", action="store_true", help="leave out the real 8 kHz recordings"
    )
    args = parser.parse_args(argv)

    recordings = trials.wideband_recordings(args.min_seconds)
    if not args.no_real_telephone:
        recordings += trials.telephone_recordings(args.min_seconds)
    clips = trials.clips_of(recordings, (*telephone.CODEC_CHAINS, telephone.NARROWBAND_ONLY))
    cache = trials.EmbeddingCache()
    clip_set = ClipSet.measure(recordings, clips, cache)
    experiment = Experiment.build(clip_set, args.folds, args.seed)
    usable = clip_set.usable() & experiment.trial_clips
    print(
        f"{len(recordings)} recordings of {len(set(clip_set.speakers))} speakers"
        f" ({', '.join(sorted(set(clip_set.corpus)))}), {int(experiment.trial_clips.sum())} clips"
        f" ({int(usable.sum())} with speech; {cache.extracted} extracted now, the rest cached),"
        f" {len(experiment.all_trials)} trials; {args.folds} speaker-disjoint folds"
    )
    truth = clip_set.conditions[usable]
    detected = experiment.detected_conditions[usable]
    print(
        "Detector of energy above 4 kHz (share < "
        f"{DETECTOR_THRESHOLD:g} is narrowband): wideband clips called narrowband"
        f" {int(((detected == NARROWBAND) & (truth == WIDEBAND)).sum())} of"
        f" {int((truth == WIDEBAND).sum())}, narrowband clips called wideband"
        f" {int(((detected == WIDEBAND) & (truth == NARROWBAND)).sum())} of"
        f" {int((truth == NARROWBAND).sum())}"
    )

    chosen = CHOSEN
    held, after, before = experiment.held_out(chosen)
    print("\n(a) Before: the linear calibration shipped until now, on the held-out trials\n")
    print(TABLE_HEADER)
    print("\n".join(table_rows(per_condition(experiment, held, before))))
    print(f"\n(b) After: {chosen}, fitted per fold on the other folds' speakers\n")
    print(TABLE_HEADER)
    print("\n".join(table_rows(per_condition(experiment, held, after))))

    if not args.no_choices:
        print("\nChoices (held-out trials, per condition: EER, Cllr/min Cllr, different > 2)")
        print(f"  {'chosen':48s} {summary(per_condition(experiment, held, after))}")
        for setup in choices():
            trial_list, llrs, _ = experiment.held_out(setup)
            print(f"  {setup.name:48s} {summary(per_condition(experiment, trial_list, llrs))}")

    if args.plots is not None:
        for path in plots(args.plots, held, before, after):
            print(f"wrote {path}")

    final = experiment.fit_everyone(chosen)
    every = experiment.all_trials
    final_llrs = apply_calibration(
        final, every.scores(experiment.cosines), every.condition, every.shorter_speech
    )
    print(
        "\nFit on every speaker (what registry.py ships):\n"
        f"    calibration={calibration_source(final)}"
    )
    print(f"  on its own fitting trials: {summary(per_condition(experiment, every, final_llrs))}")
    print(f"  LLR 0 at cosine (long speech): {_zero_crossings(final)}")
    normed = experiment.fit_everyone(AS_NORM_CHOSEN)
    print(
        f"\nWith {AS_NORM_CHOSEN.name} (score = s_norm / {AS_NORM_UNIT:g}), fit on every speaker:"
        f"\n    {calibration_source(normed).splitlines()[3].strip()}"
    )
    return 0


def _zero_crossings(calibration: Calibration) -> str:
    return ", ".join(
        f"{CONDITIONS[index]} {-pair.offset / pair.scale:.3f}"
        for index, pair in enumerate(calibration.pairs())
    )


if __name__ == "__main__":
    sys.exit(main())
