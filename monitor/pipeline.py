"""The whole flow in one place:

    capture -> window -> gate -> classify -> fuse -> events -> publish

Each stage is its own module; this file only wires them, times them and counts what happens.
Live capture and file replay feed the very same ``Pipeline``: only the source differs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from .capture import AudioBlock
from .classify import Classifiers
from .config import Config
from .constants import SAMPLE_RATE
from .events import Event, EventTracker
from .fusion import FusedWindow, fuse_window
from .gate import Gate, GateDecision
from .preprocess import prepare_window
from .sinks import EventSink
from .windows import SlidingWindower, Window, hop_samples_from_seconds

log = logging.getLogger(__name__)


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
    events: list[dict] = field(default_factory=list)
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
                 heartbeat: Callable[[], None] | None = None):
        self.cfg = cfg
        self.classifiers = classifiers
        self.sink = sink
        self.on_window = on_window
        self.heartbeat = heartbeat
        self.windower = SlidingWindower(hop_samples_from_seconds(cfg.window.hop_seconds))
        self.gate = Gate(cfg.gate)
        self.tracker = EventTracker(cfg.fusion, cfg.device_id, classifiers.versions,
                                    stream_start_wall or datetime.now(timezone.utc))
        self.stats = RunStats()
        self._next_status_at = cfg.health.status_interval_seconds
        self.status_provider: Callable[[], dict] | None = None

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
        self.stats.audio_seconds += block.samples.size / SAMPLE_RATE
        outcomes = [self.process_window(window) for window in self.windower.push(block.samples)]
        if self.heartbeat is not None:
            self.heartbeat()
        self._maybe_publish_status()
        return outcomes

    def process_window(self, window: Window) -> WindowOutcome:
        decision = self.gate.assess(window)
        self.stats.windows += 1
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
            self.stats.events.append(payload)
            log.info("event %s %s %s conf=%.2f", payload["phase"], payload["label"], payload["event_id"],
                     payload["confidence"])
            self.sink.handle_event(payload)

    def finish(self) -> None:
        """End open events at the current audio time (shutdown or end of replay)."""
        self.publish(self.tracker.finish(self.stats.audio_seconds))

    # --- bookkeeping ---------------------------------------------------------------------------

    def _record_time(self, model: str, t0: float) -> None:
        times = self.stats.inference_ms.setdefault(model, [])
        times.append((time.perf_counter() - t0) * 1000.0)
        if len(times) > 10_000:  # bounded: keep the recent half for means over long runs
            del times[:5_000]

    def status(self) -> dict:
        status = {
            "audio_seconds": round(self.stats.audio_seconds, 3),
            "windows": self.stats.windows,
            "gate_pass_fraction": round(self.stats.gate_pass_fraction, 4),
            "inference_ms": {k: round(v, 2) for k, v in self.stats.mean_inference_ms().items()},
            "events": len(self.stats.events),
            "noise_floor_dbfs": None,
        }
        if self.status_provider is not None:
            status.update(self.status_provider())
        return status

    def _maybe_publish_status(self) -> None:
        if self.stats.audio_seconds < self._next_status_at:
            return
        self._next_status_at = self.stats.audio_seconds + self.cfg.health.status_interval_seconds
        try:
            self.sink.publish_status(self.status())
        except Exception:  # a status message must never stop the audio loop
            log.exception("publishing the status message failed")
