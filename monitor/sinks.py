"""Where event messages go: the narrow interface the pipeline talks to, and its implementations.

The pipeline only knows ``EventSink``; whether events are printed, written as JSON lines or
published over MQTT (or all three through ``FanoutSink``) is decided once, at wiring time.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import IO, Protocol, runtime_checkable

from .mqtt import MqttPublisher, PublisherHealth

log = logging.getLogger(__name__)


class SinkError(RuntimeError):
    """A sink cannot be set up (for example an unwritable JSON lines file)."""


@runtime_checkable
class EventSink(Protocol):
    def handle_event(self, payload: dict) -> None:
        """Take one event message (``Event.to_payload()``); must not block on the network."""

    def publish_status(self, payload: dict) -> None:
        """Take the periodic status message (mic level, clipping, overflows, gate pass rate, inference time)."""

    def close(self, timeout: float | None = None) -> None:
        """Flush and release; return within ``timeout`` seconds."""


def describe_event(payload: dict) -> str:
    """One line a person can read at a glance: ``START Crying: event 3f2a #0, confidence 0.91, at <time>``."""
    parts = [f"{str(payload.get('phase', '?')).upper()} {payload.get('label', '?')}: "
             f"event {payload.get('event_id', '?')} #{payload.get('seq', '?')}"]
    confidence = payload.get("confidence")
    if isinstance(confidence, (int, float)):
        parts.append(f"confidence {confidence:.2f}")
    when = payload.get("time") or payload.get("start_time")
    if when:
        parts.append(f"at {when}")
    return ", ".join(parts)


class PrintSink:
    """One human-readable line per event; status messages are left to the log."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream if stream is not None else sys.stdout

    def handle_event(self, payload: dict) -> None:
        print(describe_event(payload), file=self.stream, flush=True)

    def publish_status(self, payload: dict) -> None:
        log.debug("status %s", payload)

    def close(self, timeout: float | None = None) -> None:
        self.stream.flush()


class JsonlSink:
    """One JSON object per line per event, flushed at once, to a file (appended) or ``-`` (stdout)."""

    def __init__(self, path: str):
        self.path = path
        if path == "-":
            self._file, self._owned = sys.stdout, False
        else:
            try:
                self._file, self._owned = open(path, "a", encoding="utf-8"), True
            except OSError as exc:
                raise SinkError(f"cannot open the events file {path}: {exc.strerror}") from None

    def handle_event(self, payload: dict) -> None:
        self._file.write(json.dumps(payload, ensure_ascii=False) + "\n")
        self._file.flush()

    def publish_status(self, payload: dict) -> None:
        """Status messages are not events: this file holds events only."""

    def close(self, timeout: float | None = None) -> None:
        if self._owned:
            self._file.close()
        else:
            self._file.flush()


class MqttSink:
    """Events and status over MQTT; events go through the publisher's durable outbox."""

    def __init__(self, publisher: MqttPublisher):
        self.publisher = publisher

    def handle_event(self, payload: dict) -> None:
        self.publisher.publish_event(payload)

    def publish_status(self, payload: dict) -> None:
        self.publisher.publish_status(payload)

    def health(self) -> PublisherHealth:
        """Connection state, last error and outbox size, for the status message."""
        return self.publisher.health()

    def close(self, timeout: float | None = None) -> None:
        self.publisher.close(timeout)


class FanoutSink:
    """Hands every message to each sink; one failing sink logs an error and never stops the others."""

    def __init__(self, sinks: Sequence[EventSink]):
        self.sinks = list(sinks)

    def handle_event(self, payload: dict) -> None:
        for sink in self.sinks:
            self._guarded(sink, "handle_event", payload, f"event {payload.get('message_id', '?')}")

    def publish_status(self, payload: dict) -> None:
        for sink in self.sinks:
            self._guarded(sink, "publish_status", payload, "the status message")

    def close(self, timeout: float | None = None) -> None:
        """Each sink gets what is left of the shared ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for sink in self.sinks:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._guarded(sink, "close", remaining, "closing")

    @staticmethod
    def _guarded(sink: EventSink, method: str, argument, what: str) -> None:
        try:
            getattr(sink, method)(argument)
        except Exception as exc:
            log.error("%s failed on %s: %s", type(sink).__name__, what, exc)
            log.debug("%s failure details", type(sink).__name__, exc_info=True)
