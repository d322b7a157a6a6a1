"""The whole flow in one place:

    capture -> window -> gate -> classify (or carry over) -> smooth -> fuse -> events -> publish

Each stage is its own module; this file only wires them, times them and counts what happens.
Live capture and file replay feed the very same ``Pipeline``: only the source differs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from .capture import AudioBlock
from .carry import CarryOver
from .classify import Classifiers, predict_windows
from .clips import ClipKeeper
from .config import Config
from .constants import SAMPLE_RATE
from .counters import RunStats
from .events import Event, EventTracker
from .fusion import FusedWindow, fuse_window, wav2vec2_decisive_from
from .gate import Gate, GateDecision
from .health import StatusReporter, SystemdNotifier, status_line
from .sinks import EventSink
from .smoothing import ProbabilitySmoother
from .wallclock import as_utc
from .windows import SlidingWindower, Window, hop_samples_from_seconds

log = logging.getLogger(__name__)

NO_AUDIO_REASON = "no audio from the microphone"


@dataclass
class WindowOutcome:
    """What happened to one window: for tests, benchmarks and the status message."""

    window: Window
    gate: GateDecision
    fused: FusedWindow | None
    model_probs: dict[str, np.ndarray]
    events: list[Event]


class Pipeline:
    """Windows, gates, classifies and fuses audio blocks, and hands events to a sink."""

    def __init__(self, cfg: Config, classifiers: Classifiers, sink: EventSink,
                 stream_start_wall: datetime | None = None,
                 on_window: Callable[[WindowOutcome], None] | None = None,
                 heartbeat: Callable[[], None] | None = None,
                 reporter: StatusReporter | None = None,
                 notifier: SystemdNotifier | None = None,
                 refresh_status: Callable[[StatusReporter], None] | None = None,
                 clips: ClipKeeper | None = None, clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.classifiers = classifiers
        self.sink = sink
        self.on_window = on_window
        self.heartbeat = heartbeat
        self.reporter = reporter or StatusReporter(cfg.health)
        self.notifier = notifier
        self.refresh_status = refresh_status
        self.fusion = classifiers.resolve_fusion(cfg.fusion)
        self.wav2vec2_from = wav2vec2_decisive_from(self.fusion) if cfg.models.wav2vec2_cascade else float("-inf")
        """YAMNet alert probability from which Wav2Vec2 runs (the cascade); -inf: on every gated window."""
        self.clips = clips
        self.windower = SlidingWindower(hop_samples_from_seconds(cfg.window.hop_seconds))
        self.gate = Gate(cfg.gate)
        self.carry = CarryOver(cfg.models, self.windower.hop_samples)
        self.smoother = ProbabilitySmoother(self.fusion.smooth_windows)
        self.tracker = EventTracker(self.fusion, cfg.device_id, classifiers.versions,
                                    stream_start_wall or datetime.now(timezone.utc))
        self.stats: RunStats = self.reporter.run
        """The one counter of this run, shared with the status reporter."""
        self._clock = clock
        self._last_audio_at: float | None = None
        """``clock()`` when the last block arrived: how long the microphone has been silent."""

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
        if block.discontinuity:
            self.restart_stream(block.start_seconds)
        self._last_audio_at = self._clock()
        if block.heard_at is not None:
            self.tracker.heard_at(block.start_seconds, as_utc(block.heard_at))
        self.stats.audio_seconds += block.samples.size / SAMPLE_RATE
        if self.clips is not None:
            self.clips.hear(block.samples)
        self.reporter.record_block(block.samples)
        outcomes = [self.process_window(window) for window in self.windower.push(block.samples)]
        self.idle()
        return outcomes

    def restart_stream(self, start_seconds: float) -> None:
        """The next block does not continue the previous one (a new replay file, a reopened microphone,
        dropped capture blocks): no window may join the two, and the gate forgets the room, since another
        recording, device or gain makes the old noise floor wrong (a floor learnt on a louder room would
        hide a quieter cry; the gate's warm-up passes every audible frame, so forgetting costs model
        calls, never a missed cry). The smoothing starts afresh too: no mean spans the two. The event
        tracker is kept: it runs on the audio clock, which does not jump, and a cry that spans a short gap
        stays one event instead of alerting twice."""
        self.windower.reset(start_seconds)
        self.gate.reset()
        self.carry.reset()
        self.smoother.reset()

    def idle(self) -> None:
        """Called after each block and, by a microphone source, while no audio arrives: the watchdog
        keeps being fed only while this loop runs, and a mic outage still gets its status message."""
        if self.heartbeat is not None:
            self.heartbeat()
        self.end_events_without_audio()
        if self.reporter.due():
            self.publish_status()

    def end_events_without_audio(self) -> None:
        """A microphone gone mid-cry must not leave its alarm on forever (the audio clock, which ends events,
        stops with it): once no audio has come for ``hold_seconds``, as long as an event outlives its last
        alerting window, open events end, at the audio last heard, saying why. The health message
        meanwhile says the microphone is in error; a cry heard after it returns is a new event."""
        if self._last_audio_at is None or not self.tracker.open_labels:
            return
        silent = self._clock() - self._last_audio_at
        if silent >= self.fusion.hold_seconds:
            self.publish(self.tracker.finish(self.stats.audio_seconds,
                                             f"{NO_AUDIO_REASON} for {silent:.0f} s"))

    def process_window(self, window: Window) -> WindowOutcome:
        decision = self.gate.assess(window)
        self.stats.record_window(decision.passed)
        fused, model_probs = None, {}
        if decision.passed:
            model_probs, audioset = self.classify(window, decision.level_dbfs)
            smoothed = self.smoother.push(model_probs)
            fused = fuse_window(smoothed["yamnet"], smoothed.get("wav2vec2"), audioset, self.fusion)
            if fused.vetoed_by is not None:
                self.stats.vetoed[fused.vetoed_by] = self.stats.vetoed.get(fused.vetoed_by, 0) + 1
        else:
            self.carry.reset()
            self.smoother.push(None)
        events = self.tracker.update(window.end_seconds, fused, decision.level_dbfs, model_probs)
        self.publish(events)
        outcome = WindowOutcome(window, decision, fused, model_probs, events)
        if self.on_window is not None:
            self.on_window(outcome)
        return outcome

    def classify(self, window: Window, level_dbfs: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(model probabilities, AudioSet scores): the previous window's where ``CarryOver`` allows, else the models."""
        carried = self.carry.outputs_for(window, level_dbfs)
        if carried is not None:
            self.stats.carried_windows += 1
            return carried
        predictions = predict_windows(self.classifiers, window.samples[None], self.cfg, self.stats.record_inference,
                                      wav2vec2_from=self.wav2vec2_from)
        self.stats.wav2vec2_skipped += predictions.wav2vec2_skipped
        model_probs, audioset = predictions.model_probs(0), predictions.audioset[0]
        self.carry.remember(window, level_dbfs, model_probs, audioset)
        return model_probs, audioset

    def publish(self, events: list[Event]) -> None:
        for event in events:
            payload = event.to_payload()
            if self.clips is not None:
                self.clips.on_event(payload)
            self.stats.record_event(payload)
            log.info("event %s %s %s conf=%.2f", payload["phase"], payload["label"], payload["event_id"],
                     payload["confidence"])
            self.sink.handle_event(payload)
            if self.clips is not None:
                self.clips.after_sent(payload)

    def finish(self) -> None:
        """End open events at the current audio time (shutdown or end of replay)."""
        self.publish(self.tracker.finish(self.stats.audio_seconds))

    # --- bookkeeping ---------------------------------------------------------------------------

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
