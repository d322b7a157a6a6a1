"""sd_notify over a real unix datagram socket, the stall-aware watchdog, status counters and the systemd unit."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from monitor.capture import MIC_ERROR, MicStats
from monitor.config import HealthConfig
from monitor.counters import RECENT_TIMES_KEPT, Mark, RunStats
from monitor.health import (
    SILENCE_DBFS,
    StatusReporter,
    SystemdNotifier,
    Watchdog,
    build_status,
    status_line,
    watchdog_interval,
)
from tests.helpers.audio import ManualClock
from tests.helpers.systemd import NotifySocket

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "nursery-monitor.service"


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify.sock"
    if len(str(path)) >= 100:  # sun_path limit; fall back to the abstract namespace
        listener = NotifySocket(f"@nursery-test-{os.getpid()}-{id(tmp_path)}")
    else:
        listener = NotifySocket(str(path))
    yield listener
    listener.close()


def test_notifier_sends_ready_status_and_stopping(notify_socket, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)
    notifier = SystemdNotifier()

    assert notifier.enabled
    assert notifier.ready(status="listening\non device 2")
    assert notify_socket.receive() == "READY=1\nSTATUS=listening on device 2"
    assert notifier.status("mic ok")
    assert notify_socket.receive() == "STATUS=mic ok"
    assert notifier.stopping()
    assert notify_socket.receive() == "STOPPING=1"
    notifier.close()


def test_notifier_supports_the_abstract_namespace():
    listener = NotifySocket(f"@nursery-abstract-{os.getpid()}")
    try:
        notifier = SystemdNotifier(env={"NOTIFY_SOCKET": listener.address})
        assert notifier.watchdog()
        assert listener.receive() == "WATCHDOG=1"
    finally:
        listener.close()


def test_notifier_is_a_no_op_without_systemd():
    notifier = SystemdNotifier(env={})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False


@pytest.mark.parametrize("address", ["/nonexistent/dir/notify.sock", "@nobody-listens-here-0", "vsock:2:1234"])
def test_notifier_never_raises_when_the_socket_is_unusable(address):
    notifier = SystemdNotifier(env={"NOTIFY_SOCKET": address})
    assert notifier.ready() is False
    assert notifier.watchdog() is False


@pytest.mark.parametrize("env,expected", [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "PID"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # another process's watchdog
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec(env, expected):
    env = {k: str(os.getpid()) if v == "PID" else v for k, v in env.items()}
    assert watchdog_interval(env) == expected


class RecordingNotifier(SystemdNotifier):
    def __init__(self) -> None:
        super().__init__(address="/unused")
        self.sent: list[dict] = []

    def notify(self, **fields: object) -> bool:
        self.sent.append(fields)
        return True


def test_watchdog_tick_pings_only_while_heartbeats_are_fresh():
    clock = ManualClock(50.0)
    notifier = RecordingNotifier()
    watchdog = Watchdog(notifier, stall_seconds=10.0, clock=clock, interval_seconds=5.0)

    watchdog.heartbeat()
    clock.now += 9.0
    assert watchdog.tick()
    clock.now += 2.0  # 11 s without a heartbeat
    assert not watchdog.tick()
    assert not watchdog.tick()
    watchdog.heartbeat()
    assert watchdog.tick()
    assert notifier.sent == [{"WATCHDOG": 1}, {"WATCHDOG": 1}]


def test_watchdog_thread_stops_pinging_when_the_audio_loop_stalls(notify_socket, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)
    monkeypatch.setenv("WATCHDOG_USEC", "40000")  # systemd would expect a ping every 40 ms
    clock = ManualClock(50.0)
    notifier = SystemdNotifier()
    notifier.ready()
    assert notify_socket.receive() == "READY=1"

    with Watchdog(notifier, stall_seconds=10.0, clock=clock) as watchdog:
        assert watchdog.interval_seconds == pytest.approx(0.02)
        for _ in range(3):  # heartbeats flow: pings arrive
            watchdog.heartbeat()
            assert notify_socket.receive() == "WATCHDOG=1"

        clock.now += 11.0  # the loop has not beaten for longer than stall_seconds
        time.sleep(5 * watchdog.interval_seconds)  # let a tick that read the old time finish
        notify_socket.drain()
        assert notify_socket.receive(timeout=20 * watchdog.interval_seconds) is None

        watchdog.heartbeat()  # the loop recovers: pings resume
        assert notify_socket.receive() == "WATCHDOG=1"
    notifier.close()


def test_watchdog_without_systemd_starts_no_thread():
    watchdog = Watchdog(SystemdNotifier(env={}), stall_seconds=10.0, env={})
    before = threading.active_count()
    watchdog.start()
    assert not watchdog.enabled
    assert threading.active_count() == before
    watchdog.stop()


# --- status --------------------------------------------------------------------------------------


def test_status_reports_levels_gate_rate_and_inference_times():
    clock = ManualClock(50.0)
    reporter = StatusReporter(HealthConfig(status_interval_seconds=60.0), clock=clock)
    quiet = np.full(1600, 0.01, np.float32)
    loud = np.full(1600, -0.5, np.float32)
    reporter.record_block(quiet)
    reporter.record_block(loud)
    reporter.run.audio_seconds = 0.2
    for passed in (True, False, False, True):
        reporter.run.record_window(passed)
    for ms in range(1, 101):
        reporter.run.record_inference("yamnet", float(ms))
    reporter.run.record_inference("wav2vec2", 40.0)
    for phase in ("start", "end"):
        reporter.run.record_event({"phase": phase})
    reporter.run.vetoed["laughter"] = 3
    reporter.update_mic(MicStats(MIC_ERROR, overflows=3, dropped_blocks=1, clipped_samples=7, peak_dbfs=-6.0,
                                 last_error="device gone", reopened=1, capture_rate=48000))
    reporter.set_mqtt_connected(True)

    clock.now += 59.0
    assert not reporter.due()
    clock.now += 1.0
    assert reporter.due()
    status = reporter.snapshot()

    expected_mean = 10 * np.log10((0.01 ** 2 + 0.5 ** 2) / 2)
    assert status["mic"]["level_mean_dbfs"] == pytest.approx(expected_mean, abs=0.05)
    assert status["mic"]["level_peak_dbfs"] == pytest.approx(20 * np.log10(0.5), abs=0.05)
    assert status["mic"]["state"] == MIC_ERROR and status["mic"]["last_error"] == "device gone"
    assert (status["mic"]["overflows"], status["mic"]["dropped_blocks"], status["mic"]["clipped_samples"]) == (3, 1, 7)
    assert status["gate"] == {"windows": 4, "passed": 2, "pass_rate": 0.5}
    assert status["inference_ms"]["yamnet"]["count"] == 100
    assert status["inference_ms"]["yamnet"]["mean"] == pytest.approx(50.5)
    assert status["inference_ms"]["yamnet"]["p95"] == pytest.approx(np.percentile(np.arange(1, 101), 95))
    assert status["inference_ms"]["wav2vec2"] == {"count": 1, "mean": 40.0, "p95": 40.0}
    assert status["windows_processed"] == 4 and status["events_raised"] == 2
    assert status["alerts_vetoed"] == {"laughter": 3}
    assert status["audio_seconds"] == 0.2 and status["interval_seconds"] == 60.0
    assert status["mqtt_connected"] is True
    assert "mic mic_error" in status_line(status) and "mqtt up" in status_line(status)


def test_snapshot_starts_a_new_interval_but_keeps_totals():
    clock = ManualClock(50.0)
    reporter = StatusReporter(HealthConfig(status_interval_seconds=10.0), clock=clock)
    reporter.record_block(np.full(100, 0.5, np.float32))
    reporter.run.record_window(True)
    reporter.run.record_inference("yamnet", 12.0)
    reporter.run.record_event({"phase": "start"})
    clock.now += 10.0
    reporter.snapshot()
    clock.now += 3.0

    status = reporter.snapshot()

    assert not reporter.due()
    assert status["uptime_seconds"] == 13.0 and status["interval_seconds"] == 3.0
    assert status["mic"]["level_mean_dbfs"] == round(SILENCE_DBFS, 1)
    assert status["gate"] == {"windows": 0, "passed": 0, "pass_rate": None}
    assert status["inference_ms"] == {}
    assert status["windows_processed"] == 1 and status["events_raised"] == 1


def test_status_is_json_ready():
    import json

    reporter = StatusReporter(HealthConfig(), clock=ManualClock(50.0))
    reporter.run.record_inference("yamnet", 3.0)
    text = json.dumps(build_status(reporter.stats, reporter.run, Mark(), uptime_seconds=1.0, interval_seconds=1.0))
    assert json.loads(text)["inference_ms"]["yamnet"]["count"] == 1
    assert "mqtt off" in status_line(json.loads(text))


# --- the systemd unit ----------------------------------------------------------------------------


def read_unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|min)?", value)
    assert match, value
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


def test_unit_timings_agree_with_the_health_defaults():
    service = read_unit()["Service"]
    health = HealthConfig()
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    # pings go out every WatchdogSec/2; a stall must be noticed well before systemd gives up on us
    assert health.stall_seconds < seconds(service["WatchdogSec"]) / 2
    assert health.shutdown_seconds < seconds(service["TimeoutStopSec"])
    assert "run --config /etc/nursery-monitor/config.yaml" in service["ExecStart"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    # verify insists that ExecStart exists; point it at this interpreter, every other line is checked as shipped
    text = re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={sys.executable}", UNIT.read_text())
    unit = tmp_path / UNIT.name
    unit.write_text(text)

    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)

    complaints = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0 and complaints == [], "\n".join(complaints) or result.stderr


def test_run_counters_keep_exact_sums_over_a_long_run():
    run = RunStats()
    times = np.arange(1, 3 * RECENT_TIMES_KEPT + 1, dtype=np.float64)
    for ms in times:
        run.record_inference("yamnet", ms)
    timing = run.inference["yamnet"]

    assert run.mean_inference_ms() == {"yamnet": pytest.approx(times.mean())}, "the mean covers the whole run"
    assert (timing.count, timing.max_ms, len(timing.recent_ms)) == (times.size, times.max(), RECENT_TIMES_KEPT)
    mark = run.mark()
    for ms in (5.0, 7.0):
        run.record_inference("yamnet", ms)
    assert run.inference_since(mark) == {"yamnet": {"count": 2, "mean": 6.0, "p95": pytest.approx(6.9)}}
