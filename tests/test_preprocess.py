"""The conditioning chain shared by training and runtime: rate, length, dtype, silence, band limit."""

import numpy as np
import pytest
import soundfile as sf

from monitor.audiofile import AudioFileError, load_clip
from monitor.config import PreprocessConfig
from monitor.constants import SAMPLE_RATE, WINDOW_SAMPLES
from monitor.preprocess import (
    Conditioner,
    clip_windows,
    condition_clip,
    frame_starts,
    normalise_loudness,
    prepare_window,
    rms_dbfs,
    sanitize,
    to_mono,
)


def tone(freq, seconds, rate, amplitude=0.5):
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def band_energy(x, lo, hi):
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / SAMPLE_RATE)
    return spectrum[(freqs >= lo) & (freqs < hi)].sum()


@pytest.mark.parametrize("rate", [8000, 11025, 16000, 22050, 44100, 48000, 96000])
def test_any_rate_becomes_16k_float32_of_the_right_length(rate):
    out = condition_clip(tone(440, 2.0, rate), rate, PreprocessConfig())
    assert out.dtype == np.float32
    assert abs(out.size - 2 * SAMPLE_RATE) <= 4
    assert np.all(np.isfinite(out))


def test_silence_stays_silence():
    out = condition_clip(np.zeros(48000, np.float32), 48000, PreprocessConfig())
    assert np.max(np.abs(out)) == 0.0
    window = prepare_window(np.zeros(WINDOW_SAMPLES, np.float32), PreprocessConfig())
    assert np.max(np.abs(window)) == 0.0


def test_band_limit_removes_content_above_the_bandwidth_for_every_source():
    cfg = PreprocessConfig(bandwidth_hz=4000)
    wide = condition_clip(tone(6000, 1.0, 48000) + tone(1000, 1.0, 48000), 48000, cfg)
    assert band_energy(wide, 4500, 8000) < 1e-4 * band_energy(wide, 500, 1500)
    full = condition_clip(tone(6000, 1.0, 48000), 48000, PreprocessConfig(bandwidth_hz=None))
    assert band_energy(full, 5500, 6500) > 0.5 * band_energy(full, 0, 8000)


def test_streaming_equals_whole_clip():
    rate = 44100
    x = np.random.default_rng(0).normal(0, 0.1, rate * 3).astype(np.float32)
    whole = condition_clip(x, rate, PreprocessConfig())
    conditioner = Conditioner(rate, PreprocessConfig())
    parts = [conditioner.process(x[i:i + 1000]) for i in range(0, x.size, 1000)] + [conditioner.flush()]
    streamed = np.concatenate(parts)
    assert streamed.size == whole.size
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_multichannel_is_downmixed_and_nan_becomes_silence():
    x = np.stack([tone(440, 1, 16000), -tone(440, 1, 16000), np.full(16000, np.nan, np.float32)], axis=1)
    out = condition_clip(x, 16000, PreprocessConfig(bandwidth_hz=None))
    assert np.all(np.isfinite(out))
    assert np.max(np.abs(out)) < 1e-3  # +tone and -tone cancel, NaN channel is silence
    assert np.array_equal(sanitize(np.array([np.inf, -np.inf, 2.0], np.float32)), np.array([0, 0, 1], np.float32))


def test_clean_audio_is_copied_unchanged_and_one_channel_is_itself():
    """The fast paths of the per-block conditioning: in-range finite audio comes back equal but as a new array (the
    microphone's buffer is reused by the driver), a NaN or out-of-range value still takes the sanitising path, and
    a one-channel block is its own mix."""
    block = np.linspace(-1.0, 1.0, 1600, dtype=np.float32)
    cleaned = sanitize(block)
    assert np.array_equal(cleaned, block) and not np.shares_memory(cleaned, block)
    for bad, expected in ((np.nan, 0.0), (1.5, 1.0), (-np.inf, 0.0)):
        broken = block.copy()
        broken[7] = bad
        assert sanitize(broken)[7] == expected
    column = block[:, None]
    assert np.array_equal(to_mono(column), block)
    assert np.array_equal(to_mono(np.stack([block, block], axis=1)), block)


def test_a_broken_channel_does_not_silence_the_others_nor_overflow_the_mix():
    """A stereo float file with a NaN / huge-valued right channel: the left channel's tone survives the mix,
    at half its level (the broken channel counts as silence), without overflow in the mean."""
    left = tone(440, 1, 16000)
    for broken in (np.full(16000, np.nan, np.float32), np.full(16000, np.finfo(np.float32).max, np.float32)):
        with np.errstate(all="raise"):
            out = condition_clip(np.stack([left, broken], axis=1), 16000, PreprocessConfig(bandwidth_hz=None))
        assert np.all(np.isfinite(out))
        if np.isnan(broken[0]):
            np.testing.assert_allclose(out, left / 2, atol=1e-3)
        else:
            np.testing.assert_allclose(out, (left + 1.0) / 2, atol=1e-3)


def test_loudness_normalisation_hits_target_and_caps_gain():
    loud = normalise_loudness(tone(440, 1, 16000, 0.5), -20.0, 30.0)
    assert abs(rms_dbfs(loud) - -20.0) < 0.1
    quiet = tone(440, 1, 16000, 1e-4)
    out = normalise_loudness(quiet, -20.0, 30.0)
    assert abs((rms_dbfs(out) - rms_dbfs(quiet)) - 30.0) < 0.1


def test_prepare_window_removes_dc():
    window = tone(440, WINDOW_SAMPLES / 16000, 16000, 0.1) + 0.3
    assert abs(float(np.mean(prepare_window(window, PreprocessConfig())))) < 1e-3


def test_windows_cover_the_clip_and_pad_short_ones():
    assert frame_starts(WINDOW_SAMPLES + 8000, 8000) == [0, 8000]
    assert frame_starts(WINDOW_SAMPLES + 9000, 8000) == [0, 8000, 9000]
    assert clip_windows(np.ones(1000, np.float32), 8000).shape == (1, WINDOW_SAMPLES)


def test_load_clip_reads_8k_flac_through_the_chain(tmp_path):
    path = tmp_path / "x.flac"
    sf.write(path, tone(300, 1.5, 8000), 8000, subtype="PCM_16")
    out = load_clip(path, PreprocessConfig())
    assert abs(out.size - 24000) <= 4


def test_unreadable_files_raise_one_clear_error(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("not audio at all")
    for name, words in (("empty.wav", "empty file"), ("text.wav", "not a readable audio file"),
                        ("missing.wav", "no such file")):
        with pytest.raises(AudioFileError) as info:
            load_clip(tmp_path / name, PreprocessConfig())
        assert name in str(info.value) and words in str(info.value)
        assert "\n" not in str(info.value)
