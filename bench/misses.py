"""Why each missed cry or scream was missed: the stage that, relaxed, would have caught it.

A recall says how many insertions were missed; whoever tunes or retrains needs to know where they were lost. The
live window record is replayed through fusion and the event tracker (``bench.tradeoff.replay_tracker``, the
monitor's own code, no model) with the stages relaxed one more at a time, and each miss is put down to the first
of these that holds:

- ``open_event``: an alarm raised before it began was still on (a false alarm, or the previous cry's event): the
  parent was already woken, but not by this cry, so it does not count as caught;
- ``other_label``: an alarm was raised during it, named after the other alert label (a cry heard as a scream;
  the parent was woken, the label was wrong);
- ``gate``: no window of it passed the gate, so no model heard it;
- ``veto``: with AudioSet's laughter, cat and animal vetoes off it would have been caught;
- ``vote``: with the vote off as well;
- ``k_of_n``: with one alerting window enough as well (its alerting windows never came k in n);
- ``threshold``: none of these catch it: the models' fused probability stayed under the enter threshold.

Each miss also carries the best AudioSet cry or scream score its windows reached, and the misses that AudioSet
itself did not hear (under ``AUDIOSET_HEARS_ALERT`` in every window) are counted apart: a cry no window of which
sounds like one even to AudioSet is a hard case or a doubtful label (``nursery-monitor audit-labels``), not only
a weakness of our models.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from monitor.config import FusionConfig
from monitor.constants import ALERT_LABELS, AUDIOSET_HEARS_ALERT, WINDOW_SECONDS
from monitor.fusion import VETO_OFF, VETOES

from .score import DetectedEvent, Score, ScoreSpec, TruthEvent, score_events, snr_key
from .tradeoff import fuse_record, record_audioset_evidence, replay_tracker, smoothed_record

OPEN_EVENT, OTHER_LABEL, GATE = "open_event", "other_label", "gate"
VETO, VOTE, K_OF_N, THRESHOLD = "veto", "vote", "k_of_n", "threshold"
CAUSES = (OPEN_EVENT, OTHER_LABEL, GATE, VETO, VOTE, K_OF_N, THRESHOLD)
"""In the order ``miss_cause`` checks them."""


def relaxations(fusion: FusionConfig) -> list[tuple[str, FusionConfig]]:
    """Each stage with the live setting relaxed up to it: vetoes off; and the vote; and k of n at 1 of 1."""
    unvetoed = dataclasses.replace(fusion, **{f"veto_{name}": VETO_OFF for name in VETOES})
    unvoted = dataclasses.replace(unvetoed, require_vote=False)
    single = dataclasses.replace(unvoted, k_windows=1, n_windows=1, min_duration_seconds=0.0)
    return [(VETO, unvetoed), (VOTE, unvoted), (K_OF_N, single)]


def insertion_rows(end_s: np.ndarray, passed: np.ndarray, truth: TruthEvent) -> np.ndarray:
    """Indices of the gated windows that heard some of the insertion."""
    return np.flatnonzero(passed & (end_s > truth.onset_s) & (end_s - WINDOW_SECONDS < truth.offset_s))


def open_at_onset(events: Sequence[DetectedEvent], truth: TruthEvent, spec: ScoreSpec) -> bool:
    """An alarm raised too early to count for ``truth`` was still on when it began."""
    return any(e.raised_s < truth.onset_s - spec.tolerance_before_s < e.end_s for e in events)


def miss_cause(already_on: bool, confused: bool, heard: bool, caught_when_relaxed: Sequence[tuple[str, bool]]) -> str:
    """``already_on``: ``open_at_onset``; ``confused``: an alarm of the other label was raised on it; ``heard``: a
    window of it passed the gate; ``caught_when_relaxed``: (stage, caught with the setting relaxed up to that
    stage), in ``relaxations`` order."""
    if already_on:
        return OPEN_EVENT
    if confused:
        return OTHER_LABEL
    if not heard:
        return GATE
    return next((stage for stage, caught in caught_when_relaxed if caught), THRESHOLD)


def miss_causes(record: dict[str, np.ndarray], fusion: FusionConfig, score: Score, spec: ScoreSpec,
                versions: dict[str, str], device_id: str) -> dict:
    """Every missed cry or scream of ``score`` (the live events scored) with its cause and the best fused alert
    probability and AudioSet cry or scream score its windows reached; the counts per label, SNR and cause; and per
    label and SNR, how many of the misses AudioSet did not hear either."""
    truths = score.truths
    events = [outcome.event for outcome in score.outcomes]
    smoothed = smoothed_record(record, fusion.smooth_windows)  # the relaxations change no smoothing
    caught = {stage: score_events(truths, replay_tracker(record, relaxed, versions, device_id, score.stream_seconds,
                                                         fused=fuse_record(record, relaxed, smoothed)),
                                  score.stream_seconds, spec).truth_hit
              for stage, relaxed in relaxations(fusion)}
    alert_mass = fuse_record(record, fusion, smoothed).alert_mass
    audioset_alert = audioset_alert_scores(record)
    misses, counts = [], {label: {} for label in ALERT_LABELS}
    unheard = {label: Counter() for label in ALERT_LABELS}
    for i, (truth, hit) in enumerate(zip(truths, score.truth_hit, strict=True)):
        if hit or truth.label not in ALERT_LABELS:
            continue
        rows = insertion_rows(record["end_s"], record["passed"], truth)
        confused = score.truth_alerted[i]  # alerted and missed: only an alarm of the other label does that
        cause = miss_cause(open_at_onset(events, truth, spec), confused, rows.size > 0,
                           [(stage, hits[i]) for stage, hits in caught.items()])
        best = round(float(alert_mass[rows].max()), 4) if rows.size else None
        heard = round(float(audioset_alert[rows].max()), 4) if rows.size else None
        misses.append({**truth.to_dict(), "cause": cause, "best_alert_probability": best,
                       "best_audioset_alert": heard})
        counts[truth.label].setdefault(truth.snr_db, Counter())[cause] += 1
        unheard[truth.label][truth.snr_db] += heard is None or heard < AUDIOSET_HEARS_ALERT
    order = {label: sorted(per_snr, key=_cleanest_first) for label, per_snr in counts.items()}
    return {"misses": misses,
            "by_label_snr": {label: {snr_key(snr): {cause: counts[label][snr][cause] for cause in CAUSES
                                                    if counts[label][snr][cause]} for snr in snrs}
                             for label, snrs in order.items()},
            "unheard_by_label_snr": {label: {snr_key(snr): unheard[label][snr] for snr in snrs}
                                     for label, snrs in order.items()}}


def audioset_alert_scores(record: dict[str, np.ndarray]) -> np.ndarray:
    """(N,) per recorded window: AudioSet's best cry or scream score (0 where the gate skipped the window)."""
    evidence = record_audioset_evidence(record)[:, :len(ALERT_LABELS)]
    return np.where(record["passed"], evidence.max(axis=1), 0.0)


def replayed_miss_causes(record: dict[str, np.ndarray], fusion: FusionConfig, truths: Sequence[TruthEvent],
                         stream_seconds: float, spec: ScoreSpec, versions: dict[str, str], device_id: str) -> dict:
    """``miss_causes`` at a setting no monitor ran (the tuner's choice): its live events replayed first."""
    score = score_events(truths, replay_tracker(record, fusion, versions, device_id, stream_seconds), stream_seconds,
                         spec)
    return miss_causes(record, fusion, score, spec, versions, device_id)


def _cleanest_first(snr_db: float | None) -> float:
    return -math.inf if snr_db is None else -snr_db
