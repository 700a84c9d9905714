"""How well extraction tells narrowband audio from wideband, measured on real speech.

Every clip of real speech at hand (AMI single-speaker runs of at least 1 s, the AN4 utterances
and the LibriVox reader, from `tools.corpora`) goes through extraction as a 16 kHz WAV file, and
so does each of its telephone versions (`tools.telephone`: every codec, stored at 8, 16
and 44.1 kHz). Reported: the detected bandwidths of each set, the errors at the threshold
(wideband called narrowband and the reverse), and the margins.

    .venv/bin/python -m tools.bandwidth_report
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
from numpy.typing import NDArray

from tools import corpora, telephone
from voxmatch.bandwidth import NARROWBAND_BELOW_HZ
from voxmatch.extraction import Extractor, load_extractor
from voxmatch.models import DEFAULT_MODEL_NAME
from voxmatch.voiceprint import NARROWBAND, Voiceprint


def clips(min_seconds: float) -> list[tuple[str, NDArray[np.float32]]]:
    """(name, 16 kHz samples) of every clip of real speech at hand."""
    found = [
        (f"ami {segment.speaker} {segment.path.stem} {segment.start:.1f}", segment)
        for segment in corpora.ami_segments(min_seconds)
    ]
    loaded = [(name, corpora.load_segment(segment)) for name, segment in found]
    for file in corpora.an4_files() + corpora.librivox_files():
        loaded.append((f"{file.corpus} {file.name}", corpora.load(file.path)))
    return loaded


def extracted(extractor: Extractor, wav: bytes) -> Voiceprint:
    (channel,) = extractor.extract_source(wav)
    return channel.extraction.voiceprint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-seconds", type=float, default=1.0, help="shortest AMI run used")
    arguments = parser.parse_args()
    extractor = load_extractor(DEFAULT_MODEL_NAME, corpora.models_cache_dir())
    wideband: list[float] = []
    wide_errors: list[str] = []
    narrowband: dict[str, list[float]] = defaultdict(list)
    narrow_errors: list[str] = []
    for name, samples in clips(arguments.min_seconds):
        original = extracted(extractor, telephone.wav_bytes(samples))
        if original.speech_length == 0:
            continue  # too little speech for a voiceprint: nothing was measured
        wideband.append(original.bandwidth)
        if original.condition == NARROWBAND:
            wide_errors.append(f"{name}: {original.bandwidth:.0f} Hz")
        for codec in telephone.CHAINS:
            for rate in telephone.STORED_RATES:
                chain = f"{codec} {rate} Hz"
                wav = telephone.telephone_wav(samples, codec, rate)
                voiceprint = extracted(extractor, wav)
                if voiceprint.speech_length == 0:
                    continue
                narrowband[chain].append(voiceprint.bandwidth)
                if voiceprint.condition != NARROWBAND:
                    narrow_errors.append(f"{name} {chain}: {voiceprint.bandwidth:.0f} Hz")
    narrow_all = [value for values in narrowband.values() for value in values]
    print(f"threshold: narrowband below {NARROWBAND_BELOW_HZ:.0f} Hz")
    print(
        f"wideband originals: {len(wideband)}, bandwidth min {min(wideband):.0f} Hz,"
        f" 5th percentile {np.percentile(wideband, 5):.0f} Hz, median {np.median(wideband):.0f} Hz;"
        f" called narrowband: {len(wide_errors)}"
    )
    print(
        f"telephone versions: {len(narrow_all)}, bandwidth max {max(narrow_all):.0f} Hz,"
        f" 95th percentile {np.percentile(narrow_all, 95):.0f} Hz,"
        f" median {np.median(narrow_all):.0f} Hz; called wideband: {len(narrow_errors)}"
    )
    for chain, values in narrowband.items():
        print(f"  {chain:16} n={len(values):3}  max {max(values):5.0f} Hz")
    for error in wide_errors + narrow_errors:
        print("  error:", error)


if __name__ == "__main__":
    main()
