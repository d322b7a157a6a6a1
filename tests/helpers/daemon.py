"""The real `nursery-monitor` process over its CLI: run to the end (``cli``) or started (``start_cli``,
``RunningDaemon``, whose output is read while it runs), its config (``write_config``) and input
(``tone_scene``), and facts read from outside it: its peak memory (VmHWM), the events queued in its
outbox file, top-level config keys.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from monitor.constants import SAMPLE_RATE
from tests.helpers.broker import WAIT_TIMEOUT_SECONDS
from tests.helpers.fake_models import TONE_HZ

READER_JOIN_SECONDS = 5.0
STOP_WAIT_SECONDS = 15.0
MEMORY_POLL_SECONDS = 0.02
KB_PER_MB = 1024.0
TRACEBACK = "Traceback (most recent call last)"


class RunningDaemon:
    """``nursery-monitor <args>`` with a reader thread per output stream, so a test can wait for a line
    while the process keeps running. Use as a context manager: whatever happens, the process is killed."""

    STREAMS = ("stdout", "stderr")

    def __init__(self, *args: str):
        self.process = start_cli(*args)
        self._lines: dict[str, list[str]] = {name: [] for name in self.STREAMS}
        self._changed = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(name,), name=f"daemon-{name}", daemon=True)
                         for name in self.STREAMS]
        self.peak_rss_mb: float | None = None
        """The highest resident memory seen while it ran (its VmHWM). Not ``wait4``'s ru_maxrss: a child started
        by vfork inherits the parent's high-water mark, here the test process's."""
        self._readers.append(threading.Thread(target=self._watch_memory, name="daemon-memory", daemon=True))
        for reader in self._readers:
            reader.start()

    def _read(self, name: str) -> None:
        for line in getattr(self.process, name):
            with self._changed:
                self._lines[name].append(line.rstrip("\n"))
                self._changed.notify_all()

    def _watch_memory(self) -> None:
        status = Path(f"/proc/{self.process.pid}/status")
        while self.process.poll() is None:
            try:
                fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            except OSError:  # gone
                return
            if "VmHWM" in fields:  # absent once it is a zombie
                self.peak_rss_mb = int(fields["VmHWM"].split()[0]) / KB_PER_MB
            time.sleep(MEMORY_POLL_SECONDS)

    def lines(self, stream: str = "stderr") -> list[str]:
        with self._changed:
            return list(self._lines[stream])

    def text(self, stream: str = "stderr") -> str:
        return "\n".join(self.lines(stream))

    def matching(self, *needles: str, stream: str = "stderr") -> list[str]:
        """Lines containing every one of ``needles``."""
        return [line for line in self.lines(stream) if all(needle in line for needle in needles)]

    def wait_for_lines(self, *needles: str, count: int = 1, stream: str = "stderr",
                       timeout: float = WAIT_TIMEOUT_SECONDS) -> list[str]:
        """At least ``count`` lines containing every one of ``needles``, or those seen when ``timeout`` passed
        or the process closed its output."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [line for line in self._lines[stream] if all(needle in line for needle in needles)]
                remaining = deadline - time.monotonic()
                if len(found) >= count or remaining <= 0 or not any(r.is_alive() for r in self._readers):
                    return found
                self._changed.wait(min(remaining, 0.1))

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self, timeout: float = STOP_WAIT_SECONDS) -> int:
        """SIGTERM, as systemd stops the service; the exit code."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no chance to flush, close or say goodbye."""
        if self.alive:
            os.kill(self.process.pid, signal.SIGKILL)
        self.wait(STOP_WAIT_SECONDS)

    def wait(self, timeout: float = STOP_WAIT_SECONDS) -> int:
        """The exit code once the process has ended and its output is read."""
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(READER_JOIN_SECONDS)
        return code

    def __enter__(self) -> RunningDaemon:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()


def run_to_end(*args: str, timeout: float = 120.0) -> RunningDaemon:
    """``nursery-monitor <args>`` to completion: ``process.returncode``, ``text(stream)``, ``peak_rss_mb``."""
    daemon = RunningDaemon(*args)
    try:
        daemon.wait(timeout)
    finally:
        daemon.kill()
    return daemon


def queued_events(outbox: Path) -> int:
    """Event messages waiting in a (possibly running) daemon's outbox, read without disturbing it."""
    if not outbox.exists():
        return 0
    db = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM outbox WHERE is_event = 1").fetchone()[0]
    except sqlite3.OperationalError:  # created but its tables not yet
        return 0
    finally:
        db.close()


def set_top_level(config: Path, **values: object) -> Path:
    """Top-level scalar keys (``log_level``, ``device_id``) in a config written by ``write_config``."""
    document = json.loads(config.read_text())
    document.update(values)
    config.write_text(json.dumps(document))
    return config


def stderr_problems(stderr: str, secret: str | None = None) -> list[str]:
    """What must never be in the daemon's output: a traceback, or the secret."""
    problems = [line for line in stderr.splitlines() if TRACEBACK in line]
    if secret:
        problems += [line for line in stderr.splitlines() if secret in line]
    return problems


REPO = Path(__file__).resolve().parents[2]
DEVICE_ID = "testroom"
"""write_config's device_id."""
EVENTS_QUICKLY_OVER = {"hold_seconds": 1.0, "cooldown_seconds": 0.0}


def tone_scene(path: Path, parts: list[tuple[str | None, float]], seed: int = 0) -> Path:
    """Consecutive parts: a label's tone, or quiet room noise (None)."""
    rng = np.random.default_rng(seed)
    chunks = []
    for label, seconds in parts:
        n = int(seconds * SAMPLE_RATE)
        noise = 1e-4 * rng.standard_normal(n)  # -80 dBFS: below the gate's silence level
        if label is None:
            chunks.append(noise)
        else:
            t = np.arange(n) / SAMPLE_RATE
            chunks.append(0.3 * np.sin(2 * np.pi * TONE_HZ[label] * t) + noise)
    sf.write(str(path), np.concatenate(chunks).astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    return path


def write_config(tmp_path: Path, manifest: Path, broker=None, **sections) -> Path:
    mqtt = {"enabled": broker is not None, "outbox_path": str(tmp_path / "outbox.sqlite"),
            "reconnect_min_seconds": 0.2, "reconnect_max_seconds": 1.0}
    if broker is not None:
        mqtt.update(host="127.0.0.1", port=broker.port)
    config = {"device_id": DEVICE_ID, "models": {"manifest": str(manifest), "use_wav2vec2": False},
              "mqtt": mqtt, "health": {"status_interval_seconds": 1.0}, "clips": {"directory": str(tmp_path / "clips")}}
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    return path


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitor.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def start_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "monitor.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


def events_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
