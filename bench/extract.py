"""Real-time factor of voiceprint extraction on real speech, against the bare model in the same run.

The speech: every single-speaker run of AMI meeting speech (>= 1 s, 172 s in all), the CMU AN4
utterances and a LibriVox reader's utterances, each as a 16-bit WAV file (all fetched by
tools.corpora). For each clip the full pipeline runs from the file's bytes: decode, voice
activity detection, filterbank, network. The floor is the bare network, measured in the same
process on the same audio: onnxruntime on the filterbank features of the whole clip. With 1 and
2 onnxruntime threads, it reports

- real-time factor = pipeline time / audio duration (target <= 0.015 on 2 threads);
- overhead = pipeline time / bare network time - 1 (target <= 30 %).

Also shown, for the record: the network on exactly the speech the pipeline kept (VAD trims a
little of each clip, so this floor is a bit lower than the first).

    .venv/bin/python -m bench.extract [--repeats N]
"""

from __future__ import annotations

import argparse
import io
import sys
import time

import numpy as np
import soundfile

from tools import corpora
from voxmatch.audio import decode
from voxmatch.extraction import Extractor, load_extractor
from voxmatch.models.registry import DEFAULT_MODEL_NAME


def best_of(repeats: int, action: object) -> float:
    assert callable(action)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(extractor: Extractor, clips: list[bytes], repeats: int) -> tuple[float, float, float]:
    """Seconds, summed over the clips: pipeline, network on the clip, network on its speech."""
    pipeline = network_all = network_speech = 0.0
    model = extractor.model
    for content in clips:

        def run_pipeline(content: bytes = content) -> None:
            audio = decode(content)
            extractor.extract(audio.samples[0])

        pipeline += best_of(repeats, run_pipeline)
        samples = decode(content).samples[0]
        whole = model.features(samples)
        network_all += best_of(repeats, lambda whole=whole: model.embed(whole))
        speech = extractor.vad.speech_samples(samples)
        if speech.seconds >= extractor.min_speech_seconds:
            kept = model.features(speech.samples)
            network_speech += best_of(repeats, lambda kept=kept: model.embed(kept))
    return pipeline, network_all, network_speech


def wav(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    signals = [corpora.load_segment(segment) for segment in corpora.ami_segments(1.0)]
    signals += [corpora.load(item.path) for item in corpora.an4_files() + corpora.librivox_files()]
    clips = [wav(signal) for signal in signals]
    duration = sum(signal.shape[0] for signal in signals) / 16000
    print(f"{len(clips)} clips of real speech, {duration:.0f} s")
    verdict = True
    for threads in (1, 2):
        extractor = load_extractor(DEFAULT_MODEL_NAME, corpora.models_cache_dir(), threads=threads)
        extractor.extract(signals[0])  # warm the sessions up
        pipeline, network_all, network_speech = measure(extractor, clips, args.repeats)
        overhead = pipeline / network_all - 1
        print(
            f"{threads} thread{'s' if threads > 1 else ' '}: real-time factor"
            f" {pipeline / duration:.4f}; bare network {network_all / duration:.4f},"
            f" overhead {100 * overhead:.0f} %"
            f" (against the network on the kept speech only, {network_speech / duration:.4f}:"
            f" {100 * (pipeline / network_speech - 1):.0f} %)"
        )
        if threads == 2:
            verdict = pipeline / duration <= 0.015 and overhead <= 0.30
    print("targets (2 threads): real-time factor <= 0.015, overhead <= 30 %")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
