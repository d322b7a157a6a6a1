import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.constants import SAMPLE_RATE, WINDOW_SAMPLES
from monitor.windows import SlidingWindower, hop_samples_from_seconds

HOP = hop_samples_from_seconds(0.5)


def stream(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, int(seconds * SAMPLE_RATE)).astype(np.float32)


def push_in_chunks(windower: SlidingWindower, samples: np.ndarray, sizes: list[int]) -> list:
    windows, offset, turn = [], 0, 0
    while offset < samples.size:
        size = sizes[turn % len(sizes)]
        windows += windower.push(samples[offset:offset + size])
        offset += size
        turn += 1
    return windows


def test_hop_from_seconds():
    assert hop_samples_from_seconds(0.5) == 8000
    assert hop_samples_from_seconds(0.975) == WINDOW_SAMPLES
    with pytest.raises(ValueError, match="hop"):
        hop_samples_from_seconds(1.5)
    with pytest.raises(ValueError, match="hop"):
        hop_samples_from_seconds(0.0)


def test_windows_are_the_stream_slices_with_audio_clock_times():
    audio = stream(5.0)
    windows = SlidingWindower(HOP).push(audio)
    expected_count = (audio.size - WINDOW_SAMPLES) // HOP + 1
    assert len(windows) == expected_count
    for i, window in enumerate(windows):
        start = i * HOP
        assert window.index == i
        assert window.samples.dtype == np.float32 and window.samples.shape == (WINDOW_SAMPLES,)
        np.testing.assert_array_equal(window.samples, audio[start:start + WINDOW_SAMPLES])
        assert window.start_seconds == pytest.approx(start / SAMPLE_RATE)
        assert window.end_seconds == pytest.approx((start + WINDOW_SAMPLES) / SAMPLE_RATE)


def test_new_samples_are_what_arrived_since_the_previous_window():
    audio = stream(3.0)
    windows = SlidingWindower(HOP).push(audio)
    np.testing.assert_array_equal(windows[0].new_samples, audio[:WINDOW_SAMPLES])
    for window in windows[1:]:
        assert window.new_samples.size == HOP
        np.testing.assert_array_equal(window.new_samples, audio[window.end_sample - HOP:window.end_sample])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40_000), min_size=1, max_size=12))
def test_same_windows_whatever_the_chunking(sizes):
    audio = stream(4.2, seed=1)
    reference = SlidingWindower(HOP).push(audio)
    chunked = push_in_chunks(SlidingWindower(HOP), audio, sizes)
    assert [w.index for w in chunked] == [w.index for w in reference]
    for a, b in zip(chunked, reference):
        assert a.start_sample == b.start_sample
        np.testing.assert_array_equal(a.samples, b.samples)
        np.testing.assert_array_equal(a.new_samples, b.new_samples)


def test_buffer_stays_bounded_and_leftovers_are_carried():
    windower = SlidingWindower(HOP)
    total = 0
    for chunk in np.array_split(stream(60.0, seed=2), 97):
        windower.push(chunk)
        total += chunk.size
        assert 0 <= windower.buffered_samples <= WINDOW_SAMPLES
    assert windower._ring.size == WINDOW_SAMPLES
    assert windower.position_seconds == pytest.approx(total / SAMPLE_RATE)
    assert windower.push(np.zeros(0, np.float32)) == []


def test_windows_do_not_alias_the_ring_buffer():
    windower = SlidingWindower(HOP)
    first = windower.push(np.ones(WINDOW_SAMPLES, np.float32))[0]
    windower.push(np.full(3 * HOP, -1.0, np.float32))
    assert np.all(first.samples == 1.0)


def test_reset_forgets_audio_and_restarts_the_clock():
    windower = SlidingWindower(HOP)
    windower.push(stream(1.7))
    windower.reset(start_seconds=100.0)
    assert windower.buffered_samples == 0
    audio = stream(1.0, seed=3)
    window = windower.push(audio)[0]
    assert window.index == 0
    assert window.start_seconds == pytest.approx(100.0)
    np.testing.assert_array_equal(window.samples, audio[:WINDOW_SAMPLES])


def test_bad_input_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="1-D mono"):
        SlidingWindower(HOP).push(np.zeros((100, 2), np.float32))
    with pytest.raises(ValueError, match="hop_samples"):
        SlidingWindower(0)
