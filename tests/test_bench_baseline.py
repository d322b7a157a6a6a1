"""The Frigate-style baseline: RMS floor, per-label threshold, events merged until 30 s unheard."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from bench.baseline import (
    BaselineSpec,
    FrigateStyleTracker,
    chunk_rms_int16,
    heard_labels,
    iter_pcm16_chunks,
    run_baseline,
)
from monitor.constants import SAMPLE_RATE, WINDOW_SAMPLES, WINDOW_SECONDS, YAMNET_AUDIOSET_CLASSES

SPEC = BaselineSpec()


def scores(**rows: float) -> np.ndarray:
    out = np.zeros(YAMNET_AUDIOSET_CLASSES, np.float32)
    for row, value in rows.items():
        out[int(row.removeprefix("r"))] = value
    return out


def test_labels_heard_above_the_threshold_on_any_of_their_rows():
    assert heard_labels(scores(r20=0.6), SPEC) == ["Crying"]
    assert heard_labels(scores(r19=0.7, r11=0.9), SPEC) == ["Crying", "Screaming"]
    assert heard_labels(scores(r20=0.5, r11=0.5), SPEC) == []


def test_rms_floor_is_frigates_min_volume():
    assert SPEC.min_volume_dbfs == pytest.approx(-36.3, abs=0.1)
    assert chunk_rms_int16(np.full(WINDOW_SAMPLES, 500, np.int16)) == pytest.approx(500.0)
    assert chunk_rms_int16(np.zeros(0, np.int16)) == 0.0


def test_tracker_merges_until_not_heard_for_the_limit():
    tracker = FrigateStyleTracker(SPEC)
    ended = []
    heard_at = {0, 1, 2, 20, 60}  # chunk 20 is ~17 s after chunk 2: same event; chunk 60 is ~39 s after 20: new
    for index in range(120):
        start = index * WINDOW_SECONDS
        ended += tracker.update(start, start + WINDOW_SECONDS, ["Crying"] if index in heard_at else [])
    ended += tracker.finish()
    assert [e.label for e in ended] == ["Crying", "Crying"]
    first, second = ended
    assert first.start_s == 0.0 and first.raised_s == pytest.approx(WINDOW_SECONDS)
    assert first.end_s == pytest.approx(21 * WINDOW_SECONDS)
    assert second.raised_s == pytest.approx(61 * WINDOW_SECONDS)


def test_labels_have_independent_events():
    tracker = FrigateStyleTracker(SPEC)
    tracker.update(0.0, WINDOW_SECONDS, ["Crying", "Screaming"])
    tracker.update(WINDOW_SECONDS, 2 * WINDOW_SECONDS, ["Crying"])
    events = sorted(tracker.finish(), key=lambda e: e.label)
    assert [(e.label, e.end_s) for e in events] == [("Crying", pytest.approx(2 * WINDOW_SECONDS)),
                                                     ("Screaming", pytest.approx(WINDOW_SECONDS))]


def test_quiet_chunks_never_reach_the_model():
    calls = []

    def model(waveform: np.ndarray) -> np.ndarray:
        calls.append(float(np.max(np.abs(waveform))))
        return scores(r20=0.9)[None]

    loud = np.full(WINDOW_SAMPLES, 2000, np.int16)
    quiet = np.full(WINDOW_SAMPLES, 100, np.int16)
    run = run_baseline([quiet, loud, quiet, loud], model, SPEC)
    assert (run.windows, run.gated_windows, len(calls)) == (4, 2, 2)
    assert calls == [pytest.approx(2000 / 32768)] * 2
    assert len(run.events) == 1 and run.events[0].raised_s == pytest.approx(2 * WINDOW_SECONDS)


def test_chunks_of_a_file(tmp_path):
    path = tmp_path / "s.flac"
    sf.write(str(path), np.zeros(WINDOW_SAMPLES * 3 + 100, np.float32), SAMPLE_RATE, subtype="PCM_16")
    chunks = list(iter_pcm16_chunks(path))
    assert len(chunks) == 3 and all(c.dtype == np.int16 and c.size == WINDOW_SAMPLES for c in chunks)
    other = tmp_path / "8k.flac"
    sf.write(str(other), np.zeros(8000, np.float32), 8000, subtype="PCM_16")
    with pytest.raises(ValueError, match="16 kHz"):
        list(iter_pcm16_chunks(other))
