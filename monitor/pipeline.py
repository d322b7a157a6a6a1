"""The whole flow in one place:

    capture -> window -> gate -> classify -> fuse -> events -> publish

Each stage is its own module; this file only wires them, times them and counts what happens.
Live capture and file replay feed the very same ``Pipeline``: only the source differs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from .capture import AudioBlock
from .classify import Classifiers
from .clips import ClipKeeper
from .config import Config
from .constants import SAMPLE_RATE
from .events import Event, EventTracker
from .fusion import FusedWindow, fuse_window
from .gate import Gate, GateDecision
from .health import StatusReporter, SystemdNotifier, status_line
from .preprocess import prepare_window
from .sinks import EventSink
from .wallclock import as_utc
from .windows import SlidingWindower, Window, hop_samples_from_seconds

log = logging.getLogger(__name__)

RECENT_EVENT_MESSAGES = 1000
"""Event messages kept in ``RunStats.events``: all of them for any clip or test replay, a bounded tail for a
daemon that runs for months."""

INFERENCE_TIMES_KEPT = 10_000
"""Inference times kept per model in ``RunStats.inference_ms``; when full, the older half is dropped."""


@dataclass
class WindowOutcome:
    """What happened to one window: for tests, benchmarks and the status message."""

    window: Window
    gate: GateDecision
    fused: FusedWindow | None
    model_probs: dict[str, np.ndarray]
    events: list[Event]


@dataclass
class RunStats:
    audio_seconds: float = 0.0
    windows: int = 0
    gated_windows: int = 0
    event_messages: int = 0
    """Every event message published in this run."""
    events: deque[dict] = field(default_factory=lambda: deque(maxlen=RECENT_EVENT_MESSAGES))
    """The most recent ``RECENT_EVENT_MESSAGES`` of them, oldest first."""
    inference_ms: dict[str, list[float]] = field(default_factory=dict)
    processing_seconds: float = 0.0

    @property
    def gate_pass_fraction(self) -> float:
        return self.gated_windows / self.windows if self.windows else 0.0

    def mean_inference_ms(self) -> dict[str, float]:
        return {model: float(np.mean(times)) for model, times in self.inference_ms.items() if times}


class Pipeline:
    """Windows, gates, classifies and fuses audio blocks, and hands events to a sink."""

    def __init__(self, cfg: Config, classifiers: Classifiers, sink: EventSink,
                 stream_start_wall: datetime | None = None,
                 on_window: Callable[[WindowOutcome], None] | None = None,
                 heartbeat: Callable[[], None] | None = None,
                 reporter: StatusReporter | None = None,
                 notifier: SystemdNotifier | None = None,
                 refresh_status: Callable[[StatusReporter], None] | None = None,
                 clips: ClipKeeper | None = None):
        self.cfg = cfg
        self.classifiers = classifiers
        self.sink = sink
        self.on_window = on_window
        self.heartbeat = heartbeat
        self.reporter = reporter or StatusReporter(cfg.health)
        self.notifier = notifier
        self.refresh_status = refresh_status
        self.clips = clips
        self.windower = SlidingWindower(hop_samples_from_seconds(cfg.window.hop_seconds))
        self.gate = Gate(cfg.gate)
        self.tracker = EventTracker(cfg.fusion, cfg.device_id, classifiers.versions,
                                    stream_start_wall or datetime.now(timezone.utc))
        self.stats = RunStats()

    # --- the flow ------------------------------------------------------------------------------

    def run(self, source: Iterable[AudioBlock], stop: threading.Event | None = None) -> RunStats:
        started = time.perf_counter()
        try:
            for block in source:
                self.process_block(block)
                if stop is not None and stop.is_set():
                    break
        finally:
            self.finish()
            self.stats.processing_seconds += time.perf_counter() - started
        return self.stats

    def process_block(self, block: AudioBlock) -> list[WindowOutcome]:
        if block.heard_at is not None:
            self.tracker.heard_at(block.start_seconds, as_utc(block.heard_at))
        self.stats.audio_seconds += block.samples.size / SAMPLE_RATE
        if self.clips is not None:
            self.clips.hear(block.samples)
        self.reporter.record_block(block.samples, self.stats.audio_seconds)
        outcomes = [self.process_window(window) for window in self.windower.push(block.samples)]
        self.idle()
        return outcomes

    def idle(self) -> None:
        """Called after each block and, by a microphone source, while no audio arrives: the watchdog
        keeps being fed only while this loop runs, and a mic outage still gets its status message."""
        if self.heartbeat is not None:
            self.heartbeat()
        if self.reporter.due():
            self.publish_status()

    def process_window(self, window: Window) -> WindowOutcome:
        decision = self.gate.assess(window)
        self.stats.windows += 1
        self.reporter.record_window(decision.passed)
        fused, model_probs = None, {}
        if decision.passed:
            self.stats.gated_windows += 1
            model_probs, audioset = self.classify(window)
            fused = fuse_window(model_probs["yamnet"], model_probs.get("wav2vec2"), audioset, self.cfg.fusion)
        events = self.tracker.update(window.end_seconds, fused, decision.level_dbfs, model_probs)
        self.publish(events)
        outcome = WindowOutcome(window, decision, fused, model_probs, events)
        if self.on_window is not None:
            self.on_window(outcome)
        return outcome

    def classify(self, window: Window) -> tuple[dict[str, np.ndarray], np.ndarray]:
        prepared = prepare_window(window.samples, self.cfg.preprocess)[None]
        t0 = time.perf_counter()
        yamnet_probs, audioset = self.classifiers.yamnet.predict(prepared)
        self._record_time("yamnet", t0)
        probs = {"yamnet": yamnet_probs[0]}
        if self.classifiers.wav2vec2 is not None:
            t0 = time.perf_counter()
            probs["wav2vec2"] = self.classifiers.wav2vec2.predict(prepared)[0]
            self._record_time("wav2vec2", t0)
        return probs, audioset[0]

    def publish(self, events: list[Event]) -> None:
        for event in events:
            payload = event.to_payload()
            if self.clips is not None:
                self.clips.on_event(payload)
            self.stats.event_messages += 1
            self.stats.events.append(payload)
            self.reporter.record_events()
            log.info("event %s %s %s conf=%.2f", payload["phase"], payload["label"], payload["event_id"],
                     payload["confidence"])
            self.sink.handle_event(payload)
            if self.clips is not None:
                self.clips.after_sent(payload)

    def finish(self) -> None:
        """End open events at the current audio time (shutdown or end of replay)."""
        self.publish(self.tracker.finish(self.stats.audio_seconds))

    # --- bookkeeping ---------------------------------------------------------------------------

    def _record_time(self, model: str, t0: float) -> None:
        milliseconds = (time.perf_counter() - t0) * 1000.0
        self.reporter.record_inference(model, milliseconds)
        times = self.stats.inference_ms.setdefault(model, [])
        times.append(milliseconds)
        if len(times) > INFERENCE_TIMES_KEPT:  # bounded: keep the recent half for means over long runs
            del times[:INFERENCE_TIMES_KEPT // 2]

    def publish_status(self) -> None:
        if self.refresh_status is not None:
            self.refresh_status(self.reporter)
        status = self.reporter.snapshot()
        if self.notifier is not None:
            self.notifier.status(status_line(status))
        try:
            self.sink.publish_status(status)
        except Exception:  # a status message must never stop the audio loop
            log.exception("publishing the status message failed")
