"""The threshold sweep: re-running fusion + tracker over recorded windows, and picking a setting on the curve."""

from __future__ import annotations

import numpy as np
import pytest

from bench.replay import VOTER_ROWS, EventLog
from bench.tradeoff import SweepPoint, pareto_frontier, recommend, replay_tracker
from monitor.config import FusionConfig
from monitor.constants import LABELS

HOP_S = 0.5
FA_BAR = 0.05


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
    return SweepPoint(enter, 2, 3, fa, {"Crying": cry, "Screaming": scream}, {"Crying": cry, "Screaming": scream},
                      latency)


def test_recommend_takes_the_most_recall_within_the_false_alarm_bar():
    points = [point(0.0, 0.90, 0.90, 0.9), point(0.04, 0.97, 0.95, 0.7), point(0.5, 1.0, 1.0, 0.5)]
    chosen, reason = recommend(points, FA_BAR, baseline_fa_per_hour=2.0)
    assert chosen.enter_threshold == 0.7
    assert "at most" in reason


def test_recommend_never_exceeds_the_baselines_rate():
    points = [point(0.0, 0.80, 0.80, 0.9), point(0.04, 0.97, 0.95, 0.7)]
    chosen, _ = recommend(points, FA_BAR, baseline_fa_per_hour=0.0)
    assert chosen.enter_threshold == 0.9


def test_recommend_falls_back_to_the_fewest_alarms():
    points = [point(0.6, 1.0, 1.0, 0.5), point(0.3, 0.9, 0.9, 0.8)]
    chosen, reason = recommend(points, FA_BAR, baseline_fa_per_hour=None)
    assert chosen.enter_threshold == 0.8
    assert "no setting" in reason


def test_pareto_frontier_drops_dominated_settings():
    best, dominated, other = point(0.0, 1.0, 1.0, 0.9), point(0.5, 0.9, 0.9, 0.5), point(0.0, 0.8, 0.8, 0.95)
    assert pareto_frontier([best, dominated, other]) == [best]
