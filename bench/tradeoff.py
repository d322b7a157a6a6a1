"""Recall against false alarms per hour over the fusion / tracker settings, without running the models again.

The ours replay records, per window, the gate decision, each model's probabilities and the AudioSet voter
rows. Fusion and the event tracker are pure, so they are re-run over that record for every setting of
fusion family (YAMNet alone, Wav2Vec2 alone, weighted averages; each with or without the vote) x smoothing x
``enter_threshold`` x k-of-n. Re-running the live setting must give the live events back (checked and
reported): that proves the record is complete. Settings with a threshold of their own for screams are not
replayed but combined (``threshold_pairs``): each label is tracked and scored on its own, so its events at a
threshold are the same whatever the other label's threshold is. ``build-models`` uses the same sweep to
choose the operating point (``bench.tune``); the bench uses it for the DET-style curves.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from monitor.config import FusionConfig
from monitor.constants import ALERT_LABELS, ALERT_ON_LABEL, ALERT_ON_SUM, SCREAMING
from monitor.model_manifest import LADDER_BUDGET
from monitor.progress import progress_bar

from .replay import STREAM_EPOCH, EventLog
from .score import SECONDS_PER_HOUR, DetectedEvent, ScoreSpec, TruthEvent, latency_summary, score_events

log = logging.getLogger(__name__)

ENTER_THRESHOLDS = (0.40, *(round(0.55 + 0.05 * i, 2) for i in range(9)))
"""0.40, 0.55 ... 0.95. Lower ones reached the frontier only beyond 10 false alarms per hour; 0.45 and 0.50
reached it nowhere on two builds' tuning sweeps, and were the costliest to sweep (the most alerting windows).
0.40 stays as the default ``exit_threshold``, at or above which every pair of thresholds can be combined
(``threshold_pairs``)."""
K_OF_N = ((1, 1), (2, 2), (3, 4), (3, 5))
"""2 of 3 made 4 of those frontiers' 93 points; without it and without 0.45 / 0.50, both builds' sweeps chose the
same operating point, in 40% less time."""
REQUIRE_VOTE = (True, False)
YAMNET_ALONE, WAV2VEC2_ALONE = 1.0, 0.0
"""``weight_yamnet`` of the single-model fusions."""
AVERAGE_WEIGHTS = (0.85, 0.7, 0.5)
"""YAMNet weights of the averaged fusions swept (Wav2Vec2 gets the rest)."""
MIN_DURATIONS = (0.0,)
SMOOTH_WINDOWS = (1, 2, 3, 4)
"""Trailing-mean lengths swept (``monitor.smoothing``); 1 = off."""
ALERT_ON = (ALERT_ON_LABEL, ALERT_ON_SUM)
MIN_SNR_DB = 10.0
"""The recall bars are set for insertions at this SNR and cleaner."""
PLOT_LINEAR_BELOW = 0.05
"""The plot's x axis is linear below this many false alarms per hour (the bar), logarithmic above."""
PLOT_TICKS = (0.0, 0.05, 0.2, 1.0, 5.0, 20.0, 100.0, 500.0)
SWEEP_PROGRESS_S = 1.0
WEIGHT_DECIMALS = 6
"""Wav2Vec2's weight is 1 - YAMNet's, rounded so 0.3 is written as 0.3 in the manifest."""
STREAM_JOIN_GAP_S = 60.0
"""Silence put between concatenated records: longer than any hold + cooldown, so no event spans a join."""


@dataclass(frozen=True, order=True)
class Setting:
    weight_yamnet: float
    """1 = YAMNet alone, 0 = Wav2Vec2 alone, else the weighted average (Wav2Vec2 gets 1 - this)."""
    require_vote: bool
    enter_threshold: float
    k_windows: int
    n_windows: int
    min_duration_seconds: float = 0.0
    smooth_windows: int = 1
    enter_threshold_screaming: float | None = None
    """None = ``enter_threshold``."""
    alert_on: str = ALERT_ON_LABEL

    def __post_init__(self) -> None:
        if self.enter_threshold_screaming is None:
            object.__setattr__(self, "enter_threshold_screaming", self.enter_threshold)

    @property
    def split(self) -> bool:
        """Screams have a threshold of their own."""
        return self.enter_threshold_screaming != self.enter_threshold

    def fusion(self, live: FusionConfig) -> FusionConfig:
        return dataclasses.replace(live, weight_yamnet=self.weight_yamnet,
                                   weight_wav2vec2=round(1.0 - self.weight_yamnet, WEIGHT_DECIMALS),
                                   enter_threshold=self.enter_threshold, require_vote=self.require_vote,
                                   enter_threshold_screaming=self.enter_threshold_screaming,
                                   exit_threshold=min(live.exit_threshold, self.enter_threshold,
                                                      self.enter_threshold_screaming),
                                   k_windows=self.k_windows, n_windows=self.n_windows, alert_on=self.alert_on,
                                   min_duration_seconds=self.min_duration_seconds,
                                   smooth_windows=self.smooth_windows)

    @property
    def family(self) -> str:
        """The fusion this setting belongs to: one DET curve each."""
        if self.weight_yamnet == YAMNET_ALONE:
            name = "YAMNet alone"
        elif self.weight_yamnet == WAV2VEC2_ALONE:
            name = "Wav2Vec2 alone"
        else:
            name = f"average {self.weight_yamnet:g}/{1 - self.weight_yamnet:g}"
        summed = ", cry + scream" if self.alert_on == ALERT_ON_SUM else ""
        return name + summed + (" + vote" if self.require_vote else "")

    def describe(self) -> str:
        duration = f", min duration {self.min_duration_seconds:g} s" if self.min_duration_seconds else ""
        smooth = f", mean of {self.smooth_windows} windows" if self.smooth_windows > 1 else ""
        return (f"{self.family}{smooth}, enter_threshold {self.enter_threshold_text()}, {self.k_windows} of "
                f"{self.n_windows} windows{duration}")

    def enter_threshold_text(self) -> str:
        scream = f" (Screaming {self.enter_threshold_screaming:g})" if self.split else ""
        return f"{self.enter_threshold:g}{scream}"

    @classmethod
    def of(cls, fusion: FusionConfig) -> Setting:
        total = fusion.weight_yamnet + fusion.weight_wav2vec2
        return cls(round(fusion.weight_yamnet / total, 4), fusion.require_vote, fusion.enter_threshold,
                   fusion.k_windows, fusion.n_windows, fusion.min_duration_seconds, fusion.smooth_windows,
                   fusion.enter_threshold_screaming, fusion.alert_on)


@dataclass(frozen=True)
class Targets:
    """The event bars a setting is judged against."""

    false_alarms_per_hour: float
    recall_10db_up: dict[str, float]
    latency_p95_s: float


@dataclass(frozen=True)
class LabelResult:
    """One alert label's events under a setting, scored: what a setting with a threshold per label combines."""

    false_alarms: int
    recall_10db_up: float | None
    recall: float | None
    latencies_s: tuple[float, ...]


@dataclass(frozen=True)
class SweepPoint:
    setting: Setting
    false_alarms_per_hour: float
    recall_10db_up: dict[str, float | None]
    recall: dict[str, float | None]
    latency_p95_s: float | None
    is_live_config: bool = False
    by_label: dict[str, LabelResult] = field(default_factory=dict, compare=False, repr=False)
    background_hours: float = 0.0

    @property
    def recall_sum(self) -> float:
        return sum(v or 0.0 for v in self.recall_10db_up.values())

    @property
    def recall_worst(self) -> float:
        """Recall of the label detected worst (of those inserted): a setting deaf to one label is no default."""
        return min((v for v in self.recall_10db_up.values() if v is not None), default=0.0)

    @property
    def latency_or_inf(self) -> float:
        return self.latency_p95_s if self.latency_p95_s is not None else float("inf")

    def meets(self, targets: Targets) -> bool:
        return (self.false_alarms_per_hour <= targets.false_alarms_per_hour
                and self.latency_or_inf <= targets.latency_p95_s
                and all((self.recall_10db_up.get(label) or 0.0) >= bar
                        for label, bar in targets.recall_10db_up.items()))

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self.setting), "family": self.setting.family,
                **{k: v for k, v in dataclasses.asdict(self).items() if k not in ("setting", "by_label")},
                "false_alarms_by_label": {label: r.false_alarms for label, r in self.by_label.items()}}


def points_to_json(points: Sequence[SweepPoint]) -> dict:
    """The replayed (single-threshold) points in full; the threshold pairs, tens of thousands of combinations,
    only counted (the frontier and the DET curves hold the ones that matter)."""
    return {"points": [p.to_dict() for p in points if not p.setting.split],
            "threshold_pairs": sum(p.setting.split for p in points)}


def has_wav2vec2(record: dict[str, np.ndarray]) -> bool:
    return bool(np.any(~np.isnan(record["wav2vec2"])))


def concat_records(parts: Sequence[tuple[dict[str, np.ndarray], Sequence[TruthEvent], float]],
                   gap_s: float = STREAM_JOIN_GAP_S) -> tuple[dict[str, np.ndarray], list[TruthEvent], float]:
    """Several recorded streams as one, each shifted past the previous one's end plus ``gap_s``: one sweep then
    scores false alarms and recall over all of them."""
    records, truths, offset = [], [], 0.0
    for record, part_truths, seconds in parts:
        records.append({**record, "end_s": record["end_s"] + offset})
        truths += [dataclasses.replace(t, onset_s=t.onset_s + offset, offset_s=t.offset_s + offset)
                   for t in part_truths]
        offset += seconds + gap_s
    joined = {key: np.concatenate([r[key] for r in records]) for key in records[0]}
    return joined, truths, offset - gap_s


def smoothed_record(record: dict[str, np.ndarray], windows: int) -> dict[str, np.ndarray]:
    """Each model's recorded probabilities as the live smoother saw them: the trailing mean over ``windows``
    windows, skipped windows absent, no mean across a stream discontinuity."""
    from monitor.smoothing import contiguous_segments, trailing_mean

    if windows <= 1:
        return record
    end_s = record["end_s"]
    hop = float(np.median(np.diff(end_s))) if len(end_s) > 1 else 0.0
    segments = contiguous_segments(end_s, hop)
    smoothed = dict(record)
    for model in ("yamnet", "wav2vec2"):
        rows = np.where(record["passed"][:, None], record[model], np.nan)
        smoothed[model] = np.where(record["passed"][:, None], trailing_mean(rows, windows, segments), record[model])
    return smoothed


def record_audioset_evidence(record: dict[str, np.ndarray]) -> np.ndarray:
    """``audioset_evidence`` of every recorded window (the record keeps only ``AUDIOSET_ROWS``; NaN, where the gate
    skipped a window, reads as 0)."""
    from monitor.fusion import AUDIOSET_ROWS, audioset_evidence

    return audioset_evidence(np.nan_to_num(record["audioset"]), AUDIOSET_ROWS)


def fuse_record(record: dict[str, np.ndarray], fusion: FusionConfig, smoothed: dict[str, np.ndarray] | None = None):
    """Every recorded window smoothed and fused at once (``trailing_mean`` and ``fuse_batch``: the live code);
    ``smoothed``: the record already smoothed over ``fusion.smooth_windows``."""
    from monitor.fusion import fuse_batch

    smoothed = smoothed_record(record, fusion.smooth_windows) if smoothed is None else smoothed
    return fuse_batch(np.nan_to_num(smoothed["yamnet"]), smoothed["wav2vec2"], record_audioset_evidence(record),
                      fusion)


def replay_tracker(record: dict[str, np.ndarray], fusion: FusionConfig, versions: dict[str, str], device_id: str,
                   stream_seconds: float, fused=None) -> list[DetectedEvent]:
    """Fusion and the event tracker over recorded window scores: the events, without any model.

    Every window is fused at once (``fuse_record``; pass ``fused`` to reuse it for settings that differ only in
    the tracker's k-of-n); a window whose Wav2Vec2 scores
    are missing (the cascade skipped it, or Wav2Vec2 was off) is fused without them, as it was live. While the
    tracker is idle, windows that are a hit for no label and count towards no sustained cry change nothing
    (``EventTracker.idle``), so the replay jumps from one such window to the next: a long quiet stream costs only
    its alerting windows. The
    models' own scores only fill the messages' statistics, which scoring does not read, so they are left out.
    """
    from monitor.events import EventTracker

    tracker = EventTracker(fusion, device_id, versions, STREAM_EPOCH)
    events = EventLog()
    end_s, level, passed = record["end_s"], record["level_dbfs"], record["passed"]
    fused = fuse_record(record, fusion) if fused is None else fused
    counted = passed & fused.sustained
    candidates = np.flatnonzero((passed & (fused.alert_label >= 0)) | sustained_that_matter(end_s, counted, fusion))
    i, count = 0, len(passed)
    while i < count:
        if tracker.idle:
            following = int(np.searchsorted(candidates, i))
            if following == len(candidates):
                break
            i = int(candidates[following])
        window = fused.window(i) if passed[i] else None
        for event in tracker.update(float(end_s[i]), window, float(level[i])):
            events.record(float(end_s[i]), event.to_payload())
        i += 1
    for event in tracker.finish(stream_seconds):
        events.record(stream_seconds, event.to_payload())
    return events.finish(stream_seconds)


def sustained_that_matter(end_s: np.ndarray, counted: np.ndarray, fusion: FusionConfig) -> np.ndarray:
    """(N,) the windows counting towards a sustained cry (``counted``) that the tracker must see: those within
    ``sustained_seconds`` before a counted window with ``sustained_windows`` counted ones in its span, the only
    windows where a sustained cry can start. Any other counted window has left every such span before it could be
    counted in one, so skipping it changes nothing, and a long stream of lingering Normal sound stays cheap."""
    if not fusion.sustained or not counted.any():
        return np.zeros(len(end_s), bool)
    times = np.asarray(end_s, dtype=np.float64)[counted]
    in_span = np.arange(1, len(times) + 1) - np.searchsorted(times, times - fusion.sustained_seconds, side="right")
    can_start = times[in_span >= fusion.sustained_windows]
    following = np.searchsorted(can_start, times, side="left")
    near = following < len(can_start)
    near[near] = can_start[following[near]] - times[near] < fusion.sustained_seconds
    out = np.zeros(len(end_s), bool)
    out[np.flatnonzero(counted)[near]] = True
    return out


def default_settings(record: dict[str, np.ndarray], live: FusionConfig) -> list[Setting]:
    """The grid: each fusion family (YAMNet alone, Wav2Vec2 alone, averages; alerting by label or by cry + scream)
    x vote x smoothing x threshold x k-of-n, plus the live setting."""
    weights = (YAMNET_ALONE, *AVERAGE_WEIGHTS, WAV2VEC2_ALONE) if has_wav2vec2(record) else (YAMNET_ALONE,)
    grid = {Setting(w, v, t, k, n, d, m, alert_on=a) for w in weights for v in REQUIRE_VOTE for t in ENTER_THRESHOLDS
            for k, n in K_OF_N for d in MIN_DURATIONS for m in SMOOTH_WINDOWS for a in ALERT_ON}
    return sorted(grid | {Setting.of(live)})


_SWEPT: dict = {}
"""The record a sweep's worker processes read (inherited by fork, not pickled per task)."""


def _fusion_key(setting: Setting) -> tuple:
    """Settings with the same key fuse the same way: only the tracker's k-of-n differs."""
    return (setting.weight_yamnet, setting.require_vote, setting.enter_threshold, setting.enter_threshold_screaming,
            setting.smooth_windows, setting.alert_on)


def _smoothed(windows: int) -> dict[str, np.ndarray]:
    """The swept record smoothed over ``windows``, once per worker process and length."""
    cache = _SWEPT.setdefault("smoothed", {})
    if windows not in cache:
        cache[windows] = smoothed_record(_SWEPT["record"], windows)
    return cache[windows]


def _sweep_group(settings: list[Setting]) -> list[SweepPoint]:
    record, live, versions, device_id, truths, seconds, spec, live_key = (
        _SWEPT[k] for k in ("record", "live", "versions", "device_id", "truths", "seconds", "spec", "live_key"))
    fusion = settings[0].fusion(live)
    fused = fuse_record(record, fusion, smoothed=_smoothed(fusion.smooth_windows))
    points = []
    for setting in settings:
        events = replay_tracker(record, setting.fusion(live), versions, device_id, seconds, fused=fused)
        score = score_events(truths, events, seconds, spec)
        summary = score.to_dict()
        recall_10db_up = {label: score.recall(label, MIN_SNR_DB) for label in ALERT_LABELS}
        by_label = {label: LabelResult(score.per_label[label].false_alarms, recall_10db_up[label],
                                       summary["event_recall"][label], tuple(score.per_label[label].latencies_s))
                    for label in ALERT_LABELS}
        points.append(SweepPoint(
            setting=setting, false_alarms_per_hour=summary["false_alarms_per_hour"], recall_10db_up=recall_10db_up,
            recall=summary["event_recall"], latency_p95_s=summary["latency_p95_s"],
            is_live_config=setting == live_key, by_label=by_label,
            background_hours=score.background_seconds / SECONDS_PER_HOUR))
    return points


def combined_point(setting: Setting, parts: dict[str, SweepPoint], live_key: Setting | None = None) -> SweepPoint:
    """A setting's result from each label's result under the settings that share its threshold for that label."""
    labels = {label: parts[label].by_label[label] for label in ALERT_LABELS}
    hours = parts[ALERT_LABELS[0]].background_hours
    false_alarms = sum(r.false_alarms for r in labels.values())
    latencies = [latency for r in labels.values() for latency in r.latencies_s]
    return SweepPoint(
        setting=setting, false_alarms_per_hour=round(false_alarms / hours, 4) if hours > 0 else 0.0,
        recall_10db_up={label: r.recall_10db_up for label, r in labels.items()},
        recall={label: r.recall for label, r in labels.items()},
        latency_p95_s=latency_summary(latencies)["latency_p95_s"], is_live_config=setting == live_key,
        by_label=labels, background_hours=hours)


def threshold_pairs(points: Sequence[SweepPoint], live: FusionConfig) -> list[SweepPoint]:
    """Every setting with a threshold of its own for screams, combined from the single-threshold results.

    Exact because each label has its own state machine and is scored on its own: a window counts towards a
    label by that label's threshold only, and misses are judged against ``exit_threshold``, which stays the
    live one as long as both thresholds are at or above it (pairs below it are left out). With
    ``one_episode_at_a_time`` the labels share an episode, so nothing is combined.
    """
    if live.one_episode_at_a_time:
        return []
    shapes: dict[Setting, dict[float, SweepPoint]] = {}
    for p in points:
        s = p.setting
        if not s.split and p.by_label and s.enter_threshold >= live.exit_threshold:
            shape = dataclasses.replace(s, enter_threshold=0.0, enter_threshold_screaming=0.0)
            shapes.setdefault(shape, {})[s.enter_threshold] = p
    present = {p.setting for p in points}
    live_key = Setting.of(live)
    combined = []
    for shape, by_threshold in shapes.items():
        for cry, scream in itertools.permutations(sorted(by_threshold), 2):
            setting = dataclasses.replace(shape, enter_threshold=cry, enter_threshold_screaming=scream)
            if setting not in present:
                combined.append(combined_point(setting, {ALERT_LABELS[0]: by_threshold[cry],
                                                         SCREAMING: by_threshold[scream]}, live_key))
    return combined


def sweep(record: dict[str, np.ndarray], live: FusionConfig, versions: dict[str, str], device_id: str,
          truths: Sequence[TruthEvent], stream_seconds: float, score_spec: ScoreSpec,
          progress: bool = True, settings: Sequence[Setting] | None = None, workers: int = 1) -> list[SweepPoint]:
    """Every setting's events over the record, scored against the truths; settings that fuse alike share one
    fusion pass, and ``workers`` processes share the groups. Then every pair of thresholds (``threshold_pairs``)."""
    settings = default_settings(record, live) if settings is None else settings
    groups: dict[tuple, list[Setting]] = {}
    for setting in settings:
        groups.setdefault(_fusion_key(setting), []).append(setting)
    _SWEPT.update(record=record, live=live, versions=versions, device_id=device_id, truths=list(truths),
                  seconds=stream_seconds, spec=score_spec, live_key=Setting.of(live))
    try:
        if workers > 1 and len(groups) > 1:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                results = list(progress_bar(pool.imap(_sweep_group, groups.values()), total=len(groups),
                                            desc="threshold sweep", enabled=progress, mininterval=SWEEP_PROGRESS_S))
        else:
            results = [_sweep_group(group) for group in progress_bar(
                groups.values(), desc="threshold sweep", enabled=progress, mininterval=SWEEP_PROGRESS_S)]
    finally:
        _SWEPT.clear()
    points = [point for group in results for point in group]
    return points + threshold_pairs(points, live)


def ladder_on_stream(record: dict[str, np.ndarray], live: FusionConfig, ladder: Sequence[dict],
                     versions: dict[str, str], device_id: str, truths: Sequence[TruthEvent], stream_seconds: float,
                     score_spec: ScoreSpec) -> list[dict]:
    """Each sensitivity a parent can pick (the manifest's budget ladder, ``fusion.false_alarm_budget``) measured on
    this stream: what the budget promised on the tuning streams against what it gives on audio they never held."""
    settings = [Setting.of(dataclasses.replace(live, **row["fusion"])) for row in ladder]
    # One sweep: settings that fuse alike share a pass; the threshold pairs it adds never repeat a replayed setting.
    by_setting = {point.setting: point for point in sweep(record, live, versions, device_id, truths, stream_seconds,
                                                          score_spec, False, settings=settings)}
    rows = []
    for row, setting in zip(ladder, settings):
        point = by_setting[setting]
        rows.append({LADDER_BUDGET: row[LADDER_BUDGET], "setting": setting.describe(),
                     "tuning": {key: row.get(key) for key in ("false_alarms_per_hour", "recall_10db_up")},
                     "false_alarms": sum(r.false_alarms for r in point.by_label.values()),
                     **{key: value for key, value in point.to_dict().items()
                        if key in ("false_alarms_per_hour", "recall_10db_up", "recall", "latency_p95_s")}})
    return rows


def most_recall(points: Sequence[SweepPoint]) -> SweepPoint:
    return max(points, key=lambda p: (p.recall_worst, p.recall_sum, -p.false_alarms_per_hour, -p.latency_or_inf,
                                      p.setting.enter_threshold))


def recommend(points: Sequence[SweepPoint], targets: Targets,
              baseline_fa_per_hour: float | None) -> tuple[SweepPoint | None, str]:
    """The setting to ship, and why, in this order of preference:

    1. meets every event bar (and raises no more false alarms than the baseline): the most recall;
    2. else within the false-alarm bar and detecting every label at least sometimes: the most recall (a
       monitor that cries wolf is switched off, so false alarms come first);
    3. else no more false alarms than the baseline, detecting every label: the most recall;
    4. else the fewest false alarms.
    "Most recall" is the recall of the worst-detected label first, then the sum over labels; ties go to fewer
    false alarms, then lower latency, then the higher (more conservative) threshold.
    """
    if not points:
        return None, "no sweep points"
    not_worse = [p for p in points if baseline_fa_per_hour is None or p.false_alarms_per_hour <= baseline_fa_per_hour]
    all_bars = [p for p in not_worse if p.meets(targets)]
    if all_bars:
        return most_recall(all_bars), (f"{len(all_bars)} settings meet every event bar; this one has the most "
                                        "recall, then the fewest false alarms")
    quiet = [p for p in not_worse if p.false_alarms_per_hour <= targets.false_alarms_per_hour and p.recall_worst > 0]
    if quiet:
        return most_recall(quiet), (f"no setting meets every event bar; false alarms come first (a monitor that "
                                     f"cries wolf gets switched off), so the most recall among the {len(quiet)} "
                                     f"settings within {targets.false_alarms_per_hour:g} false alarms per hour")
    useful = [p for p in not_worse if p.recall_worst > 0]
    if useful:
        return most_recall(useful), ("no setting that detects every label stays within the false-alarm bar; the "
                                      "most recall among the settings with no more false alarms than the baseline")
    best = min(points, key=lambda p: (p.false_alarms_per_hour, -p.recall_sum, p.latency_or_inf,
                                      -p.setting.enter_threshold))
    return best, ("no setting detects every label without more false alarms than the baseline: the fewest false "
                  "alarms")


def decision_ceiling(points: Sequence[SweepPoint], targets: Targets) -> dict:
    """How near any swept setting comes to each event bar when the others are set aside. A bar that even its own best
    setting misses is out of reach of every fusion and tracker setting swept, with these models on this stream: only
    better models (or data) can meet it, not tuning."""
    quiet = [p for p in points if p.false_alarms_per_hour <= targets.false_alarms_per_hour]
    recall_bars_met = [p for p in points if all((p.recall_10db_up.get(label) or 0.0) >= bar
                                                for label, bar in targets.recall_10db_up.items())]

    def fastest(chosen: Sequence[SweepPoint]) -> float | None:
        return min((p.latency_p95_s for p in chosen if p.latency_p95_s is not None), default=None)

    return {"settings": len(points),
            "best_recall_10db_up_within_false_alarm_bar": {
                label: max((p.recall_10db_up.get(label) or 0.0 for p in quiet), default=None)
                for label in targets.recall_10db_up},
            "fewest_false_alarms_per_hour_meeting_recall_bars": min(
                (p.false_alarms_per_hour for p in recall_bars_met), default=None),
            "fastest_latency_p95_s": fastest(points),
            "fastest_latency_p95_s_within_false_alarm_bar": fastest(quiet)}


def _by_label_one_threshold(setting: Setting) -> bool:
    return not setting.split and setting.alert_on == ALERT_ON_LABEL


DECISION_VARIANTS = {
    "by label, one threshold": _by_label_one_threshold,
    "by label, a threshold for screams": lambda s: s.alert_on == ALERT_ON_LABEL,
    "by label or cry + scream, one threshold": lambda s: not s.split,
    "all": lambda s: True,
}
"""Subsets of the grid: what each way of deciding adds, measured on the same streams."""
VARIANT_BUDGETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)


def recall_by_variant(points: Sequence[SweepPoint]) -> dict[str, dict[str, float | None]]:
    """Per decision variant, the best recall (>= 10 dB) of the worse-detected label within each false-alarm
    budget: whether a threshold for screams or alerting on cry + scream earns its place in the grid."""
    table = {}
    for name, member in DECISION_VARIANTS.items():
        chosen = [p for p in points if member(p.setting)]
        table[name] = {f"{budget:g}": max((round(p.recall_worst, 4) for p in chosen
                                           if p.false_alarms_per_hour <= budget), default=None)
                       for budget in VARIANT_BUDGETS}
    return table


def pareto_frontier(points: Sequence[SweepPoint]) -> list[SweepPoint]:
    """Settings no other beats on both false alarms and recall (one per distinct result, plus the live one),
    fewest false alarms first."""
    undominated, best_below = [], float("-inf")
    by_rate = sorted(points, key=lambda p: p.false_alarms_per_hour)
    for _, same_rate in itertools.groupby(by_rate, key=lambda p: p.false_alarms_per_hour):
        group = list(same_rate)
        top = max(p.recall_sum for p in group)
        undominated += [p for p in group if p.is_live_config or (p.recall_sum == top and top > best_below)]
        best_below = max(best_below, top)
    ranked = sorted(undominated,
                    key=lambda p: (p.false_alarms_per_hour, -p.recall_sum, p.latency_or_inf,
                                   -p.setting.enter_threshold))
    frontier, seen = [], set()
    for p in ranked:
        result = (p.false_alarms_per_hour, p.recall_sum)
        if p.is_live_config or result not in seen:
            frontier.append(p)
            seen.add(result)
    return frontier


def det_curves(points: Sequence[SweepPoint]) -> dict[str, list[SweepPoint]]:
    """Per fusion family, the settings no other setting of that family beats on both false alarms per hour and
    recall, fewest false alarms first: one DET-style curve per fusion."""
    families: dict[str, list[SweepPoint]] = {}
    for p in points:
        families.setdefault(p.setting.family, []).append(p)
    return {family: [p for p in pareto_frontier(members) if not p.is_live_config or not any(
        q is not p and q.false_alarms_per_hour <= p.false_alarms_per_hour and q.recall_sum >= p.recall_sum
        for q in members)] for family, members in sorted(families.items())}


def write_plot(points: Sequence[SweepPoint], chosen: SweepPoint | None, path: Path) -> bool:
    """Recall (>= 10 dB) against false alarms per hour, a panel per label, one curve per fusion family (its
    frontier over thresholds and k-of-n). False when matplotlib (train extra) is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed (train extra): no %s", path.name)
        return False
    curves = det_curves(points)
    fig, axes = plt.subplots(1, len(ALERT_LABELS), figsize=(7 * len(ALERT_LABELS), 5), sharey=True, squeeze=False)
    top = max((p.false_alarms_per_hour for p in points), default=0.0)
    ticks = [t for t in PLOT_TICKS if t <= max(top, PLOT_LINEAR_BELOW)]
    for ax, label in zip(axes[0], ALERT_LABELS, strict=True):
        for family, curve in curves.items():
            ax.plot([p.false_alarms_per_hour for p in curve], [p.recall_10db_up[label] or 0 for p in curve],
                    marker=".", label=family, drawstyle="steps-post")
        for point, style, name in ((next((p for p in points if p.is_live_config), None), "ks", "live config"),
                                   (chosen, "r*", "chosen")):
            if point is not None:
                ax.plot(point.false_alarms_per_hour, point.recall_10db_up[label] or 0, style, markersize=11,
                        label=name)
        ax.set_xscale("symlog", linthresh=PLOT_LINEAR_BELOW)
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_xlabel("false alarms per hour")
        ax.set_title(f"{label}: event recall at >= {MIN_SNR_DB:g} dB", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("event recall")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
