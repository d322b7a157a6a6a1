"""Recall against false alarms per hour over the tracker's thresholds, without running the models again.

The ours replay records, per window, the gate decision, each model's probabilities and the AudioSet voter
rows. Fusion and the event tracker are pure, so they are re-run over that record for every setting of
``enter_threshold`` x k-of-n; re-running the live setting must give the live events back (checked and
reported), which proves the record is complete.
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

from .replay import STREAM_EPOCH, VOTER_ROWS, EventLog
from .score import DetectedEvent, ScoreSpec, TruthEvent, score_events

log = logging.getLogger(__name__)

ENTER_THRESHOLDS = tuple(round(0.30 + 0.05 * i, 2) for i in range(14))
"""0.30 ... 0.95."""
K_OF_N = ((1, 1), (2, 3), (2, 2), (3, 4), (3, 5))
MIN_SNR_DB = 10.0
"""The recall bars are set for insertions at this SNR and cleaner."""
PLOT_LINEAR_BELOW = 0.05
"""The plot's x axis is linear below this many false alarms per hour (the bar), logarithmic above."""
PLOT_TICKS = (0.0, 0.05, 0.2, 1.0, 5.0, 20.0, 100.0, 500.0)


@dataclass(frozen=True)
class SweepPoint:
    enter_threshold: float
    k_windows: int
    n_windows: int
    false_alarms_per_hour: float
    recall_10db_up: dict[str, float | None]
    recall: dict[str, float | None]
    latency_p95_s: float | None
    is_live_config: bool = False

    @property
    def recall_sum(self) -> float:
        return sum(v or 0.0 for v in self.recall_10db_up.values())

    @property
    def latency_or_inf(self) -> float:
        return self.latency_p95_s if self.latency_p95_s is not None else float("inf")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def fuse_record(record: dict[str, np.ndarray], fusion: FusionConfig) -> list[tuple[object, dict]]:
    """Per window: (fused window or None when the gate skipped it, the model probabilities)."""
    from monitor.fusion import fuse_window

    audioset = np.zeros(YAMNET_AUDIOSET_CLASSES, np.float32)
    has_wav2vec2 = bool(np.any(~np.isnan(record["wav2vec2"])))
    fused = []
    for i, passed in enumerate(record["passed"].tolist()):
        if not passed:
            fused.append((None, {}))
            continue
        audioset[list(VOTER_ROWS)] = record["voters"][i]
        probs = {"yamnet": record["yamnet"][i]}
        if has_wav2vec2:
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
                   stream_seconds: float) -> list[DetectedEvent]:
    """Fusion and the event tracker over recorded window scores: the events, without any model."""
    return track_record(record, fuse_record(record, fusion), fusion, versions, device_id, stream_seconds)


def _variant(live: FusionConfig, enter: float, k: int, n: int) -> FusionConfig:
    return dataclasses.replace(live, enter_threshold=enter, exit_threshold=min(live.exit_threshold, enter),
                               k_windows=k, n_windows=n)


def sweep(record: dict[str, np.ndarray], live: FusionConfig, versions: dict[str, str], device_id: str,
          truths: Sequence[TruthEvent], stream_seconds: float, score_spec: ScoreSpec,
          progress: bool = True) -> list[SweepPoint]:
    from tqdm import tqdm

    live_key = (live.enter_threshold, live.k_windows, live.n_windows)
    settings = sorted({(t, k, n) for t in ENTER_THRESHOLDS for k, n in K_OF_N} | {live_key})
    points = []
    fused_by_enter: dict[float, list] = {}
    for enter, k, n in tqdm(settings, desc="threshold sweep", disable=not progress):
        fusion = _variant(live, enter, k, n)
        if enter not in fused_by_enter:  # fusion depends on the threshold only, not on k-of-n
            fused_by_enter = {enter: fuse_record(record, fusion)}
        events = track_record(record, fused_by_enter[enter], fusion, versions, device_id, stream_seconds)
        score = score_events(truths, events, stream_seconds, score_spec)
        summary = score.to_dict()
        points.append(SweepPoint(
            enter_threshold=enter, k_windows=k, n_windows=n, false_alarms_per_hour=summary["false_alarms_per_hour"],
            recall_10db_up={label: score.recall(label, MIN_SNR_DB) for label in ALERT_LABELS},
            recall=summary["event_recall"], latency_p95_s=summary["latency_p95_s"],
            is_live_config=(enter, k, n) == live_key))
    return points


def recommend(points: Sequence[SweepPoint], fa_bar: float,
              baseline_fa_per_hour: float | None) -> tuple[SweepPoint | None, str]:
    """The setting to ship: the most recall at >= 10 dB among those within the false-alarm bar (and not above
    the baseline's rate); when none is, the fewest alarms, then the most recall."""
    within = [p for p in points if p.false_alarms_per_hour <= fa_bar
              and (baseline_fa_per_hour is None or p.false_alarms_per_hour <= baseline_fa_per_hour)]
    if within:
        best = max(within, key=lambda p: (p.recall_sum, -p.false_alarms_per_hour, -p.latency_or_inf,
                                          p.enter_threshold))
        return best, (f"highest recall at >= {MIN_SNR_DB:g} dB among the {len(within)} settings with at most "
                      f"{fa_bar:g} false alarms per hour; ties go to fewer alarms, then lower latency")
    if not points:
        return None, "no sweep points"
    best = min(points, key=lambda p: (p.false_alarms_per_hour, -p.recall_sum, p.latency_or_inf))
    return best, (f"no setting reaches {fa_bar:g} false alarms per hour, so the one with the fewest alarms, "
                  "then the most recall")


def pareto_frontier(points: Sequence[SweepPoint]) -> list[SweepPoint]:
    """Settings no other beats on both false alarms and recall (plus the live one), fewest alarms first."""
    def dominated(p: SweepPoint) -> bool:
        return any(q.false_alarms_per_hour <= p.false_alarms_per_hour and q.recall_sum >= p.recall_sum
                   and (q.false_alarms_per_hour < p.false_alarms_per_hour or q.recall_sum > p.recall_sum)
                   for q in points)

    frontier = [p for p in points if p.is_live_config or not dominated(p)]
    return sorted(frontier, key=lambda p: (p.false_alarms_per_hour, -p.recall_sum, p.enter_threshold))


def write_plot(points: Sequence[SweepPoint], chosen: SweepPoint | None, path: Path) -> bool:
    """Recall (>= 10 dB) against false alarms per hour, one curve per k-of-n; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed (train extra): no %s", path.name)
        return False
    fig, axes = plt.subplots(1, len(ALERT_LABELS), figsize=(6 * len(ALERT_LABELS), 4.5), sharey=True, squeeze=False)
    live = next((p for p in points if p.is_live_config), None)
    for ax, label in zip(axes[0], ALERT_LABELS, strict=True):
        for k, n in sorted({(p.k_windows, p.n_windows) for p in points}):
            curve = sorted((p for p in points if (p.k_windows, p.n_windows) == (k, n)), key=lambda p: p.enter_threshold)
            ax.plot([p.false_alarms_per_hour for p in curve], [p.recall_10db_up[label] or 0 for p in curve],
                    marker=".", label=f"{k} of {n}")
        for point, style, name in ((live, "ks", "live config"), (chosen, "r*", "recommended")):
            if point is not None:
                ax.plot(point.false_alarms_per_hour, point.recall_10db_up[label] or 0, style, markersize=10,
                        label=name)
        ax.set_xscale("symlog", linthresh=PLOT_LINEAR_BELOW)
        top = max((p.false_alarms_per_hour for p in points), default=0.0)
        ticks = [t for t in PLOT_TICKS if t <= max(top, PLOT_LINEAR_BELOW)]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_xlabel("false alarms per hour")
        ax.set_title(f"{label}: event recall at >= {MIN_SNR_DB:g} dB SNR")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("event recall")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
