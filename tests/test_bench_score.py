"""The event scorer on hand-made event lists: hits, misses, duplicates, confusions, false alarms, latency."""

from __future__ import annotations

import numpy as np
import pytest

from bench.score import (
    CONFUSION,
    DUPLICATE,
    FALSE_ALARM,
    HIT,
    ROOM_TONE,
    DetectedEvent,
    ScoreSpec,
    TruthEvent,
    blame,
    score_events,
    union_seconds,
)

SPEC = ScoreSpec(tolerance_before_s=0.5, tolerance_after_s=3.0)
HOUR = 3600.0

TRUTHS = [
    TruthEvent("Crying", 100.0, 106.0, None, "cry-a"),
    TruthEvent("Crying", 200.0, 205.0, 10.0, "cry-b"),
    TruthEvent("Crying", 300.0, 304.0, 0.0, "cry-c"),
    TruthEvent("Screaming", 400.0, 401.5, None, "scream-a"),
    TruthEvent("Screaming", 500.0, 502.0, 10.0, "scream-b"),
]


def raised(label: str, at: float, length: float = 5.0) -> DetectedEvent:
    return DetectedEvent(label, start_s=at - 1.0, end_s=at + length, raised_s=at)


def kinds(score) -> list[str]:
    return [o.kind for o in score.outcomes]


def test_perfect_detection():
    events = [raised(t.label, t.onset_s + 1.2) for t in TRUTHS]
    score = score_events(TRUTHS, events, HOUR, SPEC)
    assert kinds(score) == [HIT] * len(TRUTHS)
    assert score.per_label["Crying"].recall == 1.0 and score.per_label["Screaming"].precision == 1.0
    assert score.false_alarms == 0
    assert score.to_dict()["latency_p50_s"] == pytest.approx(1.2)


def test_misses_lower_recall_per_label_and_per_snr():
    events = [raised("Crying", 101.0), raised("Screaming", 400.8)]
    score = score_events(TRUTHS, events, HOUR, SPEC)
    crying = score.per_label["Crying"]
    assert (crying.truths, crying.hits) == (3, 1)
    assert crying.recall == pytest.approx(1 / 3)
    assert crying.recall_by_snr() == {"clean": 1.0, "10dB": 0.0, "0dB": 0.0}
    assert score.recall("Crying", min_snr_db=10.0) == pytest.approx(0.5)
    assert score.recall("Screaming") == pytest.approx(0.5)
    assert score.truth_hit == [True, False, False, True, False]


def test_false_alarm_is_an_event_raised_outside_every_truth_window():
    events = [raised("Crying", 50.0), raised("Screaming", 250.0), raised("Crying", 101.0)]
    score = score_events(TRUTHS, events, HOUR, SPEC)
    assert kinds(score) == [FALSE_ALARM, HIT, FALSE_ALARM]
    assert score.false_alarms == 2
    covered = sum(t.offset_s - t.onset_s + SPEC.tolerance_before_s + SPEC.tolerance_after_s for t in TRUTHS)
    assert score.background_seconds == pytest.approx(HOUR - covered)
    assert score.false_alarms_per_hour == pytest.approx(2 / ((HOUR - covered) / HOUR))
    assert score.per_label["Crying"].precision == pytest.approx(0.5)


def test_tolerance_edges():
    truth = [TruthEvent("Crying", 100.0, 106.0, None)]
    inside = [raised("Crying", 99.6), raised("Crying", 108.9, 0.1)]
    outside = [raised("Crying", 99.4), raised("Crying", 109.1)]
    assert kinds(score_events(truth, inside[:1], HOUR, SPEC)) == [HIT]
    assert kinds(score_events(truth, inside[1:], HOUR, SPEC)) == [HIT]
    assert kinds(score_events(truth, outside, HOUR, SPEC)) == [FALSE_ALARM, FALSE_ALARM]
    early = score_events(truth, inside[:1], HOUR, SPEC)
    assert early.latencies_s == [pytest.approx(-0.4)]


def test_second_alert_on_one_cry_is_a_duplicate_not_a_false_alarm():
    events = [raised("Crying", 101.0, 2.0), raised("Crying", 105.0)]
    score = score_events(TRUTHS, events, HOUR, SPEC)
    assert kinds(score) == [HIT, DUPLICATE]
    assert score.false_alarms == 0
    assert score.per_label["Crying"].hits == 1
    assert score.per_label["Crying"].precision == pytest.approx(0.5)


def test_wrong_label_on_a_scream_is_a_confusion():
    events = [raised("Crying", 400.5)]
    score = score_events(TRUTHS, events, HOUR, SPEC)
    assert kinds(score) == [CONFUSION]
    assert score.false_alarms == 0
    assert score.per_label["Screaming"].hits == 0
    assert score.per_label["Crying"].confusions == 1
    assert score.truth_alerted == [False, False, False, True, False]
    assert score.alert_recall == pytest.approx(1 / 5)


def test_events_are_matched_in_the_order_they_were_raised():
    later_first = [raised("Crying", 103.0), raised("Crying", 101.0)]
    score = score_events(TRUTHS, later_first, HOUR, SPEC)
    hit = next(o for o in score.outcomes if o.kind == HIT)
    assert hit.event.raised_s == 101.0 and hit.latency_s == pytest.approx(1.0)


def test_latency_is_also_split_by_snr():
    events = [raised("Crying", 101.0), raised("Crying", 202.0), raised("Crying", 303.0)]
    per_snr = score_events(TRUTHS, events, HOUR, SPEC).to_dict()["per_label"]["Crying"]["latency_by_snr"]
    assert {key: value["latency_p50_s"] for key, value in per_snr.items()} == {
        "clean": pytest.approx(1.0), "10dB": pytest.approx(2.0), "0dB": pytest.approx(3.0)}


def test_latency_percentiles():
    delays = [0.5, 1.0, 1.5, 2.0, 4.0]
    events = [raised(t.label, t.onset_s + d) for t, d in zip(TRUTHS, delays, strict=True)]
    summary = score_events(TRUTHS, events, HOUR, SPEC).to_dict()
    assert summary["latency_p50_s"] == pytest.approx(1.5)
    assert summary["latency_p95_s"] == pytest.approx(2.0 + 0.8 * 2.0)


def test_no_events_no_latency_and_zero_recall():
    summary = score_events(TRUTHS, [], HOUR, SPEC).to_dict()
    assert summary["latency_p95_s"] is None
    assert summary["event_recall"] == {"Crying": 0.0, "Screaming": 0.0}
    assert summary["event_precision"] == {"Crying": None, "Screaming": None}


def test_union_of_overlapping_windows():
    assert union_seconds([(0, 10), (5, 15), (20, 30)], 100.0) == 25.0
    assert union_seconds([(-5, 5), (95, 120)], 100.0) == 10.0


def test_false_alarms_are_blamed_on_what_was_sounding_before_they_were_raised():
    spans = [(10.0, 20.0, "speech"), (19.0, 30.0, "laughter"), (40.0, 41.0, "door")]
    events = [raised("Crying", 21.0), raised("Crying", 29.5), raised("Crying", 60.0), raised("Crying", 41.5)]
    assert blame(events, spans, lookback_s=2.0) == ["laughter", "laughter", ROOM_TONE, "door"]
    assert blame(events[:1], [(10.0, 20.5, "speech"), (20.5, 21.0, "laughter")], 2.0) == ["speech"]


@pytest.mark.parametrize("seed", range(4))
def test_truth_windows_find_what_a_scan_finds(seed: int):
    from bench.score import truth_window, truth_windows

    rng = np.random.default_rng(seed)
    onsets = rng.uniform(0, 200, 40)
    truths = [TruthEvent("Crying", float(a), float(a + rng.uniform(0.5, 15)), None) for a in onsets]
    spec = ScoreSpec()
    windows = truth_windows(truths, spec)
    for time_s in rng.uniform(-5, 220, 300):
        expected = sorted((i for i, t in enumerate(truths)
                           if truth_window(t, spec)[0] <= time_s <= truth_window(t, spec)[1]),
                          key=lambda i: truths[i].onset_s)
        assert windows.overlapping(float(time_s), float(time_s)) == expected
