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


# --- the sustained-cry path (fusion.sustained_seconds) ---

SHORT_SPAN = dataclasses.replace(CFG, sustained_seconds=5.0, sustained_windows=8, sustained_threshold=0.5)
"""8 qualifying windows within 5 s (10 windows at the 0.5 s hop) start an event."""
LINGERING = (0.45, 0.1)
"""Crying + Screaming 0.55: never an alerting window, but one that counts towards a sustained cry."""


def test_a_cry_under_the_enter_threshold_raises_an_alarm_once_it_lasts():
    events = feed(tracker(SHORT_SPAN), [MISS] * 3 + [LINGERING] * 20)
    assert [(i, e.phase, e.label) for i, e in events] == [(10, PHASE_START, CRY), (20, PHASE_UPDATE, CRY)], (
        "starts at the 8th lingering window, which keep it alive (>= exit_threshold)")
    start = events[0][1]
    assert start.reason.startswith("sustained: 8+ windows of the last 5 s >= 0.50")
    assert start.start_audio_s == pytest.approx(end_time(3) - WINDOW_SECONDS), "from the first counted window"
    assert feed(tracker(SHORT_SPAN), [MISS] * 3 + [LINGERING] * 7) == [], "one window short"


def test_only_recent_qualifying_windows_of_an_idle_tracker_count():
    spaced = [LINGERING, MISS] * 30
    assert feed(tracker(SHORT_SPAN), spaced) == [], "5 of every 10 windows: never 8 within the span"
    under = (0.4, 0.05)
    assert feed(tracker(SHORT_SPAN), [under] * 30) == [], "0.45 is under sustained_threshold"
    gated = [LINGERING if i % 2 else SKIPPED for i in range(40)]
    assert feed(tracker(SHORT_SPAN), gated) == [], "a window the gate skipped counts for nothing"
    off = dataclasses.replace(SHORT_SPAN, sustained_seconds=0.0)
    assert feed(tracker(off), [LINGERING] * 40) == [] and not off.sustained


def test_a_sustained_cry_is_named_after_the_likelier_label_and_respects_its_cooldown():
    screams = [(0.1, 0.45)] * 8
    (index, start), = feed(tracker(SHORT_SPAN), screams)
    assert (index, start.phase, start.label) == (7, PHASE_START, SCREAM)
    t = tracker(SHORT_SPAN)
    first = feed(t, [HIT] * 3 + [MISS] * 8)
    assert phases(first) == [PHASE_START, PHASE_END]
    ended_at = first[-1][0]
    quiet_until = end_time(ended_at) + SHORT_SPAN.cooldown_seconds
    later = feed(t, [LINGERING] * 20, start_index=ended_at + 1)
    assert later and later[0][1].reason.startswith("sustained")
    assert end_time(later[0][0]) >= quiet_until, "not while the label cools down"


def test_an_alarm_already_on_is_not_doubled_and_a_vetoed_window_does_not_count():
    t = tracker(SHORT_SPAN)
    events = feed(t, [HIT, HIT] + [LINGERING] * 30)
    assert [e.phase for _, e in events if e.phase == PHASE_START] == [PHASE_START], "one alarm, kept alive"
    laughing = np.zeros(521)
    laughing[14] = 0.9  # AudioSet's "Baby laughter" over a lingering cry
    vetoed = tracker(SHORT_SPAN)
    p = probs(*LINGERING)
    for i in range(30):
        fused = fuse_window(p, p, laughing, vetoed.cfg)
        assert fused.heard_veto == "laughter"
        assert vetoed.update(end_time(i), fused, -30.0, {"yamnet": p, "wav2vec2": p}) == []


def test_an_alarms_own_windows_never_count_towards_the_next_one():
    """A cry alarmed by k of n lingers for 10 s, then stops; 8 s later (after hold and cooldown) two lingering windows
    of something else, well within a 20 s span of the alarm's lingering: without counting the alarm's own windows,
    nothing starts."""
    t = tracker(dataclasses.replace(SHORT_SPAN, sustained_seconds=20.0))
    alarm = feed(t, [HIT, HIT] + [LINGERING] * 20 + [MISS] * 16)
    assert phases(alarm)[0] == PHASE_START and phases(alarm)[-1] == PHASE_END
    assert feed(t, [LINGERING] * 2, start_index=38) == []
    assert feed(t, [LINGERING] * 6, start_index=40)[0][1].reason.startswith("sustained"), "8 fresh ones do"


def test_with_one_episode_at_a_time_a_sustained_alarm_is_the_episode():
    """A scream that lingers under the thresholds starts the alarm; the sobbing that follows, loud enough for the
    cry's own k of n, keeps that alarm alive instead of starting a second one (unless configured otherwise)."""
    lingering_scream_then_cry = [(0.1, 0.45)] * 8 + [HIT] * 6
    one_episode = dataclasses.replace(SHORT_SPAN, one_episode_at_a_time=True)
    assert start_labels(one_episode, lingering_scream_then_cry) == [SCREAM]
    assert start_labels(SHORT_SPAN, lingering_scream_then_cry) == [SCREAM, CRY]
    t = tracker(one_episode)
    events = feed(t, lingering_scream_then_cry + [MISS] * 12)
    assert [(e.phase, e.label) for _, e in events if e.phase != PHASE_UPDATE] == [(PHASE_START, SCREAM),
                                                                                 (PHASE_END, SCREAM)]
    assert end_time(events[-1][0]) >= end_time(len(lingering_scream_then_cry) - 1) + CFG.hold_seconds, (
        "the cry's windows kept the scream's alarm alive")
