"""The shared signal helpers (monitor/signal_helpers.py) that the runtime, training and tools all use."""

from __future__ import annotations

import numpy as np
import pytest
import webrtcvad

from monitor.constants import SAMPLE_RATE, VAD_FRAME_SAMPLES, WINDOW_SAMPLES
from monitor.signal_helpers import (
    SILENCE_DBFS,
    amplitude_to_dbfs,
    one_line,
    pad_to_window,
    rms_dbfs,
    softmax,
    split_frames,
    to_pcm16,
    voiced_frames,
)


def test_softmax_is_a_stable_row_distribution():
    logits = np.array([[1000.0, 1000.0, 0.0], [0.0, 1.0, 2.0]])
    probs = softmax(logits)
    assert np.allclose(probs.sum(axis=1), 1.0) and probs[0, 0] == pytest.approx(0.5)
    assert np.allclose(softmax(logits, 2.0), softmax(logits / 2.0))


def test_levels_in_dbfs():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    sine = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    assert rms_dbfs(sine) == pytest.approx(-3.01, abs=0.01)
    assert rms_dbfs(np.zeros(10, np.float32)) == rms_dbfs(np.zeros(0, np.float32)) == SILENCE_DBFS
    assert amplitude_to_dbfs(0.5) == pytest.approx(-6.02, abs=0.01) and amplitude_to_dbfs(0.0) < -100


def test_pad_to_window_only_pads_short_input():
    short = np.ones(100, np.float32)
    padded = pad_to_window(short)
    assert padded.shape == (WINDOW_SAMPLES,) and padded[:100].sum() == 100 and not padded[100:].any()
    long = np.ones(WINDOW_SAMPLES + 1, np.float32)
    assert pad_to_window(long) is long


def test_vad_framing_drops_the_partial_frame_and_clips_to_16_bit():
    samples = np.full(3 * VAD_FRAME_SAMPLES + 7, 2.0, np.float32)
    frames = split_frames(samples)
    assert frames.shape == (3, VAD_FRAME_SAMPLES)
    assert to_pcm16(frames).dtype == np.dtype("<i2") and to_pcm16(frames).max() == 32767
    flags = voiced_frames(webrtcvad.Vad(3), split_frames(np.zeros(SAMPLE_RATE, np.float32)))
    assert flags.shape == (SAMPLE_RATE // VAD_FRAME_SAMPLES,) and not flags.any()


def test_one_line_collapses_whitespace_and_names_silent_exceptions():
    assert one_line(ValueError("bad\n  thing")) == "bad thing"
    assert one_line(KeyError()) == "KeyError"
    assert one_line(None) == "unknown error" and one_line("a\tb") == "a b"
