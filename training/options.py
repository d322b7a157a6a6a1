"""Optional preprocessing, tried in training only (``training.ablation`` decides whether to keep it).

- ``noise_reduce``: stationary spectral gating (noisereduce): estimates the clip's steady noise
  spectrum and attenuates bins below it. Could help with the hiss of phone recordings.
- ``normalise_pitch``: moves the clip's median f0 to a fixed reference by resampling (pitch and tempo
  change together: the simplest shift there is). Tests whether pitch carries the class or only the
  speaker; it can also destroy the cue that cries are high-pitched.

Both are off in ``PreprocessConfig`` unless the ablation on the val split shows a clear gain; the
runtime conditioning chain does not apply them, so turning one on also needs it at runtime.
"""

from __future__ import annotations

import logging

import numpy as np
import soxr

from monitor.config import PreprocessConfig
from monitor.constants import SAMPLE_RATE

log = logging.getLogger(__name__)

NOISE_REDUCTION_AMOUNT = 0.9
"""Fraction of the estimated noise removed (1.0 = full gating, which adds musical noise)."""
PITCH_FRAME_SAMPLES = 640
"""40 ms analysis frames for f0 estimation (two periods of a 50 Hz voice)."""
PITCH_HOP_SAMPLES = 320
PITCH_RANGE_HZ = (80.0, 1000.0)
"""Adult speech down to ~80 Hz, infant cries up to ~1 kHz."""
VOICING_THRESHOLD = 0.5
"""Normalised autocorrelation peak above which a frame counts as voiced."""
REFERENCE_F0_HZ = 300.0
"""Every clip's median f0 is moved here."""
MAX_PITCH_RATIO = 2.0
"""Never shift by more than an octave either way."""
ENERGY_PERCENTILE = 50.0
"""Only frames louder than this percentile of the clip's frame energies are pitch-tracked."""


def noise_reduce(samples16k: np.ndarray) -> np.ndarray:
    """Stationary spectral gating of a whole 16 kHz clip."""
    import noisereduce

    if samples16k.size == 0 or not np.any(samples16k):
        return np.asarray(samples16k, dtype=np.float32)
    out = noisereduce.reduce_noise(y=samples16k.astype(np.float32), sr=SAMPLE_RATE, stationary=True,
                                   prop_decrease=NOISE_REDUCTION_AMOUNT)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def frame_f0(frame: np.ndarray) -> float | None:
    """f0 of one frame from its normalised autocorrelation peak, or None when unvoiced."""
    frame = frame - frame.mean()
    energy = float(np.dot(frame, frame))
    if energy <= 0.0:
        return None
    spectrum = np.fft.rfft(frame, n=2 * frame.size)
    autocorr = np.fft.irfft(np.abs(spectrum) ** 2)[:frame.size] / energy
    lo_lag = int(SAMPLE_RATE / PITCH_RANGE_HZ[1])
    hi_lag = min(int(SAMPLE_RATE / PITCH_RANGE_HZ[0]), frame.size - 1)
    lag = lo_lag + int(np.argmax(autocorr[lo_lag:hi_lag]))
    if autocorr[lag] < VOICING_THRESHOLD:
        return None
    return SAMPLE_RATE / lag


def median_f0(samples16k: np.ndarray) -> float | None:
    """Median f0 over the clip's louder voiced frames; None when no frame is voiced."""
    if samples16k.size < PITCH_FRAME_SAMPLES:
        return None
    starts = range(0, samples16k.size - PITCH_FRAME_SAMPLES + 1, PITCH_HOP_SAMPLES)
    frames = np.stack([samples16k[s:s + PITCH_FRAME_SAMPLES] for s in starts]).astype(np.float64)
    energies = np.mean(frames ** 2, axis=1)
    loud = frames[energies >= np.percentile(energies, ENERGY_PERCENTILE)]
    f0s = [f for f in (frame_f0(frame) for frame in loud) if f is not None]
    return float(np.median(f0s)) if f0s else None


def normalise_pitch(samples16k: np.ndarray, reference_hz: float = REFERENCE_F0_HZ) -> np.ndarray:
    """Shift the clip so its median f0 lands on ``reference_hz`` (ratio capped at an octave)."""
    f0 = median_f0(samples16k)
    if f0 is None:
        return np.asarray(samples16k, dtype=np.float32)
    ratio = float(np.clip(reference_hz / f0, 1 / MAX_PITCH_RATIO, MAX_PITCH_RATIO))
    # Resampling to rate/ratio and playing the result back at the original rate multiplies every frequency by ratio.
    shifted = soxr.resample(samples16k.astype(np.float32), SAMPLE_RATE, SAMPLE_RATE / ratio, quality="HQ")
    return np.clip(shifted, -1.0, 1.0).astype(np.float32)


def apply_options(samples16k: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """The training-only options enabled in ``cfg``, noise reduction first (pitch tracking likes clean input)."""
    if cfg.noise_reduction:
        samples16k = noise_reduce(samples16k)
    if cfg.pitch_normalisation:
        samples16k = normalise_pitch(samples16k)
    return samples16k
