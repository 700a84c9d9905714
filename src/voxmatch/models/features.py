"""The audio front end of the speaker models: Kaldi log-mel filterbanks.

3D-Speaker computes its features with `torchaudio.compliance.kaldi.fbank(wav, num_mel_bins=80,
sample_frequency=16000, dither=0)` on the waveform as torchaudio loads it (floats in [-1, 1],
*not* rescaled to the 16-bit range), then subtracts each bin's mean over the utterance
(`speakerlab/process/processor.py`, class `FBank` with `mean_nor=True`). torchaudio's defaults
are Kaldi's: 25 ms povey window, 10 ms shift, pre-emphasis 0.97, DC removal, FFT size rounded up
to a power of two, mel bins from 20 Hz to Nyquist, power spectrum, natural log floored at float32
epsilon, and `snip_edges=True` (only whole windows, so the first frame starts at sample 0).
`kaldi_native_fbank` computes the same thing without torch.

WeSpeaker-style exports instead expect the samples scaled to the 16-bit range and no mean
subtraction; sherpa-onnx tells the two apart by the model metadata keys `normalize_samples` and
`feature_normalize_type`, which `FbankFrontEnd.from_metadata` reads the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import kaldi_native_fbank as knf
import numpy as np
import numpy.typing as npt

INT16_SCALE = 32768.0


@dataclass(frozen=True)
class FbankFrontEnd:
    sample_rate: int = 16000
    num_mel_bins: int = 80
    sample_scale: float = 1.0
    """Factor applied to [-1, 1] float samples first: 1 for 3D-Speaker, 32768 for WeSpeaker."""
    subtract_mean: bool = True
    """Subtract each bin's mean over the utterance (sherpa-onnx's "global-mean")."""

    @property
    def window_samples(self) -> int:
        """Samples in one 25 ms analysis window: fewer than this yields no frame at all."""
        return self.sample_rate * 25 // 1000

    @classmethod
    def from_metadata(
        cls, metadata: Mapping[str, str], *, sample_rate: int, num_mel_bins: int
    ) -> FbankFrontEnd:
        """The front end the sherpa-onnx convention implies for a model's metadata.

        `normalize_samples` = 1 means the model was trained on samples in [-1, 1] (3D-Speaker);
        0 means on the 16-bit integer range (WeSpeaker). sherpa-onnx assumes 0 when the key is
        missing, and so does this. `feature_normalize_type` "global-mean" asks for the per-bin
        mean subtraction; an empty or missing value for none; anything else is refused rather
        than guessed.
        """
        raw_normalize = metadata.get("normalize_samples", "0").strip()
        if raw_normalize not in ("0", "1"):
            raise ValueError(f"normalize_samples must be 0 or 1, not {raw_normalize!r}")
        feature_normalize = metadata.get("feature_normalize_type", "").strip()
        if feature_normalize not in ("", "global-mean"):
            raise ValueError(
                f"feature_normalize_type {feature_normalize!r} is not supported "
                "(only 'global-mean' or none)"
            )
        return cls(
            sample_rate=sample_rate,
            num_mel_bins=num_mel_bins,
            sample_scale=1.0 if raw_normalize == "1" else INT16_SCALE,
            subtract_mean=feature_normalize == "global-mean",
        )

    def _options(self) -> knf.FbankOptions:
        options = knf.FbankOptions()
        options.frame_opts.samp_freq = float(self.sample_rate)
        options.frame_opts.frame_length_ms = 25.0
        options.frame_opts.frame_shift_ms = 10.0
        options.frame_opts.dither = 0.0
        options.frame_opts.snip_edges = True
        options.frame_opts.window_type = "povey"
        options.mel_opts.num_bins = self.num_mel_bins
        options.mel_opts.low_freq = 20.0
        options.mel_opts.high_freq = 0.0
        options.use_energy = False
        options.use_log_fbank = True
        options.use_power = True
        return options

    def compute(self, samples: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """Features (frames x bins, float32) of mono samples in [-1, 1] at `sample_rate`."""
        waveform = np.asarray(samples)
        if waveform.ndim != 1:
            raise ValueError(f"expected mono samples (1-D), got shape {waveform.shape}")
        if not np.issubdtype(waveform.dtype, np.floating):
            raise TypeError(f"expected float samples in [-1, 1], got {waveform.dtype}")
        waveform = waveform.astype(np.float32, copy=False)
        if self.sample_scale != 1.0:
            waveform = waveform * np.float32(self.sample_scale)
        extractor = knf.OnlineFbank(self._options())
        # The binding converts a list far faster than it iterates over an ndarray.
        extractor.accept_waveform(float(self.sample_rate), waveform.tolist())
        extractor.input_finished()
        frames = extractor.num_frames_ready
        features = np.empty((frames, self.num_mel_bins), dtype=np.float32)
        for index in range(frames):
            features[index] = extractor.get_frame(index)
        if self.subtract_mean and frames:
            features -= features.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
        return features


CAMPPLUS_FRONT_END = FbankFrontEnd()
"""3D-Speaker's front end: samples in [-1, 1], per-utterance mean subtracted."""


def compute_features(
    samples: npt.NDArray[np.floating], front_end: FbankFrontEnd = CAMPPLUS_FRONT_END
) -> npt.NDArray[np.float32]:
    """Mean-normalised 80-bin fbank (frames x 80) of 16 kHz mono float samples in [-1, 1]."""
    return front_end.compute(samples)
