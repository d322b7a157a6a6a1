"""The soak (scripts/soak.py) in short: ten minutes of household audio through the pipeline, published to a
real mosquitto; every event message the pipeline sent arrives; memory, threads, outbox and buffers hold.

The full run (4 h of audio) is `python scripts/soak.py`; its figures are in docs/RELIABILITY.md.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import replace

import pytest

from tests.helpers.broker import HOST, Subscriber, wait_until
from tests.helpers.daemon import REPO

SOAK_SCRIPT = REPO / "scripts" / "soak.py"
SHORT_HOURS = 10 / 60
SAMPLE_MINUTES = 1.0
WARMUP_MINUTES = 3.0
SOAK_TIMEOUT_SECONDS = 120


def load_soak_module():
    spec = importlib.util.spec_from_file_location("soak", SOAK_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


soak = load_soak_module()


def test_ten_minute_soak_delivers_every_event_and_nothing_grows(broker, record_property):
    subscriber = Subscriber(broker, "nursery/+/event")
    try:
        result = subprocess.run(
            [sys.executable, str(SOAK_SCRIPT), "--models", "fake", "--hours", str(SHORT_HOURS),
             "--sample-minutes", str(SAMPLE_MINUTES), "--warmup-minutes", str(WARMUP_MINUTES),
             "--mqtt", f"{HOST}:{broker.port}"],
            capture_output=True, text=True, cwd=REPO, timeout=SOAK_TIMEOUT_SECONDS)
        assert result.returncode == 0, result.stderr + result.stdout
        report = json.loads(result.stdout)
        assert wait_until(lambda: len(subscriber.messages()) >= report["event_messages"])
        delivered = subscriber.messages()
    finally:
        subscriber.close()

    for name in ("event_messages", "insertions"):
        record_property(name, report[name])
    record_property("delivered", len(delivered))
    record_property("growth_mb", report["verdict"]["growth_mb"])
    assert report["audio_hours"] == pytest.approx(SHORT_HOURS, abs=1e-3)
    assert len(report["samples"]) == round(SHORT_HOURS * 60 / SAMPLE_MINUTES) + 1
    assert report["event_messages"] > 0 and report["insertions"] > 0
    assert len(delivered) == report["event_messages"] and report["outbox_left"] == 0
    verdict = report["verdict"]
    assert verdict["passed"] and not verdict["threads_grew"] and not verdict["outbox_grew"]
    assert verdict["growth_mb"] < report["limits"]["max_growth_mb"]


def sample(minutes: float, rss_mb: float = 100.0, threads: int = 3, outbox: int | None = 0, **buffers: int):
    sizes = {"window_samples": 8000, "noise_floor_frames": 1000, "recent_event_messages": 10, "inference_times": 10}
    return soak.Sample(audio_minutes=minutes, wall_seconds=minutes, rss_mb=rss_mb, python_threads=threads,
                       os_threads=threads, outbox=outbox, buffers={**sizes, **buffers}, gc_objects=0)


BOUNDS = {"window_samples": 15600, "noise_floor_frames": 1000, "recent_event_messages": 1000,
          "inference_times": 4096}
STEADY = [sample(0, 90.0), sample(10), sample(20), sample(30, 101.0), sample(40, 100.5)]


@pytest.mark.parametrize("change, failure", [
    (lambda s: replace(s, rss_mb=s.rss_mb + 10.0), "growth"),
    (lambda s: replace(s, os_threads=s.os_threads + 1), "threads_grew"),
    (lambda s: replace(s, outbox=50), "outbox_grew"),
    (lambda s: replace(s, buffers={**s.buffers, "recent_event_messages": 1001}), "buffers_over_bound"),
])
def test_the_verdict_fails_on_each_kind_of_growth(change, failure):
    steady = soak.judge(STEADY, warmup_minutes=10, max_growth_mb=10.0, bounds=BOUNDS)
    grown = soak.judge(STEADY[:-1] + [change(STEADY[-1])], warmup_minutes=10, max_growth_mb=10.0, bounds=BOUNDS)

    assert steady.passed and steady.growth_mb == pytest.approx(1.0), "start-up growth before warm-up is not held"
    assert not grown.passed
    assert {"growth": grown.growth_mb >= 10.0, "threads_grew": grown.threads_grew, "outbox_grew": grown.outbox_grew,
            "buffers_over_bound": bool(grown.buffers_over_bound)}[failure]
