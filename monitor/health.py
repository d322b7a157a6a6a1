"""Liveness: systemd notifications and watchdog, and the counters behind the periodic status message.

- ``SystemdNotifier``: sd_notify over ``$NOTIFY_SOCKET`` (no-op when unset, never raises, never blocks).
- ``Watchdog``: pets systemd's watchdog only while the audio loop keeps calling ``heartbeat()``, so a
  stalled loop stops the pings and systemd restarts the service.
- ``StatusReporter`` / ``RuntimeStats``: what the status message reports (levels, gate pass rate,
  inference times, counters); no I/O, the caller publishes ``snapshot()``. The counts are the pipeline's
  ``RunStats`` (``monitor.counters``), read here, never counted twice.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import HealthConfig
from .counters import Mark, RunStats
from .signal_helpers import SILENCE_DBFS, amplitude_to_dbfs, one_line, power_to_dbfs

if TYPE_CHECKING:
    from .capture import MicStats

log = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"

USEC_PER_SECOND = 1_000_000
WATCHDOG_PING_FRACTION = 0.5
"""Ping at half of WATCHDOG_USEC, as sd_watchdog_enabled(3) recommends."""

JOIN_TIMEOUT_SECONDS = 2.0


# --- sd_notify -----------------------------------------------------------------------------------


def _socket_address(address: str) -> str | bytes:
    """'@name' is the abstract namespace (a leading NUL byte); anything else is a filesystem path."""
    if address.startswith("@"):
        return b"\0" + address[1:].encode()
    return address


class SystemdNotifier:
    """Sends sd_notify messages; a no-op outside systemd. Safe to call from any thread."""

    def __init__(self, address: str | None = None, env: Mapping[str, str] = os.environ):
        self.address = address if address is not None else (env.get(NOTIFY_SOCKET_ENV) or None)
        if self.address is not None and not self.address.startswith(("/", "@")):
            log.warning("unsupported %s address %r: systemd notifications disabled", NOTIFY_SOCKET_ENV, self.address)
            self.address = None
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._failed_before = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: object) -> bool:
        """Send ``KEY=value`` lines in one datagram; True when sent."""
        if self.address is None:
            return False
        message = "\n".join(f"{key}={one_line(str(value))}" for key, value in fields.items()).encode()
        try:
            with self._lock:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._socket.setblocking(False)
                self._socket.sendto(message, _socket_address(self.address))
        except OSError as exc:
            level = logging.DEBUG if self._failed_before else logging.WARNING
            log.log(level, "sd_notify to %s failed: %s", self.address, exc)
            self._failed_before = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify(READY=1, **({"STATUS": status} if status else {}))

    def stopping(self, status: str | None = None) -> bool:
        return self.notify(STOPPING=1, **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None


def watchdog_interval(env: Mapping[str, str] = os.environ, pid: int | None = None) -> float | None:
    """Seconds between watchdog pings (half of WATCHDOG_USEC), or None when systemd set no watchdog for us."""
    usec = env.get(WATCHDOG_USEC_ENV)
    owner = env.get(WATCHDOG_PID_ENV)
    try:
        if owner and int(owner) != (os.getpid() if pid is None else pid):
            return None
        usec_value = int(usec) if usec else 0
    except ValueError:
        log.warning("ignoring malformed %s=%r / %s=%r", WATCHDOG_USEC_ENV, usec, WATCHDOG_PID_ENV, owner)
        return None
    return usec_value * WATCHDOG_PING_FRACTION / USEC_PER_SECOND if usec_value > 0 else None


class Watchdog:
    """Pets systemd's watchdog from a background thread, but only while heartbeats are fresh.

    The audio loop calls ``heartbeat()`` for every processed block (and on idle polls while the
    microphone is away). The thread's own liveness is not enough: if the loop hangs (stuck
    inference, deadlock), heartbeats stop, ``tick()`` stops pinging and systemd restarts us.
    """

    def __init__(self, notifier: SystemdNotifier, stall_seconds: float, clock: Callable[[], float] = time.monotonic,
                 interval_seconds: float | None = None, env: Mapping[str, str] = os.environ):
        self.notifier = notifier
        self.stall_seconds = stall_seconds
        self.interval_seconds = interval_seconds if interval_seconds is not None else watchdog_interval(env)
        self._clock = clock
        self._last_heartbeat = clock()
        self._stalled = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pings = 0

    @property
    def enabled(self) -> bool:
        return self.notifier.enabled and self.interval_seconds is not None

    def heartbeat(self) -> None:
        self._last_heartbeat = self._clock()

    def seconds_since_heartbeat(self) -> float:
        return self._clock() - self._last_heartbeat

    def tick(self) -> bool:
        """Ping if the loop is alive; True when a ping was sent."""
        silent_for = self.seconds_since_heartbeat()
        if silent_for > self.stall_seconds:
            if not self._stalled:
                log.error("audio loop stalled for %.1f s: no longer petting the systemd watchdog", silent_for)
                self._stalled = True
            return False
        if self._stalled:
            log.info("audio loop alive again: petting the systemd watchdog")
            self._stalled = False
        sent = self.notifier.watchdog()
        self.pings += int(sent)
        return sent

    def start(self) -> None:
        """Start pinging (no thread without a watchdog); the stall grace period starts now."""
        self.heartbeat()
        if not self.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="systemd-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.tick()
        while not self._stop.wait(self.interval_seconds):
            self.tick()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT_SECONDS)
            if self._thread.is_alive():
                log.warning("watchdog thread did not stop within %.1f s", JOIN_TIMEOUT_SECONDS)
            self._thread = None

    def __enter__(self) -> Watchdog:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- status --------------------------------------------------------------------------------------


@dataclass
class RuntimeStats:
    """What the status message reports besides the run's counts: the level of the current interval
    (since the last snapshot), and the latest microphone and MQTT state. One writer per field: the
    audio loop, except ``mqtt_connected`` (the MQTT client thread assigns it).
    """

    # interval
    sum_squares: float = 0.0
    samples: int = 0
    peak: float = 0.0
    # latest
    mic_state: str | None = None
    clipped_samples: int = 0
    overflows: int = 0
    dropped_blocks: int = 0
    mic_error: str | None = None
    mqtt_connected: bool | None = None
    mqtt: dict[str, Any] | None = None

    def reset_interval(self) -> None:
        self.sum_squares, self.samples, self.peak = 0.0, 0, 0.0


class StatusReporter:
    """Collects levels and mic / MQTT state, reads the run's counters (``run``, the pipeline's
    ``RunStats``) and says when the next status message is due; publishing is the caller's."""

    def __init__(self, cfg: HealthConfig, clock: Callable[[], float] = time.monotonic, run: RunStats | None = None):
        self.interval_seconds = cfg.status_interval_seconds
        self._clock = clock
        self._started = clock()
        self._interval_started = self._started
        self.stats = RuntimeStats()
        self.run = run if run is not None else RunStats()
        self._interval_mark = self.run.mark()

    def record_block(self, samples: np.ndarray) -> None:
        """A conditioned 16 kHz block: feeds the mean (energy average) and peak level."""
        if samples.size:
            self.stats.sum_squares += float(np.sum(np.square(samples, dtype=np.float64)))
            self.stats.samples += int(samples.size)
            self.stats.peak = max(self.stats.peak, float(np.max(np.abs(samples))))

    def update_mic(self, mic: MicStats) -> None:
        self.stats.mic_state = mic.state
        self.stats.clipped_samples = mic.clipped_samples
        self.stats.overflows = mic.overflows
        self.stats.dropped_blocks = mic.dropped_blocks
        self.stats.mic_error = mic.last_error

    def set_mqtt_connected(self, connected: bool, details: dict[str, Any] | None = None) -> None:
        """``details``: the publisher's last error, failed connects and outbox counts."""
        self.stats.mqtt_connected = connected
        self.stats.mqtt = details

    def due(self, now: float | None = None) -> bool:
        now = self._clock() if now is None else now
        return now - self._interval_started >= self.interval_seconds

    def snapshot(self, now: float | None = None, reset: bool = True) -> dict[str, Any]:
        """The status message body (JSON-ready); by default starts a new interval."""
        now = self._clock() if now is None else now
        body = build_status(self.stats, self.run, self._interval_mark, uptime_seconds=now - self._started,
                            interval_seconds=now - self._interval_started)
        if reset:
            self.stats.reset_interval()
            self._interval_mark = self.run.mark()
            self._interval_started = now
        return body


def build_status(stats: RuntimeStats, run: RunStats, since: Mark, uptime_seconds: float,
                 interval_seconds: float) -> dict[str, Any]:
    """Pure: levels and state, the run's counters and their values at the interval start -> status dict."""
    mean_dbfs = float(power_to_dbfs(stats.sum_squares / stats.samples)) if stats.samples else SILENCE_DBFS
    peak_dbfs = amplitude_to_dbfs(stats.peak) if stats.samples else SILENCE_DBFS
    gate_windows, gate_passed = run.windows - since.windows, run.gated_windows - since.gated_windows
    pass_rate = gate_passed / gate_windows if gate_windows else None
    return {
        "uptime_seconds": round(uptime_seconds, 1),
        "interval_seconds": round(interval_seconds, 1),
        "audio_seconds": round(run.audio_seconds, 1),
        "mic": {
            "state": stats.mic_state,
            "level_mean_dbfs": round(mean_dbfs, 1),
            "level_peak_dbfs": round(peak_dbfs, 1),
            "clipped_samples": stats.clipped_samples,
            "overflows": stats.overflows,
            "dropped_blocks": stats.dropped_blocks,
            "last_error": stats.mic_error,
        },
        "gate": {"windows": gate_windows, "passed": gate_passed,
                 "pass_rate": None if pass_rate is None else round(pass_rate, 3)},
        "inference_ms": run.inference_since(since),
        "windows_processed": run.windows,
        "events_raised": run.event_messages,
        "alerts_vetoed": dict(run.vetoed),
        "mqtt_connected": stats.mqtt_connected,
        "mqtt": stats.mqtt,
    }


def status_line(status: dict[str, Any]) -> str:
    """One line for systemd's STATUS= (shown by `systemctl status`)."""
    mic = status["mic"]
    mqtt = {True: "up", False: "down", None: "off"}[status["mqtt_connected"]]
    return (f"mic {mic['state'] or 'n/a'} {mic['level_mean_dbfs']:.0f} dBFS, "
            f"{status['windows_processed']} windows, {status['events_raised']} events, mqtt {mqtt}")
