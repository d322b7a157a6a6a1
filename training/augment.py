"""Waveform augmentation of 16 kHz training windows (pure numpy; the caller passes the random generator).

The main job is to break shortcuts the data invites: every cry clip is an 8 kHz phone recording, so a
model can learn "nothing above 4 kHz = cry". The runtime conditioning chain already band-limits every
source to ``preprocess.bandwidth_hz``; a random low-pass on ALL classes here is the second line of
defence. Gain, time shift and background mixing (Normal audio at 0-20 dB SNR) teach robustness to the
room and to where in the window the sound falls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monitor.constants import EPSILON, SAMPLE_RATE

LOWPASS_TRANSITION_HZ = 400.0
"""Width of the raised-cosine roll-off of ``lowpass`` (a brick wall would ring)."""


@dataclass(frozen=True)
class AugmentParams:
    """Probability and range of each augmentation; each is applied independently."""

    lowpass_probability: float = 0.5
    lowpass_lo_hz: float = 3500.0
    lowpass_hi_hz: float = 8000.0
    gain_probability: float = 0.5
    gain_db_range: tuple[float, float] = (-20.0, 6.0)
    shift_probability: float = 0.5
    max_shift_seconds: float = 0.25
    noise_probability: float = 0.5
    snr_db_range: tuple[float, float] = (-5.0, 20.0)
    """Cries are heard over the TV and the dishwasher, sometimes quieter than them."""
    speed_probability: float = 0.3
    speed_range: tuple[float, float] = (0.9, 1.12)
    """Speed perturbation (pitch and tempo together): another baby, another voice."""


def lowpass(x: np.ndarray, cutoff_hz: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Zero-phase low-pass in the frequency domain with a raised-cosine transition ending at ``cutoff_hz``."""
    nyquist = sample_rate / 2
    if cutoff_hz >= nyquist:
        return np.asarray(x, dtype=np.float32).copy()
    spectrum = np.fft.rfft(x.astype(np.float64))
    freqs = np.fft.rfftfreq(x.size, d=1.0 / sample_rate)
    start = cutoff_hz - LOWPASS_TRANSITION_HZ
    ramp = np.clip((freqs - start) / LOWPASS_TRANSITION_HZ, 0.0, 1.0)
    response = 0.5 * (1.0 + np.cos(np.pi * ramp))
    return np.fft.irfft(spectrum * response, n=x.size).astype(np.float32)


def random_lowpass(x: np.ndarray, rng: np.random.Generator, lo_hz: float = 3500.0,
                   hi_hz: float = 8000.0) -> np.ndarray:
    """Band-limit to a cutoff drawn uniformly from [lo_hz, hi_hz] (8 kHz = unchanged at 16 kHz)."""
    return lowpass(x, float(rng.uniform(lo_hz, hi_hz)))


def random_gain(x: np.ndarray, rng: np.random.Generator, db_range: tuple[float, float]) -> np.ndarray:
    """Scale by a gain drawn uniformly in dB, clipped to [-1, 1] as a real input stage would."""
    gain = 10 ** (float(rng.uniform(*db_range)) / 20)
    return np.clip(x * gain, -1.0, 1.0).astype(np.float32)


def random_shift(x: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
    """Move the content by up to ``max_shift`` samples either way, filling with silence (no wrap-around)."""
    shift = int(rng.integers(-max_shift, max_shift + 1)) if max_shift > 0 else 0
    out = np.zeros_like(x, dtype=np.float32)
    if shift >= 0:
        out[shift:] = x[:x.size - shift]
    else:
        out[:shift] = x[-shift:]
    return out


def change_speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (pitch up by the same factor), by linear interpolation, keeping its
    length: a sped-up window is padded with silence, a slowed one cut."""
    positions = np.arange(0.0, x.size - 1, factor)
    played = np.interp(positions, np.arange(x.size), x).astype(np.float32)
    out = np.zeros(x.size, np.float32)
    out[:min(x.size, played.size)] = played[:x.size]
    return out


def _fit_length(noise: np.ndarray, n: int) -> np.ndarray:
    if noise.size >= n:
        return noise[:n]
    return np.tile(noise, int(np.ceil(n / max(noise.size, 1))))[:n]


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``signal + k * noise`` with k chosen so that signal power / noise power = ``snr_db``.

    Silent noise or a silent signal (no defined SNR) returns the signal unchanged. If the sum would
    clip, both parts are scaled down together, which keeps the SNR exact.
    """
    noise = _fit_length(np.asarray(noise, dtype=np.float32), signal.size)
    signal_power = float(np.mean(np.square(signal, dtype=np.float64)))
    noise_power = float(np.mean(np.square(noise, dtype=np.float64)))
    if signal_power < EPSILON or noise_power < EPSILON:
        return np.asarray(signal, dtype=np.float32).copy()
    scale = np.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10)))
    mixed = signal.astype(np.float64) + scale * noise
    peak = float(np.max(np.abs(mixed)))
    if peak > 1.0:
        mixed /= peak
    return mixed.astype(np.float32)


def augment_window(x: np.ndarray, rng: np.random.Generator, noise_bank: np.ndarray | None,
                   params: AugmentParams = AugmentParams()) -> np.ndarray:
    """One random augmented copy of a conditioned (not yet prepared) window.

    Order: speed, shift, background mix, low-pass (so the added background is band-limited too, as a
    narrow-band channel would), then gain.
    """
    out = np.asarray(x, dtype=np.float32)
    if rng.random() < params.speed_probability:
        out = change_speed(out, float(rng.uniform(*params.speed_range)))
    if rng.random() < params.shift_probability:
        out = random_shift(out, rng, int(params.max_shift_seconds * SAMPLE_RATE))
    if noise_bank is not None and len(noise_bank) and rng.random() < params.noise_probability:
        noise = noise_bank[int(rng.integers(len(noise_bank)))]
        out = mix_at_snr(out, noise, float(rng.uniform(*params.snr_db_range)))
    if rng.random() < params.lowpass_probability:
        out = random_lowpass(out, rng, params.lowpass_lo_hz, params.lowpass_hi_hz)
    if rng.random() < params.gain_probability:
        out = random_gain(out, rng, params.gain_db_range)
    return out.astype(np.float32, copy=False)
