"""Signal conditioning shared by training and the runtime, so both feed the models identical input.

Two stages:
- ``Conditioner``: any rate / channel count -> 16 kHz mono float32, band-limited through one
  fixed chain (default: an 8 kHz-rate stage), streaming so the microphone and a whole training
  clip take the very same path.
- ``prepare_window``: per 0.975 s window, remove DC and normalise loudness right before a model.
"""

from __future__ import annotations

import numpy as np
import soxr

from .config import PreprocessConfig
from .constants import SAMPLE_RATE, WINDOW_SAMPLES
from .signal_helpers import pad_to_window, rms_dbfs


def sanitize(samples: np.ndarray) -> np.ndarray:
    """NaN/Inf (corrupt files, broken drivers) become silence; values are clipped to [-1, 1]. Always a new array."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.size and -1.0 <= samples.min() and samples.max() <= 1.0:
        return samples.copy()  # the common case, checked in two reductions (NaN fails both comparisons)
    if not np.all(np.isfinite(samples)):
        samples = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(samples, -1.0, 1.0)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(frames,) or (frames, channels) -> (frames,) by averaging channels."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        return samples
    if samples.ndim != 2:
        raise ValueError(f"expected 1-D or 2-D audio, got shape {samples.shape}")
    if samples.shape[1] == 1:
        return samples[:, 0]  # the mean of one channel, without a reduction per block
    return samples.mean(axis=1, dtype=np.float32)


def remove_dc(window: np.ndarray) -> np.ndarray:
    return (window - np.mean(window, dtype=np.float64)).astype(np.float32)


def normalise_loudness(window: np.ndarray, target_dbfs: float, max_gain_db: float) -> np.ndarray:
    """Scale to ``target_dbfs`` RMS, with the gain capped so silence is not blown up into noise."""
    gain_db = min(target_dbfs - rms_dbfs(window), max_gain_db)
    scaled = window * np.float32(10 ** (gain_db / 20))
    return np.clip(scaled, -1.0, 1.0).astype(np.float32)


def prepare_window(window: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """The last step before every model, in training and at runtime."""
    return normalise_loudness(remove_dc(window), cfg.target_dbfs, cfg.max_gain_db)


def prepare_batch(windows: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    return np.stack([prepare_window(w, cfg) for w in windows]) if len(windows) else np.zeros((0, WINDOW_SAMPLES),
                                                                                             np.float32)


class Conditioner:
    """Streaming resampler: input rate -> (band-limit stage) -> 16 kHz mono.

    With ``bandwidth_hz`` set, every source passes through a ``2 * bandwidth_hz`` rate, so 8 kHz
    phone cries and 48 kHz room microphones reach the models with the same spectrum ceiling.
    """

    def __init__(self, input_rate: int, cfg: PreprocessConfig):
        if input_rate <= 0:
            raise ValueError(f"invalid sample rate {input_rate}")
        self.input_rate = int(input_rate)
        rates = [self.input_rate]
        if cfg.bandwidth_hz:
            rates.append(2 * cfg.bandwidth_hz)
        rates.append(SAMPLE_RATE)
        self._stages = [
            soxr.ResampleStream(a, b, 1, dtype="float32", quality="HQ")
            for a, b in zip(rates, rates[1:]) if a != b
        ]

    def process(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """Feed one block (any channel layout); returns the 16 kHz samples ready so far. Each channel is
        sanitised before the mix, so one broken channel does not silence the others, and huge float values
        cannot overflow the mean."""
        out = to_mono(sanitize(block))
        for stage in self._stages:
            out = stage.resample_chunk(out, last=last)
        return sanitize(out)

    def flush(self) -> np.ndarray:
        return self.process(np.zeros(0, np.float32), last=True)


def condition_clip(samples: np.ndarray, rate: int, cfg: PreprocessConfig) -> np.ndarray:
    """A whole clip through the same streaming chain as the microphone."""
    conditioner = Conditioner(rate, cfg)
    return np.concatenate([conditioner.process(samples), conditioner.flush()])


def frame_starts(n_samples: int, hop_samples: int, window_samples: int = WINDOW_SAMPLES) -> list[int]:
    """Start offsets of sliding windows over a clip; a clip shorter than a window still gets one."""
    if n_samples <= window_samples:
        return [0]
    starts = list(range(0, n_samples - window_samples + 1, hop_samples))
    if starts[-1] + window_samples < n_samples:
        starts.append(n_samples - window_samples)
    return starts


def clip_windows(samples: np.ndarray, hop_samples: int) -> np.ndarray:
    """(n, 15600) windows of a 16 kHz clip, zero-padded when the clip is shorter than one window."""
    samples = pad_to_window(samples)
    return np.stack([samples[s:s + WINDOW_SAMPLES] for s in frame_starts(samples.size, hop_samples)])
