"""The one set of run counters: written by the pipeline, read by its caller (``RunStats``) and by the
periodic status message (``StatusReporter`` takes interval figures as differences from a ``Mark``).

Sums are exact over the whole run (no list that is trimmed as it grows); only the percentile needs the
times themselves, and it uses a bounded tail of the most recent ones."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RECENT_EVENT_MESSAGES = 1000
"""Event messages kept in ``RunStats.events``: all of them for any clip or test replay, a bounded tail for a
daemon that runs for months."""

RECENT_TIMES_KEPT = 4096
"""Inference times kept per model for the status message's percentile (bounds memory on long intervals)."""

TIMING_PERCENTILE = 95


@dataclass
class Timing:
    """Inference times of one model: exact running count, sum and maximum, plus the most recent times."""

    count: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0
    recent_ms: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_TIMES_KEPT))

    def add(self, milliseconds: float) -> None:
        milliseconds = float(milliseconds)
        self.count += 1
        self.total_ms += milliseconds
        self.max_ms = max(self.max_ms, milliseconds)
        self.recent_ms.append(milliseconds)

    @property
    def mean_ms(self) -> float | None:
        return self.total_ms / self.count if self.count else None

    def summary_since(self, count: int = 0, total_ms: float = 0.0) -> dict[str, Any]:
        """Count, mean and p95 of the times added after the moment ``count`` / ``total_ms`` were read
        (the p95 over the most recent ``RECENT_TIMES_KEPT`` of them)."""
        new = self.count - count
        if new <= 0:
            return {"count": 0, "mean": None, "p95": None}
        recent = list(self.recent_ms)[-min(new, len(self.recent_ms)):]
        return {"count": new, "mean": round((self.total_ms - total_ms) / new, 2),
                "p95": round(float(np.percentile(recent, TIMING_PERCENTILE)), 2)}


@dataclass(frozen=True)
class Mark:
    """The counters at one moment (the start of a status interval)."""

    windows: int = 0
    gated_windows: int = 0
    inference: dict[str, tuple[int, float]] = field(default_factory=dict)


@dataclass
class RunStats:
    """What a run did: audio, windows, gate passes, event messages, inference times."""

    audio_seconds: float = 0.0
    windows: int = 0
    gated_windows: int = 0
    wav2vec2_skipped: int = 0
    """Gated windows on which the cascade left Wav2Vec2 out (it could not change the outcome)."""
    carried_windows: int = 0
    """Gated windows that reused the previous window's model outputs (``monitor.carry``): no model ran."""
    vetoed: dict[str, int] = field(default_factory=dict)
    """Veto category -> windows that would have alerted but AudioSet heard that over any cry or scream."""
    event_messages: int = 0
    """Every event message published in this run."""
    events: deque[dict] = field(default_factory=lambda: deque(maxlen=RECENT_EVENT_MESSAGES))
    """The most recent ``RECENT_EVENT_MESSAGES`` of them, oldest first."""
    inference: dict[str, Timing] = field(default_factory=dict)
    processing_seconds: float = 0.0

    def record_window(self, passed_gate: bool) -> None:
        self.windows += 1
        self.gated_windows += int(passed_gate)

    def record_inference(self, model: str, milliseconds: float) -> None:
        self.inference.setdefault(model, Timing()).add(milliseconds)

    def record_event(self, payload: dict) -> None:
        self.event_messages += 1
        self.events.append(payload)

    @property
    def gate_pass_fraction(self) -> float:
        return self.gated_windows / self.windows if self.windows else 0.0

    def mean_inference_ms(self) -> dict[str, float]:
        """Mean per model over the whole run (exact)."""
        return {model: timing.mean_ms for model, timing in self.inference.items() if timing.count}

    def mark(self) -> Mark:
        return Mark(self.windows, self.gated_windows,
                    {model: (timing.count, timing.total_ms) for model, timing in self.inference.items()})

    def inference_since(self, mark: Mark) -> dict[str, dict[str, Any]]:
        """Per model with times since ``mark``: count, mean, p95 (the status message's ``inference_ms``)."""
        summaries = {model: timing.summary_since(*mark.inference.get(model, (0, 0.0)))
                     for model, timing in sorted(self.inference.items())}
        return {model: summary for model, summary in summaries.items() if summary["count"]}
