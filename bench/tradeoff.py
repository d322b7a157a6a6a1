"""Recall against false alarms per hour over the fusion / tracker settings, without running the models again.

The ours replay records, per window, the gate decision, each model's probabilities and the AudioSet voter
rows. Fusion and the event tracker are pure, so they are re-run over that record for every setting of
``enter_threshold`` x k-of-n x ``require_vote`` x models (both, or YAMNet alone). Re-running the live setting
must give the live events back (checked and reported): that proves the record is complete.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.config import FusionConfig
from monitor.constants import ALERT_LABELS, YAMNET_AUDIOSET_CLASSES
from monitor.progress import progress_bar

from .replay import STREAM_EPOCH, VOTER_ROWS, EventLog
from .score import DetectedEvent, ScoreSpec, TruthEvent, score_events

log = logging.getLogger(__name__)

ENTER_THRESHOLDS = tuple(round(0.30 + 0.05 * i, 2) for i in range(14))
"""0.30 ... 0.95."""
K_OF_N = ((1, 1), (2, 3), (2, 2), (3, 4), (3, 5))
REQUIRE_VOTE = (True, False)
BOTH_MODELS, YAMNET_ONLY = "yamnet+wav2vec2", "yamnet"
MIN_SNR_DB = 10.0
"""The recall bars are set for insertions at this SNR and cleaner."""
PLOT_LINEAR_BELOW = 0.05
"""The plot's x axis is linear below this many false alarms per hour (the bar), logarithmic above."""
PLOT_TICKS = (0.0, 0.05, 0.2, 1.0, 5.0, 20.0, 100.0, 500.0)
SWEEP_PROGRESS_S = 1.0


@dataclass(frozen=True, order=True)
class Setting:
    models: str
    require_vote: bool
    enter_threshold: float
    k_windows: int
    n_windows: int

    def fusion(self, live: FusionConfig) -> FusionConfig:
        return dataclasses.replace(live, enter_threshold=self.enter_threshold, require_vote=self.require_vote,
                                   exit_threshold=min(live.exit_threshold, self.enter_threshold),
                                   k_windows=self.k_windows, n_windows=self.n_windows)

    def describe(self) -> str:
        vote = "majority vote required" if self.require_vote else "no vote"
        return (f"models {self.models}, enter_threshold {self.enter_threshold:g}, {self.k_windows} of "
                f"{self.n_windows} windows, {vote}")


@dataclass(frozen=True)
class Targets:
    """The event bars a setting is judged against."""

    false_alarms_per_hour: float
    recall_10db_up: dict[str, float]
    latency_p95_s: float


@dataclass(frozen=True)
class SweepPoint:
    setting: Setting
    false_alarms_per_hour: float
    recall_10db_up: dict[str, float | None]
    recall: dict[str, float | None]
    latency_p95_s: float | None
    is_live_config: bool = False

    @property
    def recall_sum(self) -> float:
        return sum(v or 0.0 for v in self.recall_10db_up.values())

    @property
    def recall_worst(self) -> float:
        """Recall of the label detected worst: a setting deaf to one label is no default."""
        return min((v or 0.0 for v in self.recall_10db_up.values()), default=0.0)

    @property
    def latency_or_inf(self) -> float:
        return self.latency_p95_s if self.latency_p95_s is not None else float("inf")

    def meets(self, targets: Targets) -> bool:
        return (self.false_alarms_per_hour <= targets.false_alarms_per_hour
                and self.latency_or_inf <= targets.latency_p95_s
                and all((self.recall_10db_up.get(label) or 0.0) >= bar
                        for label, bar in targets.recall_10db_up.items()))

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self.setting), **{k: v for k, v in dataclasses.asdict(self).items()
                                                        if k != "setting"}}


def has_wav2vec2(record: dict[str, np.ndarray]) -> bool:
    return bool(np.any(~np.isnan(record["wav2vec2"])))


def fuse_record(record: dict[str, np.ndarray], fusion: FusionConfig,
                use_wav2vec2: bool = True) -> list[tuple[object, dict]]:
    """Per window: (fused window, or None when the gate skipped it; the model probabilities)."""
    from monitor.fusion import fuse_window

    audioset = np.zeros(YAMNET_AUDIOSET_CLASSES, np.float32)
    with_wav2vec2 = use_wav2vec2 and has_wav2vec2(record)
    fused = []
    for i, passed in enumerate(record["passed"].tolist()):
        if not passed:
            fused.append((None, {}))
            continue
        audioset[list(VOTER_ROWS)] = record["voters"][i]
        probs = {"yamnet": record["yamnet"][i]}
        if with_wav2vec2:
            probs["wav2vec2"] = record["wav2vec2"][i]
        fused.append((fuse_window(probs["yamnet"], probs.get("wav2vec2"), audioset, fusion), probs))
    return fused


def track_record(record: dict[str, np.ndarray], fused: list[tuple[object, dict]], fusion: FusionConfig,
                 versions: dict[str, str], device_id: str, stream_seconds: float) -> list[DetectedEvent]:
    """The event tracker over fused windows, stamped on the audio clock like the live run."""
    from monitor.events import EventTracker

    tracker = EventTracker(fusion, device_id, versions, STREAM_EPOCH)
    events = EventLog()
    for end_s, level, (window, probs) in zip(record["end_s"].tolist(), record["level_dbfs"].tolist(), fused,
                                            strict=True):
        for event in tracker.update(end_s, window, level, probs):
            events.record(end_s, event.to_payload())
    for event in tracker.finish(stream_seconds):
        events.record(stream_seconds, event.to_payload())
    return events.finish(stream_seconds)


def replay_tracker(record: dict[str, np.ndarray], fusion: FusionConfig, versions: dict[str, str], device_id: str,
                   stream_seconds: float, use_wav2vec2: bool = True) -> list[DetectedEvent]:
    """Fusion and the event tracker over recorded window scores: the events, without any model."""
    return track_record(record, fuse_record(record, fusion, use_wav2vec2), fusion, versions, device_id,
                        stream_seconds)


def live_setting(record: dict[str, np.ndarray], live: FusionConfig) -> Setting:
    return Setting(BOTH_MODELS if has_wav2vec2(record) else YAMNET_ONLY, live.require_vote, live.enter_threshold,
                   live.k_windows, live.n_windows)


def sweep(record: dict[str, np.ndarray], live: FusionConfig, versions: dict[str, str], device_id: str,
          truths: Sequence[TruthEvent], stream_seconds: float, score_spec: ScoreSpec,
          progress: bool = True) -> list[SweepPoint]:
    models = (BOTH_MODELS, YAMNET_ONLY) if has_wav2vec2(record) else (YAMNET_ONLY,)
    live_key = live_setting(record, live)
    settings = sorted({Setting(m, v, t, k, n) for m in models for v in REQUIRE_VOTE for t in ENTER_THRESHOLDS
                       for k, n in K_OF_N} | {live_key})
    points = []
    fused_key, fused = None, []
    for setting in progress_bar(settings, desc="threshold sweep", enabled=progress, mininterval=SWEEP_PROGRESS_S):
        fusion = setting.fusion(live)
        key = (setting.models, setting.require_vote, setting.enter_threshold)
        if key != fused_key:  # fusion does not depend on k-of-n: fuse once per (models, vote, threshold)
            fused_key, fused = key, fuse_record(record, fusion, setting.models == BOTH_MODELS)
        events = track_record(record, fused, fusion, versions, device_id, stream_seconds)
        score = score_events(truths, events, stream_seconds, score_spec)
        summary = score.to_dict()
        points.append(SweepPoint(
            setting=setting, false_alarms_per_hour=summary["false_alarms_per_hour"],
            recall_10db_up={label: score.recall(label, MIN_SNR_DB) for label in ALERT_LABELS},
            recall=summary["event_recall"], latency_p95_s=summary["latency_p95_s"],
            is_live_config=setting == live_key))
    return points


def _most_recall(points: Sequence[SweepPoint]) -> SweepPoint:
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
        return _most_recall(all_bars), (f"{len(all_bars)} settings meet every event bar; this one has the most "
                                        "recall, then the fewest false alarms")
    quiet = [p for p in not_worse if p.false_alarms_per_hour <= targets.false_alarms_per_hour and p.recall_worst > 0]
    if quiet:
        return _most_recall(quiet), (f"no setting meets every event bar; false alarms come first (a monitor that "
                                     f"cries wolf gets switched off), so the most recall among the {len(quiet)} "
                                     f"settings within {targets.false_alarms_per_hour:g} false alarms per hour")
    useful = [p for p in not_worse if p.recall_worst > 0]
    if useful:
        return _most_recall(useful), ("no setting that detects every label stays within the false-alarm bar; the "
                                      "most recall among the settings with no more false alarms than the baseline")
    best = min(points, key=lambda p: (p.false_alarms_per_hour, -p.recall_sum, p.latency_or_inf,
                                      -p.setting.enter_threshold))
    return best, ("no setting detects every label without more false alarms than the baseline: the fewest false "
                  "alarms")


def pareto_frontier(points: Sequence[SweepPoint]) -> list[SweepPoint]:
    """Settings no other beats on both false alarms and recall (one per distinct result, plus the live one),
    fewest false alarms first."""
    def dominated(p: SweepPoint) -> bool:
        return any(q.false_alarms_per_hour <= p.false_alarms_per_hour and q.recall_sum >= p.recall_sum
                   and (q.false_alarms_per_hour < p.false_alarms_per_hour or q.recall_sum > p.recall_sum)
                   for q in points)

    ranked = sorted((p for p in points if p.is_live_config or not dominated(p)),
                    key=lambda p: (p.false_alarms_per_hour, -p.recall_sum, p.latency_or_inf,
                                   -p.setting.enter_threshold))
    frontier, seen = [], set()
    for p in ranked:
        result = (p.false_alarms_per_hour, p.recall_sum)
        if p.is_live_config or result not in seen:
            frontier.append(p)
            seen.add(result)
    return frontier


def write_plot(points: Sequence[SweepPoint], chosen: SweepPoint | None, path: Path) -> bool:
    """Recall (>= 10 dB) against false alarms per hour: a row per (models, vote), a column per label, a curve
    per k-of-n over the thresholds. False when matplotlib (train extra) is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed (train extra): no %s", path.name)
        return False
    rows = sorted({(p.setting.models, p.setting.require_vote) for p in points})
    fig, axes = plt.subplots(len(rows), len(ALERT_LABELS), figsize=(6 * len(ALERT_LABELS), 4 * len(rows)),
                             sharey=True, squeeze=False)
    top = max((p.false_alarms_per_hour for p in points), default=0.0)
    ticks = [t for t in PLOT_TICKS if t <= max(top, PLOT_LINEAR_BELOW)]
    for row, (models, vote) in zip(axes, rows, strict=True):
        mine = [p for p in points if (p.setting.models, p.setting.require_vote) == (models, vote)]
        for ax, label in zip(row, ALERT_LABELS, strict=True):
            for k, n in sorted({(p.setting.k_windows, p.setting.n_windows) for p in mine}):
                curve = sorted((p for p in mine if (p.setting.k_windows, p.setting.n_windows) == (k, n)),
                               key=lambda p: p.setting.enter_threshold)
                ax.plot([p.false_alarms_per_hour for p in curve], [p.recall_10db_up[label] or 0 for p in curve],
                        marker=".", label=f"{k} of {n}")
            for point, style, name in ((next((p for p in mine if p.is_live_config), None), "ks", "live config"),
                                       (chosen if chosen in mine else None, "r*", "recommended")):
                if point is not None:
                    ax.plot(point.false_alarms_per_hour, point.recall_10db_up[label] or 0, style, markersize=10,
                            label=name)
            ax.set_xscale("symlog", linthresh=PLOT_LINEAR_BELOW)
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.set_xlabel("false alarms per hour")
            ax.set_title(f"{label}, recall >= {MIN_SNR_DB:g} dB ({models}, {'vote' if vote else 'no vote'})",
                         fontsize=10)
            ax.grid(alpha=0.3)
        row[0].set_ylabel("event recall")
        row[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
