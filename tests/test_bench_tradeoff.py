"""The threshold sweep: re-running fusion + tracker over recorded windows, and picking a setting on the curve."""

from __future__ import annotations

import numpy as np
import pytest

from bench.replay import VOTER_ROWS, EventLog
from bench.tradeoff import YAMNET_ONLY, Setting, SweepPoint, Targets, pareto_frontier, recommend, replay_tracker
from monitor.config import FusionConfig
from monitor.constants import LABELS

HOP_S = 0.5
TARGETS = Targets(false_alarms_per_hour=0.05, recall_10db_up={"Crying": 0.98, "Screaming": 0.95}, latency_p95_s=1.5)


def record_with_cry(windows: int, cry_windows: range, cry_prob: float = 0.9) -> dict[str, np.ndarray]:
    """Every window passed the gate; YAMNet says Crying with ``cry_prob`` in ``cry_windows``, else Normal."""
    normal = np.array([0.05, 0.05, 0.9], np.float32)
    cry = np.array([cry_prob, 0.0, 1.0 - cry_prob], np.float32)
    yamnet = np.stack([cry if i in cry_windows else normal for i in range(windows)])
    return {"end_s": 0.975 + HOP_S * np.arange(windows), "level_dbfs": np.full(windows, -30.0, np.float32),
            "passed": np.ones(windows, bool), "yamnet": yamnet,
            "wav2vec2": np.full((windows, len(LABELS)), np.nan, np.float32),
            "voters": np.zeros((windows, len(VOTER_ROWS)), np.float32)}


def fusion(**changes) -> FusionConfig:
    base = {"require_vote": False, "enter_threshold": 0.6, "exit_threshold": 0.4, "k_windows": 2, "n_windows": 3,
            "hold_seconds": 3.0, "cooldown_seconds": 5.0}
    return FusionConfig(**{**base, **changes})


def test_replayed_tracker_raises_at_the_kth_alerting_window():
    record = record_with_cry(200, range(40, 50))
    events = replay_tracker(record, fusion(), {"yamnet": "test"}, "dev", stream_seconds=101.0)
    assert [e.label for e in events] == ["Crying"]
    assert events[0].raised_s == pytest.approx(record["end_s"][41])
    assert events[0].start_s == pytest.approx(record["end_s"][40] - 0.975)


def test_threshold_above_the_scores_raises_nothing():
    record = record_with_cry(200, range(40, 50), cry_prob=0.7)
    assert replay_tracker(record, fusion(enter_threshold=0.8), {"yamnet": "test"}, "dev", 101.0) == []
    assert len(replay_tracker(record, fusion(enter_threshold=0.65), {"yamnet": "test"}, "dev", 101.0)) == 1


def test_event_log_stamps_messages_with_the_window_that_sent_them():
    log = EventLog()
    log.handle_event({"event_id": "a", "phase": "start", "label": "Crying", "start_audio_s": 9.0})
    log.stamp(10.0)
    log.handle_event({"event_id": "a", "phase": "end", "label": "Crying", "end_audio_s": 14.0})
    events = log.finish(17.0)
    assert [(e.start_s, e.raised_s, e.end_s) for e in events] == [(9.0, 10.0, 14.0)]


def point(fa: float, cry: float, scream: float, enter: float = 0.6, latency: float = 1.0) -> SweepPoint:
    recall = {"Crying": cry, "Screaming": scream}
    return SweepPoint(Setting(YAMNET_ONLY, True, enter, 2, 3), fa, recall, recall, latency)


def test_recommend_prefers_a_setting_that_meets_every_bar():
    meets = point(0.0, 0.99, 0.96, enter=0.8)
    too_slow = point(0.04, 1.0, 1.0, enter=0.7, latency=2.0)
    noisy = point(0.5, 1.0, 1.0, enter=0.5)
    chosen, reason = recommend([too_slow, meets, noisy], TARGETS, baseline_fa_per_hour=2.0)
    assert chosen is meets
    assert "every event bar" in reason


def test_recommend_puts_false_alarms_first_when_no_setting_meets_every_bar():
    points = [point(0.0, 0.90, 0.90, enter=0.9), point(0.04, 0.97, 0.95, enter=0.7), point(0.5, 1.0, 1.0, enter=0.5)]
    chosen, reason = recommend(points, TARGETS, baseline_fa_per_hour=2.0)
    assert chosen.setting.enter_threshold == 0.7
    assert "false alarms come first" in reason


def test_recommend_never_picks_a_setting_deaf_to_one_label():
    deaf_to_crying = point(0.0, 0.0, 0.95, enter=0.95)
    balanced = point(0.04, 0.6, 0.6, enter=0.8)
    chosen, _ = recommend([deaf_to_crying, balanced], TARGETS, baseline_fa_per_hour=1.0)
    assert chosen is balanced


def test_recommend_never_exceeds_the_baselines_rate():
    points = [point(0.0, 0.80, 0.80, enter=0.9), point(0.04, 0.97, 0.95, enter=0.7)]
    chosen, _ = recommend(points, TARGETS, baseline_fa_per_hour=0.0)
    assert chosen.setting.enter_threshold == 0.9


def test_recommend_without_a_quiet_setting_stays_at_or_below_the_baseline():
    points = [point(0.6, 1.0, 1.0, enter=0.5), point(0.3, 0.9, 0.9, enter=0.8)]
    chosen, reason = recommend(points, TARGETS, baseline_fa_per_hour=0.4)
    assert chosen.setting.enter_threshold == 0.8
    assert "baseline" in reason


def test_recommend_falls_back_to_the_fewest_alarms():
    points = [point(0.6, 0.0, 0.0, enter=0.5), point(0.3, 0.0, 0.0, enter=0.8)]
    chosen, _ = recommend(points, TARGETS, baseline_fa_per_hour=0.1)
    assert chosen.setting.enter_threshold == 0.8


def test_pareto_frontier_drops_dominated_and_repeated_results():
    best = point(0.0, 1.0, 1.0, enter=0.9)
    same_result = point(0.0, 1.0, 1.0, enter=0.8)
    dominated = point(0.5, 0.9, 0.9, enter=0.5)
    other = point(0.0, 0.8, 0.8, enter=0.95)
    assert pareto_frontier([same_result, best, dominated, other]) == [best]
