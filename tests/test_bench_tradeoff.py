"""The threshold sweep: re-running fusion + tracker over recorded windows, and picking a setting on the curve."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bench.replay import STREAM_EPOCH, EventLog
from bench.score import TruthEvent
from bench.tradeoff import (
    YAMNET_ALONE,
    LabelResult,
    Setting,
    SweepPoint,
    Targets,
    concat_records,
    decision_ceiling,
    det_curves,
    fuse_record,
    pareto_frontier,
    recommend,
    replay_tracker,
    sustained_that_matter,
)
from monitor.config import FusionConfig
from monitor.constants import LABELS, YAMNET_VETO_CLASSES
from monitor.fusion import AUDIOSET_ROWS

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
            "audioset": np.zeros((windows, len(AUDIOSET_ROWS)), np.float32)}


def fusion(**changes) -> FusionConfig:
    base = {"require_vote": False, "enter_threshold": 0.6, "exit_threshold": 0.4, "k_windows": 2, "n_windows": 3,
            "hold_seconds": 3.0, "cooldown_seconds": 5.0}
    return FusionConfig(**{**base, **changes}).resolve()


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
    return SweepPoint(Setting(YAMNET_ALONE, True, enter, 2, 3), fa, recall, recall, latency)


def test_the_ceiling_takes_each_bar_alone_and_says_when_no_setting_reaches_it():
    points = [point(0.0, 0.70, 0.96, latency=4.0),  # quiet, misses cries
              point(0.04, 0.80, 0.50, latency=3.0),  # quiet, the best for cries
              point(2.0, 0.99, 0.90, latency=1.2),  # loud and fast, short of the scream bar
              point(9.0, 0.99, 0.97, latency=2.5)]  # meets both recall bars, at 9 per hour
    ceiling = decision_ceiling(points, TARGETS)
    assert ceiling == {"settings": 4,
                       "best_recall_10db_up_within_false_alarm_bar": {"Crying": 0.80, "Screaming": 0.96},
                       "fewest_false_alarms_per_hour_meeting_recall_bars": 9.0,
                       "fastest_latency_p95_s": 1.2, "fastest_latency_p95_s_within_false_alarm_bar": 3.0}
    assert recommend(points, TARGETS, None)[0] is points[0], (
        "the default still weighs both labels together; the ceiling's 0.80 for cries is another setting's")
    none_meets = decision_ceiling(points[:3], TARGETS)
    assert none_meets["fewest_false_alarms_per_hour_meeting_recall_bars"] is None
    assert decision_ceiling([], TARGETS)["best_recall_10db_up_within_false_alarm_bar"] == {"Crying": None,
                                                                                            "Screaming": None}


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


def _replay_every_window(record: dict[str, np.ndarray], cfg: FusionConfig, seconds: float):
    """The reference: the live smoother, fusion and the tracker on every window, nothing skipped."""
    from monitor.events import EventTracker
    from monitor.fusion import fuse_window
    from monitor.smoothing import ProbabilitySmoother

    tracker, log = EventTracker(cfg, "dev", {"yamnet": "test"}, STREAM_EPOCH), EventLog()
    smoother = ProbabilitySmoother(cfg.smooth_windows)
    audioset = np.zeros(521, np.float32)
    for i, end in enumerate(record["end_s"].tolist()):
        fused, probs = None, {}
        if record["passed"][i]:
            audioset[list(AUDIOSET_ROWS)] = record["audioset"][i]
            probs = {"yamnet": record["yamnet"][i]}
            if not np.isnan(record["wav2vec2"][i, 0]):
                probs["wav2vec2"] = record["wav2vec2"][i]
            smoothed = smoother.push(probs)
            fused = fuse_window(smoothed["yamnet"], smoothed.get("wav2vec2"), audioset, cfg)
        else:
            smoother.push(None)
        for event in tracker.update(end, fused, float(record["level_dbfs"][i]), probs):
            log.record(end, event.to_payload())
    for event in tracker.finish(seconds):
        log.record(seconds, event.to_payload())
    return log.finish(seconds)


def random_record(rng: np.random.Generator, windows: int) -> dict[str, np.ndarray]:
    """Mostly quiet windows with bursts of cry and scream scores, gate gaps and missing Wav2Vec2 rows."""
    starts = rng.random(windows) < 0.03
    bursts = np.convolve(starts, np.ones(6), mode="same") > 0

    def probs() -> np.ndarray:
        raw = rng.dirichlet([0.3, 0.3, 3.0], windows)
        raw[bursts] = rng.dirichlet([3.0, 1.0, 0.5], int(bursts.sum()))
        return raw.astype(np.float32)

    wav2vec2 = probs()
    wav2vec2[rng.random(windows) < 0.3] = np.nan
    audioset = rng.random((windows, len(AUDIOSET_ROWS))).astype(np.float32) * 0.4
    vetoing = [AUDIOSET_ROWS.index(row) for rows in YAMNET_VETO_CLASSES.values() for row in rows]
    audioset[:, vetoing] *= 0.5 + rng.random((windows, 1))
    return {"end_s": 0.975 + HOP_S * np.arange(windows), "level_dbfs": np.full(windows, -30.0, np.float32),
            "passed": rng.random(windows) < 0.8, "yamnet": probs(), "wav2vec2": wav2vec2, "audioset": audioset}


@pytest.mark.parametrize("seed", range(6))
def test_sweep_replay_gives_the_live_events(seed: int):
    """Batch smoothing + skipping idle windows (the sweep) against the live smoother and tracker on every
    window, over gate gaps and windows the cascade left without Wav2Vec2."""
    rng = np.random.default_rng(seed)
    record = random_record(rng, 600)
    seconds = float(record["end_s"][-1]) + 1.0
    for weight, vote, enter, (k, n), smooth, alert_on in [
            (1.0, False, 0.5, (1, 1), 1, "label"), (0.7, True, 0.6, (2, 3), 1, "label"),
            (0.5, False, 0.4, (3, 5), 1, "label"), (0.0, True, 0.55, (2, 2), 1, "label"),
            (1.0, False, 0.5, (1, 1), 2, "label"), (0.7, False, 0.45, (2, 3), 3, "label"),
            (0.7, True, 0.6, (2, 3), 1, "sum"), (0.5, False, 0.5, (1, 1), 2, "sum")]:
        cfg = Setting(weight, vote, enter, k, n, smooth_windows=smooth, alert_on=alert_on).fusion(
            fusion(hold_seconds=2.0, cooldown_seconds=3.0))
        expected = _replay_every_window(record, cfg, seconds)
        assert replay_tracker(record, cfg, {"yamnet": "test"}, "dev", seconds) == expected
        assert expected, "the random record should raise events under every setting"
        assert (fuse_record(record, cfg).vetoed_by >= 0).any(), "and AudioSet should veto some alerts"


@pytest.mark.parametrize("seed", range(3))
def test_sweep_replay_gives_the_live_sustained_cry_events(seed: int):
    """The sustained-cry path (windows that alert for no label, counted over a span) replayed as live, skipping idle
    windows that count for nothing; with enter thresholds out of reach it raises every event."""
    rng = np.random.default_rng(seed)
    record = random_record(rng, 600)
    seconds = float(record["end_s"][-1]) + 1.0
    for smooth, alert_on in [(1, "label"), (2, "sum")]:
        cfg = Setting(0.7, False, 0.99, 2, 2, smooth_windows=smooth, alert_on=alert_on).fusion(fusion(
            hold_seconds=2.0, cooldown_seconds=3.0, sustained_seconds=4.0, sustained_windows=5,
            sustained_threshold=0.45))
        expected = _replay_every_window(record, cfg, seconds)
        assert expected, "the random record's bursts should last long enough"
        assert replay_tracker(record, cfg, {"yamnet": "test"}, "dev", seconds) == expected
        assert _replay_every_window(record, dataclasses.replace(cfg, sustained_seconds=0.0), seconds) != expected


def test_only_counted_windows_near_a_possible_sustained_start_are_replayed():
    """3 counted windows in 2 s start a sustained cry: a lone counted window far from the rest never matters; the
    two before a full span and the full span's do; nothing without the path."""
    cfg = fusion(sustained_seconds=2.0, sustained_windows=3)
    end_s = 0.975 + HOP_S * np.arange(20)
    counted = np.zeros(20, bool)
    counted[[1, 10, 11, 12, 16]] = True
    assert np.flatnonzero(sustained_that_matter(end_s, counted, cfg)).tolist() == [10, 11, 12]
    counted[13] = True
    assert np.flatnonzero(sustained_that_matter(end_s, counted, cfg)).tolist() == [10, 11, 12, 13]
    assert not sustained_that_matter(end_s, counted, dataclasses.replace(cfg, sustained_seconds=0.0)).any()


def test_concatenated_records_keep_their_events_apart():
    first, second = record_with_cry(200, range(40, 50)), record_with_cry(100, range(10, 20))
    truth = [TruthEvent("Crying", 20.0, 25.0, None)]
    joined, truths, seconds = concat_records([(first, truth, 101.0), (second, truth, 51.0)], gap_s=60.0)
    events = replay_tracker(joined, fusion(), {"yamnet": "test"}, "dev", seconds)
    assert seconds == pytest.approx(101.0 + 60.0 + 51.0)
    assert [t.onset_s for t in truths] == [20.0, 20.0 + 161.0]
    assert [round(e.raised_s - (161.0 if e.raised_s > 101 else 0.0), 3) for e in events] == [
        round(float(first["end_s"][41]), 3), round(float(second["end_s"][11]), 3)]


def test_det_curves_hold_one_frontier_per_fusion_family():
    yamnet = [SweepPoint(Setting(1.0, False, t, 2, 3), fa, {"Crying": r, "Screaming": r}, {}, 1.0)
              for t, fa, r in ((0.5, 2.0, 1.0), (0.7, 0.5, 0.8), (0.9, 0.0, 0.5), (0.8, 0.6, 0.7))]
    average = [SweepPoint(Setting(0.7, True, 0.6, 2, 3), 0.1, {"Crying": 0.9, "Screaming": 0.9}, {}, 1.0)]
    curves = det_curves(yamnet + average)
    assert set(curves) == {"YAMNet alone", "average 0.7/0.3 + vote"}
    assert [p.setting.enter_threshold for p in curves["YAMNet alone"]] == [0.9, 0.7, 0.5]


def test_parallel_sweep_gives_the_serial_points():
    from bench.score import ScoreSpec
    from bench.tradeoff import sweep

    record = random_record(np.random.default_rng(9), 400)
    seconds = float(record["end_s"][-1]) + 1.0
    truths = [TruthEvent("Crying", 30.0, 40.0, None), TruthEvent("Screaming", 120.0, 125.0, 10.0)]
    settings = [Setting(w, v, t, k, n) for w in (1.0, 0.7) for v in (True, False) for t in (0.4, 0.6)
                for k, n in ((1, 1), (2, 3))]
    live = fusion()
    serial = sweep(record, live, {"yamnet": "t"}, "dev", truths, seconds, ScoreSpec(), False, settings, workers=1)
    parallel = sweep(record, live, {"yamnet": "t"}, "dev", truths, seconds, ScoreSpec(), False, settings, workers=2)
    assert sorted(serial, key=lambda p: p.setting) == sorted(parallel, key=lambda p: p.setting)
    replayed = [p for p in serial if not p.setting.split]
    assert len(replayed) == len(settings) and any(p.false_alarms_per_hour > 0 for p in serial)
    assert len(serial) - len(replayed) == len(settings), "each setting's other threshold, for screams"


def truths_over_bursts(record: dict[str, np.ndarray]) -> list[TruthEvent]:
    """A cry or a scream (alternately, clean or at 10 dB) over each run of windows where YAMNet leans to an
    alert label, so hits, misses and false alarms all occur."""
    leaning = record["yamnet"][:, 2] < 0.5
    edges = np.flatnonzero(np.diff(np.concatenate([[0], leaning.astype(int), [0]])))
    truths = []
    for i, (start, stop) in enumerate(zip(edges[::2], edges[1::2], strict=True)):
        if i % 3 != 2:  # every third burst stays unlabelled: its events are false alarms
            truths.append(TruthEvent(("Crying", "Screaming")[i % 2], float(record["end_s"][start]) - 0.975,
                                     float(record["end_s"][stop - 1]), None if i % 4 < 2 else 10.0))
    return truths


@pytest.mark.parametrize("seed", range(3))
def test_threshold_pairs_equal_replaying_the_pair(seed: int):
    """A setting with a threshold of its own for screams, combined from the single-threshold runs, is the same
    result as replaying fusion and the tracker with that pair of thresholds."""
    from bench.score import ScoreSpec
    from bench.tradeoff import sweep, threshold_pairs

    record = random_record(np.random.default_rng(seed), 800)
    seconds = float(record["end_s"][-1]) + 1.0
    truths = truths_over_bursts(record)
    live = fusion(hold_seconds=2.0, cooldown_seconds=3.0)
    single = [Setting(w, v, t, k, n, smooth_windows=m, alert_on=a) for w, v in ((1.0, False), (0.7, True))
              for t in (0.4, 0.5, 0.65) for k, n in ((1, 1), (2, 3)) for m in (1, 2) for a in ("label", "sum")]
    pairs = [dataclasses.replace(s, enter_threshold_screaming=t) for s in single for t in (0.4, 0.5, 0.65)
             if t != s.enter_threshold]
    replayed = sweep(record, live, {"yamnet": "t"}, "dev", truths, seconds, ScoreSpec(), False, single + pairs)
    direct = {p.setting: p for p in replayed if p.setting.split}
    combined = {p.setting: p for p in threshold_pairs([p for p in replayed if not p.setting.split], live)}
    assert combined.keys() == direct.keys() == set(pairs)
    fields = ("false_alarms_per_hour", "recall_10db_up", "recall", "latency_p95_s")
    for setting, point in direct.items():
        assert [getattr(combined[setting], f) for f in fields] == [getattr(point, f) for f in fields], setting
    singles = {p.setting: p for p in replayed if not p.setting.split}
    assert any(point.recall_10db_up != singles[dataclasses.replace(setting, enter_threshold_screaming=None)]
               .recall_10db_up and point.false_alarms_per_hour > 0 for setting, point in direct.items()), (
        "the record should make some pairs differ from the single threshold they share with crying")


def test_threshold_pairs_leave_out_thresholds_under_the_exit_and_shared_episodes():
    from bench.tradeoff import threshold_pairs

    def result(t: float) -> SweepPoint:
        label = LabelResult(1, 0.5, 0.5, (1.0,))
        return SweepPoint(Setting(1.0, False, t, 2, 3), 2.0, {}, {}, 1.0, by_label={"Crying": label,
                                                                                  "Screaming": label},
                          background_hours=1.0)

    points = [result(t) for t in (0.3, 0.5, 0.7)]
    pairs = threshold_pairs(points, fusion(exit_threshold=0.4))
    assert sorted((p.setting.enter_threshold, p.setting.enter_threshold_screaming) for p in pairs) == [
        (0.5, 0.7), (0.7, 0.5)]
    assert all(p.false_alarms_per_hour == 2.0 and p.latency_p95_s == 1.0 for p in pairs)
    assert threshold_pairs(points, fusion(one_episode_at_a_time=True)) == []


def test_split_setting_fuses_screams_at_their_own_threshold():
    record = record_with_cry(40, range(5, 15))
    record["yamnet"][20:30] = np.array([0.1, 0.55, 0.35], np.float32)
    both = Setting(1.0, False, 0.6, 2, 3).fusion(fusion())
    own = Setting(1.0, False, 0.6, 2, 3, enter_threshold_screaming=0.5).fusion(fusion())
    def labels(cfg: FusionConfig) -> list[str]:
        return [e.label for e in replay_tracker(record, cfg, {"yamnet": "t"}, "dev", 21.0)]

    assert labels(both) == ["Crying"]
    assert labels(own) == ["Crying", "Screaming"]


def test_recall_by_variant_grows_with_the_grid():
    from bench.tradeoff import DECISION_VARIANTS, recall_by_variant

    def at(fa: float, worst: float, **setting) -> SweepPoint:
        return SweepPoint(Setting(1.0, False, 0.6, 2, 3, **setting), fa, {"Crying": worst, "Screaming": 0.9}, {}, 1.0)

    points = [at(0.0, 0.3), at(0.4, 0.5, enter_threshold_screaming=0.7), at(0.8, 0.6, alert_on="sum"),
              at(3.0, 0.9, alert_on="sum", enter_threshold_screaming=0.5)]
    table = recall_by_variant(points)
    assert list(table) == list(DECISION_VARIANTS)
    assert [row["0.5"] for row in table.values()] == [0.3, 0.5, 0.3, 0.5]
    assert [row["1"] for row in table.values()] == [0.3, 0.5, 0.6, 0.6]
    assert table["all"]["5"] == 0.9 and table["by label, one threshold"]["10"] == 0.3
