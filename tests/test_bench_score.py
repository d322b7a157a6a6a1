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
    hours_to_show,
    poisson_cdf,
    poisson_interval,
    proportion_interval,
    rate_interval,
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


# --- how far the counts can be trusted ---------------------------------------------------------------

@pytest.mark.parametrize(("count", "low", "high"), [(0, 0.0, 3.6889), (1, 0.0253, 5.5716), (5, 1.6235, 11.6683),
                                                    (10, 4.7954, 18.3904)])
def test_poisson_interval_matches_the_exact_tables(count: int, low: float, high: float):
    assert poisson_interval(count) == pytest.approx((low, high), abs=1e-4)


def test_poisson_interval_covers_the_true_mean_at_least_as_often_as_it_says():
    rng = np.random.default_rng(3)
    for mean in (0.5, 3.0, 12.0):
        counts = rng.poisson(mean, size=2000)
        covered = [low <= mean <= high for low, high in map(poisson_interval, counts.tolist())]
        assert np.mean(covered) >= 0.95


def test_poisson_cdf_sums_to_one_and_falls_with_the_mean():
    assert poisson_cdf(200, 20.0) == pytest.approx(1.0)
    assert poisson_cdf(3, 2.0) > poisson_cdf(3, 4.0) > poisson_cdf(3, 8.0)
    assert poisson_cdf(-1, 2.0) == 0.0 and poisson_cdf(0, 0.0) == 1.0


def test_rate_interval_is_per_hour_of_stream_and_needs_hours():
    low, high = rate_interval(5, 12.0)
    assert (low, high) == pytest.approx(tuple(bound / 12.0 for bound in poisson_interval(5)))
    assert low < 5 / 12.0 < high
    assert rate_interval(3, 0.0) is None


def test_a_rate_bar_needs_hours_of_silence_to_be_shown():
    hours = hours_to_show(0.1)
    assert hours == pytest.approx(36.89, abs=0.01)
    assert rate_interval(0, hours)[1] == pytest.approx(0.1)
    assert rate_interval(0, 12.0)[1] > 0.1  # the 12 h negative stream meets 0.1 per hour by count, never shows it
    with pytest.raises(ValueError):
        hours_to_show(0.0)


def test_proportion_interval_is_wilsons():
    assert proportion_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert proportion_interval(0, 10)[0] == 0.0 and proportion_interval(10, 10)[1] == 1.0
    assert proportion_interval(0, 0) is None
    with pytest.raises(ValueError):
        proportion_interval(11, 10)


def test_score_reports_intervals_around_its_rate_and_recalls():
    events = [raised("Crying", 101.0), raised("Crying", 201.0), raised("Crying", 900.0), raised("Crying", 1900.0)]
    score = score_events(TRUTHS, events, HOUR, SPEC)
    assert score.recall_counts("Crying", 10.0) == (2, 2)
    assert score.recall_counts("Crying") == (2, 3)
    assert score.recall_interval("Crying") == proportion_interval(2, 3)
    hours = score.background_seconds / HOUR
    low, high = score.false_alarms_per_hour_interval
    assert (low, high) == pytest.approx(tuple(b / hours for b in poisson_interval(2)), abs=1e-4)
