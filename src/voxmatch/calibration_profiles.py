"""Calibration profiles: a calibration a user fitted on their own labelled speech, saved by name.

A profile is one JSON file, `<name>.json`, in a profiles folder (`calibration_profiles_dir`):
the model it was fitted for, the `models.registry.Calibration` itself (every pair of conditions,
the quality terms, the speech cap and floor), and where it came from (when, on how many speakers
and trials, and how well it did). `voxmatch calibrate` writes them; a comparison request may
name one. The format is in docs/calibration-profiles.md.

Reading is strict: a file that is not exactly a profile is refused with a message naming what is
wrong, so a hand-edited typo never silently becomes a calibration.
"""

from __future__ import annotations

import math
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from voxmatch.models.registry import Calibration, PairCalibration

PROFILE_FORMAT = "voxmatch-calibration-profile"
PROFILE_VERSION = 1
PROFILE_SUFFIX = ".json"
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A profile's name: also its file name, so nothing that could leave the folder."""
MAX_PROFILE_BYTES = 1024 * 1024
"""A profile is a few hundred bytes; anything much larger is not one."""

_PAIR_KEYS = ("scale", "offset", "scale_per_log_speech", "offset_per_log_speech")
_CONDITION_PAIRS = ("wideband", "cross", "narrowband")


class ProfileError(ValueError):
    """A profile that cannot be used, with what is wrong (never a server-side path)."""


class UnknownProfileError(ProfileError):
    """No profile of that name in the folder."""


def check_profile_name(name: str) -> str:
    if not PROFILE_NAME.fullmatch(name):
        raise ProfileError(
            f"{name!r} is not a profile name: 1 to 64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return name


def calibration_to_json(calibration: Calibration) -> dict[str, Any]:
    """Every parameter of the calibration, each pair of conditions spelt out (so a reader
    never has to know which pair stands in for which)."""
    pairs = dict(zip(_CONDITION_PAIRS, calibration.pairs(), strict=True))
    return {
        "speech_cap": calibration.speech_cap,
        "speech_floor": calibration.speech_floor,
        **{
            condition: {key: getattr(pair, key) for key in _PAIR_KEYS}
            for condition, pair in pairs.items()
        },
    }


def calibration_from_json(document: object) -> Calibration:
    """The calibration `calibration_to_json` wrote; ProfileError naming the first problem."""
    fields = _exact_object(
        document, "calibration", (*_CONDITION_PAIRS, "speech_cap", "speech_floor")
    )
    pairs = {
        condition: PairCalibration(
            **{
                key: _number(value, f"calibration.{condition}.{key}")
                for key, value in _exact_object(
                    fields[condition], f"calibration.{condition}", _PAIR_KEYS
                ).items()
            }
        )
        for condition in _CONDITION_PAIRS
    }
    wideband = pairs["wideband"]
    # A pair the same as the wideband one is read as the wideband one standing in (None), as
    # a fit leaves it: a calibration then reads back equal to the one written.
    calibration = Calibration(
        wideband=wideband,
        cross=None if pairs["cross"] == wideband else pairs["cross"],
        narrowband=None if pairs["narrowband"] == wideband else pairs["narrowband"],
        speech_cap=_number(fields["speech_cap"], "calibration.speech_cap"),
        speech_floor=_number(fields["speech_floor"], "calibration.speech_floor"),
    )
    try:
        calibration.check()
    except ValueError as error:
        raise ProfileError(f"calibration: {error}") from None
    return calibration


@dataclass(frozen=True)
class Provenance:
    """Where a profile came from, as `voxmatch calibrate` reports it."""

    created_at: str
    """UTC, ISO 8601."""
    speakers: int
    recordings: int
    target_trials: int
    nontarget_trials: int
    fitted_pairs: list[str]
    """The pairs of conditions fitted on their own trials; the others use the wideband fit."""
    evaluation: dict[str, float]
    """`calibration.Evaluation` of the profile on the trials it was fitted on."""
    cross_validated: dict[str, float] | None = None
    """The same figures by speaker-disjoint cross-validation, when there were enough speakers."""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, document: object) -> Provenance:
        names = tuple(cls.__dataclass_fields__)
        fields = _exact_object(document, "provenance", names)
        created_at = fields["created_at"]
        fitted_pairs = fields["fitted_pairs"]
        if not isinstance(created_at, str):
            raise ProfileError("provenance.created_at must be a string")
        if not isinstance(fitted_pairs, list) or not all(
            pair in _CONDITION_PAIRS for pair in fitted_pairs
        ):
            raise ProfileError(
                f"provenance.fitted_pairs must be a list of {', '.join(_CONDITION_PAIRS)}"
            )
        return cls(
            created_at=created_at,
            speakers=_count(fields["speakers"], "provenance.speakers"),
            recordings=_count(fields["recordings"], "provenance.recordings"),
            target_trials=_count(fields["target_trials"], "provenance.target_trials"),
            nontarget_trials=_count(fields["nontarget_trials"], "provenance.nontarget_trials"),
            fitted_pairs=list(fitted_pairs),
            evaluation=_figures(fields["evaluation"], "provenance.evaluation"),
            cross_validated=None
            if fields["cross_validated"] is None
            else _figures(fields["cross_validated"], "provenance.cross_validated"),
        )


@dataclass(frozen=True)
class CalibrationProfile:
    name: str
    model: str
    """The model whose voiceprints it calibrates: scores of another model's are meaningless."""
    calibration: Calibration
    provenance: Provenance

    def __post_init__(self) -> None:
        check_profile_name(self.name)

    def check_model(self, model: str) -> None:
        """ProfileError unless the profile was fitted for voiceprints of `model`."""
        if model != self.model:
            raise ProfileError(
                f"calibration profile {self.name!r} was fitted for model {self.model!r};"
                f" the voiceprints are of model {model!r}"
            )

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "format": PROFILE_FORMAT,
                "version": PROFILE_VERSION,
                "name": self.name,
                "model": self.model,
                "calibration": calibration_to_json(self.calibration),
                "provenance": self.provenance.to_json(),
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def from_json(cls, content: bytes, name: str) -> CalibrationProfile:
        """The profile stored as `<name>.json`; ProfileError naming the first problem."""
        try:
            document = orjson.loads(content)
        except orjson.JSONDecodeError as error:
            raise ProfileError(f"not valid JSON: {error}") from None
        if not isinstance(document, dict):
            raise ProfileError("not a JSON object")
        if document.get("format") != PROFILE_FORMAT:
            raise ProfileError(f'"format" must be "{PROFILE_FORMAT}"')
        if document.get("version") != PROFILE_VERSION:
            raise ProfileError(
                f"version {document.get('version')!r} is not known (this voxmatch reads version"
                f" {PROFILE_VERSION})"
            )
        fields = _exact_object(
            document,
            "profile",
            ("format", "version", "name", "model", "calibration", "provenance"),
        )
        if fields["name"] != name:
            raise ProfileError(
                f"the file of profile {name!r} says its name is {fields['name']!r}"
                " (a profile's file is named after it)"
            )
        if not isinstance(fields["model"], str) or not fields["model"]:
            raise ProfileError("model must be a model name")
        return cls(
            name=name,
            model=fields["model"],
            calibration=calibration_from_json(fields["calibration"]),
            provenance=Provenance.from_json(fields["provenance"]),
        )


def profile_path(folder: Path, name: str) -> Path:
    return folder / f"{check_profile_name(name)}{PROFILE_SUFFIX}"


def load_profile(path: Path) -> CalibrationProfile:
    """The profile in a file (named `<name>.json`); ProfileError if it cannot be used."""
    name = path.name.removesuffix(PROFILE_SUFFIX)
    check_profile_name(name)
    try:
        with path.open("rb") as stream:
            content = stream.read(MAX_PROFILE_BYTES + 1)
    except FileNotFoundError:
        raise UnknownProfileError(f"no calibration profile {name!r}") from None
    except OSError as error:
        raise ProfileError(f"cannot read profile {name!r}: {error.strerror}") from None
    if len(content) > MAX_PROFILE_BYTES:
        raise ProfileError(f"larger than {MAX_PROFILE_BYTES} bytes: not a profile")
    return CalibrationProfile.from_json(content, name)


def save_profile(profile: CalibrationProfile, folder: Path, *, replace: bool = False) -> Path:
    """Write `<folder>/<name>.json` whole or not at all (a server reading it meanwhile sees the
    old file or the new one); FileExistsError if it exists and `replace` is not set."""
    target = profile_path(folder, profile.name)
    folder.mkdir(parents=True, exist_ok=True)
    if target.exists() and not replace:
        raise FileExistsError(target)
    scratch = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        scratch.write_bytes(profile.to_json() + b"\n")
        os.replace(scratch, target)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    return target


@dataclass
class ProfileLibrary:
    """The profiles of a folder, found by name when asked: a profile saved there while the
    server runs is found by the next request, and a changed file is read again (the cache is
    keyed by the file's inode, modification time and size)."""

    folder: Path
    _cache: dict[str, tuple[tuple[int, int, int], CalibrationProfile]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def find(self, name: str) -> CalibrationProfile:
        """The profile; UnknownProfileError if there is none, ProfileError if it is broken."""
        try:
            path = profile_path(self.folder, name)
        except ProfileError as error:
            raise UnknownProfileError(f"no calibration profile: {error}") from None
        try:
            status = path.stat()
        except FileNotFoundError:
            raise UnknownProfileError(self._unknown(name)) from None
        except OSError as error:
            raise ProfileError(f"cannot read profile {name!r}: {error.strerror}") from None
        stamp = (status.st_ino, status.st_mtime_ns, status.st_size)
        with self._lock:
            cached = self._cache.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            profile = load_profile(path)
        except UnknownProfileError:
            raise UnknownProfileError(self._unknown(name)) from None
        except ProfileError as error:
            raise ProfileError(f"calibration profile {name!r} cannot be used: {error}") from None
        with self._lock:
            self._cache[name] = (stamp, profile)
        return profile

    def names(self) -> list[str]:
        """Names of the profile files in the folder (whether each is usable or not)."""
        try:
            paths = sorted(self.folder.glob(f"*{PROFILE_SUFFIX}"))
        except OSError:
            return []
        names = [path.name.removesuffix(PROFILE_SUFFIX) for path in paths]
        return [name for name in names if PROFILE_NAME.fullmatch(name)]

    def _unknown(self, name: str) -> str:
        known = self.names()
        listing = f"; known: {', '.join(known)}" if known else "; there are none"
        return f"no calibration profile {name!r}{listing}"


def _exact_object(document: object, what: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise ProfileError(f"{what} must be a JSON object")
    missing = [key for key in keys if key not in document]
    if missing:
        raise ProfileError(f"{what} lacks {', '.join(missing)}")
    unknown = sorted(set(document) - set(keys))
    if unknown:
        raise ProfileError(f"{what} has unknown keys: {', '.join(map(str, unknown))}")
    return document


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProfileError(f"{what} must be a finite number")
    return float(value)


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProfileError(f"{what} must be a whole number >= 0")
    return value


def _figures(value: object, what: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ProfileError(f"{what} must be a JSON object of figures")
    return {str(key): _number(figure, f"{what}.{key}") for key, figure in value.items()}
