"""Waveform augmentation: shapes, dtypes, band limits and exact SNR."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.constants import SAMPLE_RATE, WINDOW_SAMPLES
from training.augment import (
    AugmentParams,
    augment_window,
    lowpass,
    mix_at_snr,
    random_gain,
    random_lowpass,
    random_shift,
)


def tone(freq_hz: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(WINDOW_SAMPLES) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def band_power(x: np.ndarray, lo_hz: float, hi_hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / SAMPLE_RATE)
    return float(spectrum[(freqs >= lo_hz) & (freqs < hi_hz)].sum())


def noise(seed: int = 0, scale: float = 0.1) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(WINDOW_SAMPLES)).astype(np.float32)


def test_lowpass_removes_band_above_cutoff_and_keeps_below():
    x = tone(1000) + tone(6000)
    y = lowpass(x, 4000)
    assert y.shape == x.shape and y.dtype == np.float32
    assert band_power(y, 5500, 6500) < 1e-6 * band_power(x, 5500, 6500)
    assert band_power(y, 900, 1100) == pytest.approx(band_power(x, 900, 1100), rel=1e-3)


def test_lowpass_at_nyquist_is_identity():
    x = noise()
    assert np.allclose(lowpass(x, SAMPLE_RATE / 2), x)


def test_random_lowpass_cutoff_within_range():
    rng = np.random.default_rng(1)
    x = noise(2)
    for _ in range(20):
        y = random_lowpass(x, rng, lo_hz=3500, hi_hz=5000)
        assert band_power(y, 5100, 8000) < 1e-6 * band_power(x, 5100, 8000)


def test_random_gain_stays_in_range_and_clips():
    rng = np.random.default_rng(3)
    x = tone(500, amplitude=0.1)
    for _ in range(20):
        y = random_gain(x, rng, (-12.0, 6.0))
        gain_db = 10 * np.log10(power(y) / power(x))
        assert -12.01 <= gain_db <= 6.01 and y.dtype == np.float32
    loud = random_gain(tone(500, amplitude=0.9), rng, (20.0, 20.0))
    assert np.max(np.abs(loud)) <= 1.0


def test_random_shift_moves_content_and_fills_silence():
    x = np.arange(1, WINDOW_SAMPLES + 1, dtype=np.float32)
    rng = np.random.default_rng(4)
    for _ in range(10):
        y = random_shift(x, rng, 800)
        shift = int(np.argmax(y > 0)) if y[0] == 0 else -int(y[0] - 1)
        assert abs(shift) <= 800 and y.shape == x.shape and y.dtype == np.float32
        if shift >= 0:
            assert np.all(y[:shift] == 0) and np.array_equal(y[shift:], x[:WINDOW_SAMPLES - shift])
        else:
            assert np.all(y[shift:] == 0) and np.array_equal(y[:shift], x[-shift:])


def measured_snr_db(signal: np.ndarray, added: np.ndarray, mixed: np.ndarray) -> float:
    """SNR of ``mixed`` = a * signal + b * added, with a, b recovered by least squares."""
    (a, b), *_ = np.linalg.lstsq(np.stack([signal, added], axis=1).astype(np.float64), mixed.astype(np.float64),
                                 rcond=None)
    return 10 * np.log10(power(a * signal) / power(b * added))


@settings(max_examples=30, deadline=None)
@given(snr_db=st.floats(0.0, 20.0), amplitude=st.floats(0.01, 0.95), seed=st.integers(0, 1000))
def test_mix_at_snr_is_exact(snr_db, amplitude, seed):
    signal = tone(440, amplitude)
    background = noise(seed, scale=0.3)
    mixed = mix_at_snr(signal, background, snr_db)
    assert mixed.shape == signal.shape and mixed.dtype == np.float32
    assert np.max(np.abs(mixed)) <= 1.0 + 1e-6
    assert measured_snr_db(signal, background, mixed) == pytest.approx(snr_db, abs=0.05)


def test_mix_at_snr_tiles_short_noise_and_ignores_silence():
    signal = tone(300)
    short = noise(5)[:1000]
    mixed = mix_at_snr(signal, short, 10.0)
    assert measured_snr_db(signal, np.tile(short, 16)[:WINDOW_SAMPLES], mixed) == pytest.approx(10.0, abs=0.05)
    assert np.array_equal(mix_at_snr(signal, np.zeros(WINDOW_SAMPLES), 5.0), signal)
    silent = np.zeros(WINDOW_SAMPLES, np.float32)
    assert np.array_equal(mix_at_snr(silent, noise(), 5.0), silent)


def test_augment_window_deterministic_shape_dtype():
    x = tone(700)
    bank = np.stack([noise(i) for i in range(4)])
    params = AugmentParams(lowpass_probability=1, gain_probability=1, shift_probability=1, noise_probability=1)
    a = augment_window(x, np.random.default_rng(9), bank, params)
    b = augment_window(x, np.random.default_rng(9), bank, params)
    assert a.shape == (WINDOW_SAMPLES,) and a.dtype == np.float32 and np.all(np.isfinite(a))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, augment_window(x, np.random.default_rng(10), bank, params))


def test_augment_window_with_nothing_enabled_is_identity():
    params = AugmentParams(lowpass_probability=0, gain_probability=0, shift_probability=0, noise_probability=0)
    x = noise(11)
    assert np.array_equal(augment_window(x, np.random.default_rng(0), None, params), x)


def test_augment_window_band_limits_every_class_sometimes():
    """The low-pass fires for about ``lowpass_probability`` of calls, whatever the input."""
    params = AugmentParams(lowpass_probability=0.5, lowpass_lo_hz=3500, lowpass_hi_hz=4000, gain_probability=0,
                           shift_probability=0, noise_probability=0)
    rng = np.random.default_rng(12)
    x = noise(13)
    limited = [band_power(augment_window(x, rng, None, params), 4500, 8000) < 1e-6 * band_power(x, 4500, 8000)
               for _ in range(200)]
    assert 0.35 < np.mean(limited) < 0.65


@pytest.mark.parametrize("factor", [0.9, 1.0, 1.12])
def test_change_speed_moves_the_pitch_and_keeps_the_length(factor: float):
    from training.augment import change_speed

    t = np.arange(WINDOW_SAMPLES) / SAMPLE_RATE
    tone = np.sin(2 * np.pi * 500.0 * t).astype(np.float32)
    played = change_speed(tone, factor)
    assert played.shape == tone.shape and played.dtype == np.float32
    voiced = played[: int(WINDOW_SAMPLES / max(factor, 1.0)) - 1]
    spectrum = np.abs(np.fft.rfft(voiced * np.hanning(voiced.size)))
    peak_hz = np.fft.rfftfreq(voiced.size, 1 / SAMPLE_RATE)[np.argmax(spectrum)]
    assert peak_hz == pytest.approx(500.0 * factor, rel=0.02)
    if factor > 1:
        assert not np.any(played[int(WINDOW_SAMPLES / factor) + 1:])
