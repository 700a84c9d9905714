"""Write a long recording of real speech: for memory measurements and the memory test.

    python -m bench.long_recording OUT.flac --minutes 120 [--speech-every 60]

The recording is 16 kHz mono 16-bit FLAC (WAV if OUT ends in .wav). Every `speech_every`
seconds it holds the single-speaker runs of one AMI speaker (FEE083 in trn06.wav, 21.5 s of
speech, 0.5 s of silence between runs), and silence in between: `--speech-every 0` puts the
runs back to back, so the whole recording is speech. The runs are real speech fetched and
cached by tools.corpora; FEE083's runs in trn09.wav are left out, for a voiceprint of the
same speaker that did not go into the recording (`held_out_speech`).

The file is written unit by unit, so writing two hours needs memory for one unit only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile
from numpy.typing import NDArray

from tools import corpora

SAMPLE_RATE = 16000
SPEAKER = "FEE083"
RECORDING = "trn06"
HELD_OUT_RECORDING = "trn09"
_GAP_SECONDS = 0.5


def _runs(recording: str) -> list[NDArray[np.float32]]:
    return [
        corpora.load_segment(segment)
        for segment in corpora.ami_segments(1.0)
        if segment.speaker == SPEAKER and segment.path.stem == recording
    ]


def speech_unit() -> NDArray[np.float32]:
    """FEE083's runs of trn06.wav, each followed by half a second of silence."""
    gap = np.zeros(round(_GAP_SECONDS * SAMPLE_RATE), dtype=np.float32)
    parts: list[NDArray[np.float32]] = []
    for run in _runs(RECORDING):
        parts += [run, gap]
    return np.concatenate(parts)


def held_out_speech() -> NDArray[np.float32]:
    """FEE083's runs of trn09.wav: the same speaker, none of it in the recording."""
    return np.concatenate(_runs(HELD_OUT_RECORDING))


def write_long_recording(path: Path, minutes: float, speech_every: float = 60.0) -> float:
    """Write the recording described above; returns the seconds of speech units written."""
    unit = speech_unit()
    period = max(round(speech_every * SAMPLE_RATE), unit.shape[0])
    total = round(minutes * 60 * SAMPLE_RATE)
    kind = "WAV" if path.suffix.lower() == ".wav" else "FLAC"
    speech = 0
    with soundfile.SoundFile(path, "w", SAMPLE_RATE, 1, subtype="PCM_16", format=kind) as out:
        for begin in range(0, total, period):
            block = np.zeros(min(period, total - begin), dtype=np.float32)
            length = min(unit.shape[0], block.shape[0])
            block[:length] = unit[:length]
            speech += length
            out.write(block)
    return speech / SAMPLE_RATE


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--minutes", type=float, default=120.0)
    parser.add_argument(
        "--speech-every",
        type=float,
        default=60.0,
        help="seconds from one speech unit to the next (0: speech throughout)",
    )
    args = parser.parse_args()
    speech = write_long_recording(args.out, args.minutes, args.speech_every)
    print(f"{args.out}: {args.minutes:g} min, {speech / 60:.1f} min of it speech units")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
