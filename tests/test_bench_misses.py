"""Where a missed insertion was lost: each cause from a record built to stop a cry at that stage, found by
replaying the record with the stages relaxed."""

from __future__ import annotations

import numpy as np
import pytest

from bench.misses import (
    GATE,
    K_OF_N,
    OPEN_EVENT,
    OTHER_LABEL,
    THRESHOLD,
    VETO,
    VOTE,
    insertion_rows,
    miss_cause,
    miss_causes,
)
from bench.score import ScoreSpec, TruthEvent, score_events
from bench.tradeoff import replay_tracker
from monitor.config import FusionConfig
from monitor.constants import AUDIOSET_HEARS_ALERT, WINDOW_SECONDS, YAMNET_VETO_CLASSES, YAMNET_VOTER_CLASSES
from monitor.fusion import AUDIOSET_ROWS

HOP_S = 0.5
WINDOWS = 60
CRY_ROWS = range(10, 16)
"""The windows that hear the inserted cry."""
LATER = 20
"""Windows between two cries: more than an event's hold and cooldown, so each gets its own event."""
NORMAL = np.array([0.05, 0.05, 0.9], np.float32)
CRY = np.array([0.9, 0.05, 0.05], np.float32)
SCREAM = np.array([0.05, 0.9, 0.05], np.float32)
LIVE = FusionConfig(weight_yamnet=0.5, weight_wav2vec2=0.5, require_vote=True, enter_threshold=0.6,
                    enter_threshold_screaming=0.6, exit_threshold=0.4, smooth_windows=1, k_windows=2, n_windows=2,
                    veto_laughter=0.1).resolve()


def audioset_column(row: int) -> int:
    return AUDIOSET_ROWS.index(row)


def record(yamnet_rows: dict[int, np.ndarray], wav2vec2_rows: dict[int, np.ndarray] | None = None,
           audioset_rows: dict[int, dict[int, float]] | None = None, passed: bool = True) -> dict[str, np.ndarray]:
    """A room the models call Normal; the given windows get the given scores (AudioSet: {row: score})."""
    yamnet = np.tile(NORMAL, (WINDOWS, 1))
    wav2vec2 = np.tile(NORMAL, (WINDOWS, 1))
    audioset = np.zeros((WINDOWS, len(AUDIOSET_ROWS)), np.float32)
    for i, row in yamnet_rows.items():
        yamnet[i] = row
    for i, row in (wav2vec2_rows or {}).items():
        wav2vec2[i] = row
    for i, scores in (audioset_rows or {}).items():
        for row, score in scores.items():
            audioset[i, audioset_column(row)] = score
    gate = np.ones(WINDOWS, bool)
    if not passed:
        gate[CRY_ROWS.start - 1:CRY_ROWS.stop + 1] = False
    return {"end_s": WINDOW_SECONDS + HOP_S * np.arange(WINDOWS), "level_dbfs": np.full(WINDOWS, -30.0, np.float32),
            "passed": gate, "yamnet": yamnet, "wav2vec2": wav2vec2, "audioset": audioset}


def cry_truth(rec: dict[str, np.ndarray]) -> TruthEvent:
    """A cry heard by ``CRY_ROWS`` only: from just after the window before them ends to just before the one after
    them starts."""
    end_s = rec["end_s"]
    return TruthEvent("Crying", onset_s=float(end_s[CRY_ROWS.start - 1]) + 0.01,
                      offset_s=float(end_s[CRY_ROWS.stop] - WINDOW_SECONDS) - 0.01, snr_db=10.0, clip="cry.wav")


STREAM_S = float(WINDOW_SECONDS + HOP_S * WINDOWS)


def causes_of(rec: dict[str, np.ndarray], truths: list[TruthEvent]) -> dict:
    score = score_events(truths, replay_tracker(rec, LIVE, {"yamnet": "t"}, "dev", STREAM_S), STREAM_S)
    return miss_causes(rec, LIVE, score, ScoreSpec(), {"yamnet": "t"}, "dev")


def cause_of(rec: dict[str, np.ndarray]) -> str:
    (miss,) = causes_of(rec, [cry_truth(rec)])["misses"]
    return miss["cause"]


BOTH_HEAR_A_CRY = {i: CRY for i in CRY_ROWS}
AUDIOSET_HEARS_A_CRY = {i: {YAMNET_VOTER_CLASSES["Crying"][0]: 0.5} for i in CRY_ROWS}
LAUGHTER_ROW = YAMNET_VETO_CLASSES["laughter"][0]


def test_the_windows_of_an_insertion_are_those_that_heard_some_of_it():
    rec = record({})
    assert list(insertion_rows(rec["end_s"], rec["passed"], cry_truth(rec))) == list(CRY_ROWS)
    assert insertion_rows(rec["end_s"], np.zeros(WINDOWS, bool), cry_truth(rec)).size == 0


def test_a_cry_the_tracker_catches_is_not_a_miss():
    rec = record(BOTH_HEAR_A_CRY, BOTH_HEAR_A_CRY, AUDIOSET_HEARS_A_CRY)
    assert [e.label for e in replay_tracker(rec, LIVE, {"yamnet": "t"}, "dev", STREAM_S)] == ["Crying"]
    assert causes_of(rec, [cry_truth(rec)]) == {"misses": [], "by_label_snr": {"Crying": {}, "Screaming": {}},
                                                "unheard_by_label_snr": {"Crying": {}, "Screaming": {}}}


@pytest.mark.parametrize(("name", "rec", "cause"), [
    ("one alerting window, never two in a row",
     record({12: CRY}, {12: CRY}, {12: AUDIOSET_HEARS_A_CRY[12]}), K_OF_N),
    ("alerting windows two apart",
     record({11: CRY, 13: CRY}, {11: CRY, 13: CRY}), K_OF_N),
    ("heard as a scream", record({i: SCREAM for i in CRY_ROWS}, {i: SCREAM for i in CRY_ROWS}), OTHER_LABEL),
    ("AudioSet hears laughter over it",
     record(BOTH_HEAR_A_CRY, BOTH_HEAR_A_CRY, {i: {LAUGHTER_ROW: 0.6} for i in CRY_ROWS}), VETO),
    ("the average is a cry, two of three voters say Normal",
     record({i: np.array([1.0, 0.0, 0.0], np.float32) for i in CRY_ROWS},
            {i: np.array([0.45, 0.0, 0.55], np.float32) for i in CRY_ROWS}), VOTE),
    ("the models are not sure", record({i: np.array([0.5, 0.1, 0.4], np.float32) for i in CRY_ROWS},
                                       {i: np.array([0.5, 0.1, 0.4], np.float32) for i in CRY_ROWS}), THRESHOLD),
    ("the gate passed none of its windows", record(BOTH_HEAR_A_CRY, BOTH_HEAR_A_CRY, passed=False), GATE),
])
def test_each_miss_is_put_down_to_the_stage_that_stopped_it(name, rec, cause):
    assert cause_of(rec) == cause, name


def test_the_first_relaxation_that_catches_it_names_the_cause():
    """Every window but one vetoed: the one left alerts alone, but it was the vetoes that cost the event."""
    rec = record(BOTH_HEAR_A_CRY, BOTH_HEAR_A_CRY, {i: {LAUGHTER_ROW: 0.6} for i in CRY_ROWS if i != 13})
    assert cause_of(rec) == VETO
    assert miss_cause(False, False, True, [(VETO, False), (VOTE, True), (K_OF_N, True)]) == VOTE
    assert miss_cause(False, False, True, [(VETO, False), (VOTE, False), (K_OF_N, False)]) == THRESHOLD
    assert miss_cause(False, True, False, []) == OTHER_LABEL, "woken with the wrong name comes before the stages"
    assert miss_cause(True, True, True, [(VETO, True)]) == OPEN_EVENT, "woken before it began comes first"
    assert miss_cause(False, False, False, [(VETO, True)]) == GATE


def test_a_cry_that_begins_while_an_earlier_alarm_is_on_is_put_down_to_that_alarm():
    """Both models hear a cry in the room tone two windows before the inserted one: that event is raised too early
    to count and is still on when the insertion begins."""
    rec = record({i: CRY for i in range(CRY_ROWS.start - 3, CRY_ROWS.stop)},
                 {i: CRY for i in range(CRY_ROWS.start - 3, CRY_ROWS.stop)})
    assert cause_of(rec) == OPEN_EVENT


def test_miss_causes_lists_each_miss_and_counts_them_by_label_snr_and_cause():
    later = {i + LATER: CRY for i in CRY_ROWS}
    rec = record(BOTH_HEAR_A_CRY | later, BOTH_HEAR_A_CRY | later,
                 {i: {LAUGHTER_ROW: 0.6} for i in [*CRY_ROWS, *later]})
    missed = cry_truth(rec)
    shift = LATER * HOP_S
    clean = TruthEvent(missed.label, missed.onset_s + shift, missed.offset_s + shift, None, "clean-cry.wav")
    caught = TruthEvent("Screaming", float(rec["end_s"][50]) - 0.5, float(rec["end_s"][52]), None, "scream.wav")
    rec["yamnet"][50:53] = SCREAM
    rec["wav2vec2"][50:53] = SCREAM
    out = causes_of(rec, [missed, clean, caught])
    assert [(m["clip"], m["cause"]) for m in out["misses"]] == [("cry.wav", VETO), ("clean-cry.wav", VETO)]
    assert out["misses"][0]["best_alert_probability"] == pytest.approx(0.95, abs=1e-4)
    assert out["by_label_snr"] == {"Crying": {"clean": {VETO: 1}, "10dB": {VETO: 1}}, "Screaming": {}}
    assert list(out["by_label_snr"]["Crying"]) == ["clean", "10dB"], "cleanest first, as the recall table reads"
    assert [m["best_audioset_alert"] for m in out["misses"]] == [0.0, 0.0]
    assert out["unheard_by_label_snr"] == {"Crying": {"clean": 1, "10dB": 1}, "Screaming": {}}


def test_misses_audioset_heard_are_told_from_those_it_did_not():
    """Two cries lost to the threshold: AudioSet heard the first (one window at 0.3, its cry row), not the second
    (0.05 at most, under AUDIOSET_HEARS_ALERT); only the second counts as unheard, and only the insertion's own
    windows count (a loud AudioSet cry long before it does not)."""
    unsure = np.array([0.5, 0.1, 0.4], np.float32)
    later = [i + LATER for i in CRY_ROWS]
    cry_row = YAMNET_VOTER_CLASSES["Crying"][1]
    audioset = {12: {cry_row: 0.3}, later[2]: {cry_row: 0.05}, 2: {cry_row: 0.9}}
    rec = record({i: unsure for i in [*CRY_ROWS, *later]}, {i: unsure for i in [*CRY_ROWS, *later]}, audioset)
    heard = cry_truth(rec)
    shift = LATER * HOP_S
    unheard = TruthEvent("Crying", heard.onset_s + shift, heard.offset_s + shift, 10.0, "quiet-cry.wav")
    out = causes_of(rec, [heard, unheard])
    assert [(m["cause"], m["best_audioset_alert"]) for m in out["misses"]] == [
        (THRESHOLD, pytest.approx(0.3)), (THRESHOLD, pytest.approx(0.05))]
    assert AUDIOSET_HEARS_ALERT == pytest.approx(0.1)
    assert out["unheard_by_label_snr"] == {"Crying": {"10dB": 1}, "Screaming": {}}
