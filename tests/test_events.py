import dataclasses
import itertools
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from monitor.config import FusionConfig
from monitor.constants import LABELS, WINDOW_SECONDS
from monitor.events import PHASE_END, PHASE_START, PHASE_UPDATE, EventTracker
from monitor.fusion import fuse_window

CRY, SCREAM, NORMAL = LABELS
CFG = FusionConfig().resolve()
HOP_S = 0.5
WALL = datetime(2026, 11, 25, 10, 0, 0, tzinfo=timezone.utc)
VERSIONS = {"yamnet": "yamnet-0123abcd", "wav2vec2": "wav2vec2-4567ef01"}

HIT = (0.8, 0.05)
"""Crying well above enter_threshold: an alerting window."""
SUSTAIN = (0.5, 0.05)
"""Crying between exit_threshold and enter_threshold: keeps an open event alive, does not alert."""
MISS = (0.1, 0.05)
SKIPPED = None
"""The gate skipped the window: the models did not run."""


def end_time(index: int) -> float:
    return WINDOW_SECONDS + HOP_S * index


def counter_ids():
    numbers = itertools.count(1)
    return lambda: f"ev{next(numbers)}"


def tracker(cfg: FusionConfig = CFG) -> EventTracker:
    return EventTracker(cfg, "nursery", VERSIONS, WALL, id_factory=counter_ids())


def probs(crying: float, screaming: float) -> np.ndarray:
    return np.array([crying, screaming, 1.0 - crying - screaming])


def feed(events_tracker: EventTracker, windows, start_index: int = 0, level_dbfs: float = -30.0):
    """Feed (crying, screaming) pairs or None; returns [(window index, event)]."""
    out = []
    for offset, scores in enumerate(windows):
        index = start_index + offset
        if scores is None:
            fused, model_probs = None, {}
        else:
            p = probs(*scores)
            fused = fuse_window(p, p, None, events_tracker.cfg)
            model_probs = {"yamnet": p, "wav2vec2": p}
        out += [(index, e) for e in events_tracker.update(end_time(index), fused, level_dbfs, model_probs)]
    return out


def phases(events) -> list[str]:
    return [e.phase for _, e in events]


def test_a_single_alerting_window_makes_no_event():
    t = tracker()
    assert feed(t, [MISS] * 4 + [HIT] + [MISS] * 40) == []
    assert t.finish(end_time(60)) == []


def test_k_of_n_starts_an_event_and_sustained_windows_count_as_slots():
    events = feed(tracker(), [MISS, HIT, SUSTAIN, HIT])
    assert [(i, e.phase) for i, e in events] == [(3, PHASE_START)]
    start = events[0][1]
    assert start.start_audio_s == pytest.approx(end_time(1) - WINDOW_SECONDS)
    assert start.seq == 0 and start.end_audio_s is None
    assert start.reason.startswith(f"2/3 windows >= {CFG.enter_threshold:.2f}; votes yamnet=Crying wav2vec2=Crying")


def test_a_miss_rearms_the_count():
    assert feed(tracker(), [HIT, MISS] * 20) == []
    assert feed(tracker(), [HIT, SKIPPED, HIT, SKIPPED, HIT]) == []


def test_hysteresis_keeps_the_event_and_hold_ends_it():
    t = tracker()
    events = feed(t, [HIT, HIT] + [SUSTAIN] * 20 + [MISS] * 20)
    assert phases(events)[0] == PHASE_START and phases(events)[-1] == PHASE_END
    last_sustained = end_time(21)
    index, end = events[-1]
    assert end_time(index) - last_sustained >= CFG.hold_seconds
    assert end_time(index - 1) - last_sustained < CFG.hold_seconds
    assert end.end_audio_s == pytest.approx(last_sustained)
    assert end.duration_s == pytest.approx(last_sustained - end.start_audio_s)
    assert "ended: no window >= 0.40 for 3 s" in end.reason


def test_updates_follow_the_interval_with_stable_ids_and_sequence():
    events = feed(tracker(), [HIT] * 50 + [MISS] * 10)
    updates = len(events) - 2
    assert phases(events) == [PHASE_START] + [PHASE_UPDATE] * updates + [PHASE_END]
    assert updates >= int((end_time(49) - end_time(1)) / CFG.update_interval_seconds)
    assert {e.event_id for _, e in events} == {"ev1"}
    assert [e.seq for _, e in events] == list(range(len(events)))
    assert len({e.message_id for _, e in events}) == len(events)
    times = [end_time(i) for i, e in events if e.phase != PHASE_END]
    assert all(later - earlier >= CFG.update_interval_seconds for earlier, later in zip(times, times[1:]))
    assert all(later - earlier < CFG.update_interval_seconds + HOP_S for earlier, later in zip(times, times[1:]))


def test_cooldown_blocks_a_new_event_then_a_new_id_is_used():
    t = tracker()
    first = feed(t, [HIT] * 4 + [MISS] * 8)
    assert phases(first) == [PHASE_START, PHASE_END]
    ended_at = end_time(first[-1][0])
    within = int(CFG.cooldown_seconds / HOP_S) - 2
    assert feed(t, [HIT] * within, start_index=12) == []
    resume = 12 + within
    while end_time(resume) < ended_at + CFG.cooldown_seconds:
        resume += 1
    second = feed(t, [HIT] * 3, start_index=resume)
    assert phases(second) == [PHASE_START]
    assert second[0][1].event_id == "ev2"


def test_min_duration_delays_the_start_and_drops_short_bursts():
    cfg = dataclasses.replace(CFG, min_duration_seconds=3.0)
    assert feed(tracker(cfg), [HIT, HIT, HIT] + [MISS] * 20) == []
    events = feed(tracker(cfg), [HIT] * 12)
    index, start = events[0]
    assert phases(events) == [PHASE_START]
    assert start.duration_s >= 3.0
    assert end_time(index) - HOP_S - start.start_audio_s < 3.0


def test_finish_ends_open_events_and_drops_unpublished_candidates():
    t = tracker()
    feed(t, [HIT] * 6)
    assert t.open_labels == [CRY]
    ended = t.finish(end_time(6))
    assert [e.phase for e in ended] == [PHASE_END] and ended[0].seq == 1
    assert ended[0].end_audio_s == pytest.approx(end_time(5))
    assert ended[0].reason.endswith("ended: stream finished")
    assert t.open_labels == [] and t.finish(end_time(7)) == []
    waiting = tracker(dataclasses.replace(CFG, min_duration_seconds=10.0))
    feed(waiting, [HIT] * 4)
    assert waiting.finish(end_time(4)) == []


def test_two_labels_alerting_together_get_two_events():
    cfg = dataclasses.replace(CFG, enter_threshold=0.5, exit_threshold=0.3)
    crying_window, screaming_window = (0.55, 0.4), (0.4, 0.55)
    events = feed(tracker(cfg), [crying_window, screaming_window] * 10 + [MISS] * 10)
    starts = [e for _, e in events if e.phase == PHASE_START]
    ends = [e for _, e in events if e.phase == PHASE_END]
    assert sorted(e.label for e in starts) == [CRY, SCREAM] and sorted(e.label for e in ends) == [CRY, SCREAM]
    assert len({e.event_id for e in starts}) == 2


def test_payload_carries_times_scores_levels_and_versions():
    t = tracker()
    events = feed(t, [HIT, (0.9, 0.05), SUSTAIN], level_dbfs=-25.0)
    payload = events[0][1].to_payload()
    assert payload["schema"] == 1 and payload["phase"] == PHASE_START and payload["label"] == CRY
    assert payload["message_id"] == "ev1:0" and payload["device_id"] == "nursery"
    assert payload["start_time"] == "2026-11-25T10:00:00.000Z"
    assert payload["time"] == (WALL + timedelta(seconds=end_time(1))).isoformat(timespec="milliseconds")[:-6] + "Z"
    assert payload["end_time"] is None and payload["end_audio_s"] is None
    assert payload["score"] == {"peak": 0.9, "mean": 0.85}
    assert payload["confidence"] == 0.9
    assert payload["models"] == {"yamnet": {"peak": 0.9, "mean": 0.85}, "wav2vec2": {"peak": 0.9, "mean": 0.85}}
    assert payload["level_dbfs"] == {"peak": -25.0, "mean": -25.0}
    assert payload["model_versions"] == VERSIONS


def test_model_stats_only_cover_models_that_ran():
    t = tracker()
    events = []
    for i in range(3):
        p = probs(*HIT)
        events += t.update(end_time(i), fuse_window(p, None, None, CFG), -30.0, {"yamnet": p})
    assert set(events[0].to_payload()["models"]) == {"yamnet"}


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        EventTracker(CFG, "nursery", VERSIONS, datetime(2026, 1, 1))
    t = tracker()
    feed(t, [MISS] * 3)
    with pytest.raises(ValueError, match="backwards"):
        t.update(end_time(0), None, -30.0, {})
    p = probs(*HIT)
    with pytest.raises(ValueError, match="unknown model name"):
        t.update(end_time(5), fuse_window(p, None, None, CFG), -30.0, {"panns": p})
    with pytest.raises(ValueError, match="level"):
        t.update(end_time(6), None, float("nan"), {})


def test_default_ids_are_unique_hex():
    t = EventTracker(CFG, "nursery", VERSIONS, WALL)
    ids = set()
    for round_index in range(3):
        base = round_index * 40
        events = feed(t, [HIT] * 3 + [MISS] * 37, start_index=base)
        ids |= {e.event_id for _, e in events}
    assert len(ids) == 3 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)



def start_labels(cfg: FusionConfig, windows) -> list[str]:
    t = tracker(cfg)
    events = [e for _, e in feed(t, windows)] + t.finish(end_time(len(windows) + 1))
    return [e.label for e in events if e.phase == PHASE_START]


def test_a_scream_turning_into_sobbing_is_one_episode_unless_configured_otherwise():
    scream_then_cry = [(0.1, 0.8)] * 4 + [(0.5, 0.4)] + [(0.8, 0.1)] * 4
    one_episode = dataclasses.replace(CFG, one_episode_at_a_time=True)
    assert start_labels(one_episode, scream_then_cry) == [SCREAM]
    assert start_labels(dataclasses.replace(CFG, one_episode_at_a_time=False), scream_then_cry) == [SCREAM, CRY]


def test_a_new_label_can_start_once_the_previous_episode_ended():
    quiet = [MISS] * int(CFG.hold_seconds / WINDOW_SECONDS + 4)
    one_episode = dataclasses.replace(CFG, one_episode_at_a_time=True)
    assert start_labels(one_episode, [(0.1, 0.8)] * 3 + quiet + [(0.8, 0.1)] * 3) == [SCREAM, CRY]
