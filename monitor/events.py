"""Turns fused windows into alert events (start / update / end), one state machine per alert label.

Per label:
- a *hit* is a window whose ``alert_label`` is that label; a *miss* is a window whose fused
  probability for the label is below ``exit_threshold``, or one the gate skipped;
- ``k_windows`` hits among the last ``n_windows`` windows open a candidate; a miss re-arms the
  count (it starts again from zero), and so does opening a candidate;
- while open, every window >= ``exit_threshold`` keeps the event alive (hysteresis);
- the candidate is published (phase ``start``) once it lasts ``min_duration_seconds``; then an
  ``update`` every ``update_interval_seconds``; ``end`` after ``hold_seconds`` with no window
  >= ``exit_threshold``, after which the label is quiet for ``cooldown_seconds``.

Across labels, a second way in for a cry that lasts but never reaches the enter thresholds
(``fusion.sustained_seconds``): while no event is open, ``sustained_windows`` windows of the last
``sustained_seconds`` (the current one among them) with Crying + Screaming at ``sustained_threshold`` and no
AudioSet veto open a candidate of the likelier label over them, which then lives and ends like any other.

Times are the audio clock (seconds since the stream started); wall-clock times in the payload are
mapped from it through the capture's wall-time stamps (``monitor.wallclock``), so they are the times the
audio was heard even after a microphone outage, and a replay without stamps yields the same events at
any speed (``stream_start_wall + audio seconds``).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .config import FusionConfig, require_resolved
from .constants import ALERT_LABELS, ALERT_ON_SUM, EVENT_SCHEMA, LABELS, WINDOW_SECONDS
from .fusion import ALERT_ROWS, MODEL_NAMES, FusedWindow, as_probabilities
from .wallclock import WallClockMap

log = logging.getLogger(__name__)

EVENT_SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "event.schema.json"

PHASE_START = "start"
PHASE_UPDATE = "update"
PHASE_END = "end"
STREAM_FINISHED = "stream finished"
"""Why events still open at shutdown or at the end of a replay end."""

SCORE_DECIMALS = 4
SECONDS_DECIMALS = 3
LEVEL_DECIMALS = 1


def new_event_id() -> str:
    return uuid.uuid4().hex


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z suffix."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Stats:
    """Peak and mean of a series (fused scores, one model's scores or window levels)."""

    peak: float
    mean: float

    def to_payload(self, decimals: int = SCORE_DECIMALS) -> dict[str, float]:
        return {"peak": round(self.peak, decimals), "mean": round(self.mean, decimals)}


@dataclass
class _RunningStats:
    count: int = 0
    total: float = 0.0
    peak: float = -math.inf

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.peak = max(self.peak, value)

    def snapshot(self) -> Stats:
        return Stats(peak=self.peak, mean=self.total / self.count)


@dataclass(frozen=True)
class Event:
    """One published message of an event; ``to_payload`` is the wire format (event.schema.json)."""

    event_id: str
    phase: str
    seq: int
    label: str
    device_id: str
    time_audio_s: float
    """Audio time of the window that produced this message."""
    start_audio_s: float
    last_active_audio_s: float
    """End of the last window at or above exit_threshold: the event's end once it has ended."""
    score: Stats
    models: dict[str, Stats]
    level_dbfs: Stats
    model_versions: dict[str, str]
    reason: str
    time_wall: datetime
    """Wall time at which the audio of ``time_audio_s`` was heard; likewise the two below."""
    start_wall: datetime
    last_active_wall: datetime

    @property
    def message_id(self) -> str:
        return f"{self.event_id}:{self.seq}"

    @property
    def ended(self) -> bool:
        return self.phase == PHASE_END

    @property
    def end_audio_s(self) -> float | None:
        return self.last_active_audio_s if self.ended else None

    @property
    def duration_s(self) -> float:
        return self.last_active_audio_s - self.start_audio_s

    def to_payload(self) -> dict:
        end = self.end_audio_s
        return {
            "schema": EVENT_SCHEMA,
            "message_id": self.message_id,
            "event_id": self.event_id,
            "phase": self.phase,
            "seq": self.seq,
            "label": self.label,
            "confidence": round(self.score.peak, SCORE_DECIMALS),
            "device_id": self.device_id,
            "time": iso_utc(self.time_wall),
            "start_time": iso_utc(self.start_wall),
            "end_time": None if end is None else iso_utc(self.last_active_wall),
            "start_audio_s": round(self.start_audio_s, SECONDS_DECIMALS),
            "end_audio_s": None if end is None else round(end, SECONDS_DECIMALS),
            "duration_s": round(self.duration_s, SECONDS_DECIMALS),
            "score": self.score.to_payload(),
            "models": {name: stats.to_payload() for name, stats in self.models.items()},
            "level_dbfs": self.level_dbfs.to_payload(LEVEL_DECIMALS),
            "model_versions": dict(self.model_versions),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class _Evidence:
    """What one window says about one label."""

    end_s: float
    score: float
    hit: bool
    level_dbfs: float
    model_scores: dict[str, float]
    votes: dict[str, str]
    alert_score: float = 0.0
    """Fused probability of any alert label (Crying + Screaming): what keeps one episode alive."""


@dataclass
class _OpenEvent:
    event_id: str
    start_s: float
    last_active_s: float
    reason: str
    score: _RunningStats = field(default_factory=_RunningStats)
    level: _RunningStats = field(default_factory=_RunningStats)
    models: dict[str, _RunningStats] = field(default_factory=dict)
    published: bool = False
    next_seq: int = 0
    last_published_s: float = -math.inf

    def absorb(self, evidence: _Evidence) -> None:
        self.last_active_s = max(self.last_active_s, evidence.end_s)
        self.score.add(evidence.score)
        self.level.add(evidence.level_dbfs)
        for name, value in evidence.model_scores.items():
            self.models.setdefault(name, _RunningStats()).add(value)

    @property
    def duration_s(self) -> float:
        return self.last_active_s - self.start_s


@dataclass
class _LabelTrack:
    label: str
    recent: deque
    open: _OpenEvent | None = None
    quiet_until_s: float = -math.inf
    """Cooldown: no new event of this label starts before this audio time."""


class EventTracker:
    """Stateful: feed every window in stream order (``fused=None`` for the ones the gate skipped)."""

    def __init__(self, cfg: FusionConfig, device_id: str, model_versions: dict[str, str],
                 stream_start_wall: datetime, id_factory: Callable[[], str] = new_event_id):
        require_resolved(cfg)
        if cfg.k_windows > cfg.n_windows:
            raise ValueError(f"k_windows ({cfg.k_windows}) must not exceed n_windows ({cfg.n_windows})")
        self.cfg = cfg
        self.device_id = device_id
        self.model_versions = dict(model_versions)
        self.wall_clock = WallClockMap(stream_start_wall)
        self._new_id = id_factory
        self._tracks = [_LabelTrack(label, deque(maxlen=cfg.n_windows)) for label in ALERT_LABELS]
        self._sustained: deque[tuple[float, np.ndarray]] = deque()
        """(end time, each alert label's fused probability) of the recent windows that count towards a sustained
        cry, oldest first."""
        self._last_time = -math.inf

    def heard_at(self, audio_seconds: float, wall: datetime) -> None:
        """The capture's stamp: the audio at ``audio_seconds`` was heard at ``wall`` (see monitor.wallclock)."""
        self.wall_clock.anchor(audio_seconds, wall)

    @property
    def idle(self) -> bool:
        """No event open and no hit waiting in a k-of-n count: a window that is a hit for no label and does not count
        towards a sustained cry (``fusion.sustained_windows``) then changes nothing (it only feeds counts that hold no
        hit; the sustained count forgets by time), so a replay over recorded scores may skip it."""
        return all(t.open is None and not any(e.hit for e in t.recent) for t in self._tracks)

    @property
    def open_labels(self) -> list[str]:
        """Labels with a published, not yet ended event."""
        return [t.label for t in self._tracks if t.open is not None and t.open.published]

    def update(self, window_end_seconds: float, fused: FusedWindow | None, level_dbfs: float,
               model_probs: dict[str, np.ndarray] | None = None) -> list[Event]:
        """One window -> the messages it causes (usually none), in ALERT_LABELS order (a sustained cry's start,
        which needs every label idle, last)."""
        if not math.isfinite(level_dbfs):
            raise ValueError(f"window level must be a finite dBFS value, got {level_dbfs}")
        now = self._advance_clock(window_end_seconds)
        model_probs = self._checked_model_probs(model_probs or {}) if fused is not None else {}
        events = []
        for track in self._tracks:
            evidence = None if fused is None else _evidence(track.label, now, fused, level_dbfs, model_probs)
            if track.open is None and self._another_episode_open(track):
                track.recent.clear()  # one alert per episode: a scream turning into sobbing is not two alarms
                continue
            events.extend(self._step(track, now, evidence))
        sustained = self._sustained_track(now, fused)
        if sustained is not None:
            track, start_s = sustained
            self._open(track, [_evidence(track.label, now, fused, level_dbfs, model_probs)],
                       f"sustained: {self.cfg.sustained_windows}+ windows of the last {self.cfg.sustained_seconds:g} s "
                       f">= {self.cfg.sustained_threshold:.2f} (Crying + Screaming)", start_s)
            events.extend(self._publish_due(track, now))
        return events

    def _sustained_track(self, now: float, fused: FusedWindow | None) -> tuple[_LabelTrack, float] | None:
        """The sustained-cry path: count this window if it qualifies; when enough did, no event is open and the
        likelier label is not cooling down, that label's track and where the counted audio began (the count then
        starts again)."""
        cfg = self.cfg
        if not cfg.sustained:
            return None
        if any(t.open is not None for t in self._tracks):
            self._sustained.clear()  # counts only what was heard since the last alarm: an episode's own windows
            return None  # must not start a second alarm just after it
        while self._sustained and self._sustained[0][0] <= now - cfg.sustained_seconds:
            self._sustained.popleft()
        if fused is None or not fused.sustained:
            return None
        self._sustained.append((now, fused.probs[ALERT_ROWS]))
        if len(self._sustained) < cfg.sustained_windows:
            return None
        track = self._tracks[int(np.argmax(np.sum([probs for _, probs in self._sustained], axis=0)))]
        if now < track.quiet_until_s:
            return None
        start_s = self._sustained[0][0] - WINDOW_SECONDS
        self._sustained.clear()
        return track, start_s

    def _another_episode_open(self, track: _LabelTrack) -> bool:
        return self.cfg.one_episode_at_a_time and any(
            other.open is not None and other.open.published for other in self._tracks if other is not track)

    def finish(self, now_seconds: float, why: str = STREAM_FINISHED) -> list[Event]:
        """End every published event (shutdown, end of replay, a microphone gone); unpublished candidates are
        dropped, and no k-of-n count survives."""
        now = self._advance_clock(now_seconds)
        events = []
        for track in self._tracks:
            if track.open is not None and track.open.published:
                events.append(self._end(track, now, why))
            track.open = None
            track.recent.clear()
        return events

    # --- state machine ---

    def _step(self, track: _LabelTrack, now: float, evidence: _Evidence | None) -> list[Event]:
        keeps_episode = self.cfg.one_episode_at_a_time and track.open is not None and evidence is not None
        episode_score = evidence.alert_score if keeps_episode else 0.0
        sustained = evidence is not None and max(evidence.score, episode_score) >= self.cfg.exit_threshold
        if track.open is None:
            if not self._arm(track, now, evidence if sustained else None):
                return []
        elif sustained:
            track.open.absorb(evidence)
        elif now - track.open.last_active_s >= self.cfg.hold_seconds:
            if not track.open.published:
                log.debug("%s candidate %s dropped after %.2f s (< min_duration)", track.label,
                          track.open.event_id, track.open.duration_s)
                track.open = None
                return []
            return [self._end(track, now, f"no window >= {self.cfg.exit_threshold:.2f} "
                                          f"for {self.cfg.hold_seconds:g} s")]
        return self._publish_due(track, now)

    def _arm(self, track: _LabelTrack, now: float, evidence: _Evidence | None) -> bool:
        """k-of-n counting while idle; True when a candidate was opened by this window."""
        if evidence is None or now < track.quiet_until_s:
            track.recent.clear()
            return False
        track.recent.append(evidence)
        hits = [e for e in track.recent if e.hit]
        if len(hits) < self.cfg.k_windows:
            return False
        first = next(i for i, e in enumerate(track.recent) if e.hit)
        windows = list(track.recent)[first:]
        votes = " ".join(f"{voter}={label}" for voter, label in hits[-1].votes.items())
        summed = " (Crying + Screaming)" if self.cfg.alert_on == ALERT_ON_SUM else ""
        reason = (f"{len(hits)}/{self.cfg.n_windows} windows >= {self.cfg.enter_threshold_of(track.label):.2f}"
                  f"{summed}; votes {votes}")
        self._open(track, windows, reason)
        return True

    def _open(self, track: _LabelTrack, windows: list[_Evidence], reason: str, start_s: float | None = None) -> None:
        """A candidate event of ``track`` from ``windows`` (oldest first), starting with the first window's audio
        unless ``start_s`` says earlier; no k-of-n count survives it."""
        first = windows[0].end_s - WINDOW_SECONDS
        candidate = _OpenEvent(event_id=self._new_id(), start_s=first if start_s is None else min(start_s, first),
                               last_active_s=windows[0].end_s, reason=reason)
        for window in windows:
            candidate.absorb(window)
        track.open = candidate
        track.recent.clear()

    def _publish_due(self, track: _LabelTrack, now: float) -> list[Event]:
        event = track.open
        if not event.published:
            if event.duration_s + 1e-9 < self.cfg.min_duration_seconds:
                return []
            event.published = True
            return [self._message(track, now, PHASE_START, event.reason)]
        if now - event.last_published_s >= self.cfg.update_interval_seconds:
            return [self._message(track, now, PHASE_UPDATE, event.reason)]
        return []

    def _end(self, track: _LabelTrack, now: float, why: str) -> Event:
        message = self._message(track, now, PHASE_END, f"{track.open.reason}; ended: {why}")
        track.open = None
        track.recent.clear()
        track.quiet_until_s = now + self.cfg.cooldown_seconds
        return message

    def _message(self, track: _LabelTrack, now: float, phase: str, reason: str) -> Event:
        event = track.open
        start_s = max(0.0, event.start_s)
        wall_at = self.wall_clock.wall_at
        message = Event(
            event_id=event.event_id, phase=phase, seq=event.next_seq, label=track.label,
            device_id=self.device_id, time_audio_s=now,
            start_audio_s=start_s, last_active_audio_s=event.last_active_s,
            score=event.score.snapshot(), models={n: s.snapshot() for n, s in event.models.items()},
            level_dbfs=event.level.snapshot(), model_versions=self.model_versions, reason=reason,
            time_wall=wall_at(now), start_wall=wall_at(start_s), last_active_wall=wall_at(event.last_active_s))
        event.next_seq += 1
        event.last_published_s = now
        log.debug("event %s %s %s seq=%s score=%.2f", phase, track.label, event.event_id, message.seq,
                 message.score.peak)
        return message

    # --- input checks ---

    def _advance_clock(self, seconds: float) -> float:
        seconds = float(seconds)
        if not math.isfinite(seconds) or seconds < self._last_time:
            raise ValueError(f"audio time must be finite and never go backwards: got {seconds} after "
                             f"{self._last_time}")
        self._last_time = seconds
        return seconds

    @staticmethod
    def _checked_model_probs(model_probs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        unknown = set(model_probs) - set(MODEL_NAMES)
        if unknown:
            raise ValueError(f"unknown model name(s) {', '.join(sorted(unknown))}; expected {', '.join(MODEL_NAMES)}")
        return {name: as_probabilities(name, probs) for name, probs in model_probs.items()}


def _evidence(label: str, now: float, fused: FusedWindow, level_dbfs: float,
              model_probs: dict[str, np.ndarray]) -> _Evidence:
    index = LABELS.index(label)
    return _Evidence(end_s=now, score=fused.score_of(label), hit=fused.alert_label == label,
                     level_dbfs=float(level_dbfs), model_scores={n: float(p[index]) for n, p in model_probs.items()},
                     votes=dict(fused.votes), alert_score=fused.alert_mass)
