"""The real `nursery-monitor` process over its CLI, with the tiny tone models of tests/fake_models.py
(offline, fast): events out of replay, MQTT payloads and retained topics, SIGTERM and SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import numpy as np
import soundfile as sf

from monitor.constants import SAMPLE_RATE
from monitor.events import EVENT_SCHEMA_PATH
from tests.broker import Subscriber, wait_until
from tests.fake_models import TONE_HZ

REPO = Path(__file__).resolve().parents[1]
SHUTDOWN_LIMIT_SECONDS = 2.0


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
    config = {"device_id": "testroom", "models": {"manifest": str(manifest), "use_wav2vec2": False},
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


def test_replay_turns_a_cry_into_one_event_with_start_and_end(tmp_path, fake_models):
    clip = tone_scene(tmp_path / "scene.wav", [(None, 3), ("Crying", 4), (None, 8)])
    config = write_config(tmp_path, fake_models)
    result = cli("replay", str(clip), "--config", str(config), "--events-jsonl", "-")
    assert result.returncode == 0, result.stderr
    events = events_of(result.stdout)
    assert [e["phase"] for e in events][0] == "start" and events[-1]["phase"] == "end"
    assert {e["label"] for e in events} == {"Crying"}
    assert len({e["event_id"] for e in events}) == 1
    onset = 3.0
    assert onset - 1.0 <= events[0]["start_audio_s"] <= onset  # the first window that heard the cry
    published_at = events[0]["time"]
    assert events[0]["start_time"] <= published_at  # ISO 8601 UTC strings order like times
    schema = json.loads(Path(EVENT_SCHEMA_PATH).read_text())
    for event in events:
        jsonschema.validate(event, schema)


def test_replay_of_quiet_room_and_normal_sound_raises_nothing(tmp_path, fake_models):
    clip = tone_scene(tmp_path / "normal.wav", [(None, 3), ("Normal", 5), (None, 3)])
    result = cli("replay", str(clip), "--config", str(write_config(tmp_path, fake_models)), "--events-jsonl", "-")
    assert result.returncode == 0, result.stderr
    assert events_of(result.stdout) == []


def test_runtime_imports_no_torch_or_tensorflow(tmp_path, fake_models):
    clip = tone_scene(tmp_path / "scene.wav", [(None, 1), ("Crying", 3), (None, 4)])
    config = write_config(tmp_path, fake_models)
    code = (
        "import sys, monitor.cli\n"
        f"rc = monitor.cli.main(['replay', {str(clip)!r}, '--config', {str(config)!r}, '--quiet'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'transformers'))\n"
        "print('HEAVY', heavy)\n"
        "sys.exit(rc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


def test_events_reach_mqtt_with_retained_state_and_status(tmp_path, fake_models, broker):
    clip = tone_scene(tmp_path / "scene.wav", [(None, 3), ("Crying", 4), (None, 8)])
    subscriber = Subscriber(broker, "nursery/testroom/#")
    try:
        result = cli("replay", str(clip), "--config", str(write_config(tmp_path, fake_models, broker)), "--quiet")
        assert result.returncode == 0, result.stderr
        events = [m.json() for m in subscriber.wait_for(2, "nursery/testroom/event")]
        assert [e["phase"] for e in events][0] == "start" and events[-1]["phase"] == "end"
        assert all(m.qos == 1 for m in subscriber.messages("nursery/testroom/event"))
        schema = json.loads(Path(EVENT_SCHEMA_PATH).read_text())
        for event in events:
            jsonschema.validate(event, schema)
        crying = [m.text for m in subscriber.messages("nursery/testroom/state/crying")]
        assert "ON" in crying and crying[-1] == "OFF"
        assert subscriber.wait_for_payload("nursery/testroom/status", "offline") is not None
    finally:
        subscriber.close()
    late = Subscriber(broker, "nursery/testroom/#")  # a new subscriber sees the retained topics
    try:
        assert late.wait_for_payload("nursery/testroom/status", "offline", timeout=5).retain
        assert late.wait_for_payload("nursery/testroom/state/crying", "OFF", timeout=5).retain
    finally:
        late.close()


def _wait_for_start_event(subscriber: Subscriber) -> dict:
    messages = subscriber.wait_for(1, "nursery/testroom/event", timeout=30)
    assert messages, "no start event was published"
    return messages[0].json()


def test_sigterm_ends_open_events_and_goes_offline_within_two_seconds(tmp_path, fake_models, broker):
    clip = tone_scene(tmp_path / "long.wav", [(None, 1), ("Crying", 60)])
    subscriber = Subscriber(broker, "nursery/testroom/#")
    process = start_cli("replay", str(clip), "--realtime", "--quiet",
                        "--config", str(write_config(tmp_path, fake_models, broker)))
    try:
        start = _wait_for_start_event(subscriber)
        assert subscriber.wait_for_payload("nursery/testroom/status", "online") is not None
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        assert time.monotonic() - sent <= SHUTDOWN_LIMIT_SECONDS
        assert process.returncode == 0, process.stderr.read()
        assert wait_until(lambda: any(m.json()["phase"] == "end" for m in subscriber.messages(
            "nursery/testroom/event")), timeout=5)
        end = [m.json() for m in subscriber.messages("nursery/testroom/event")][-1]
        assert end["event_id"] == start["event_id"] and end["phase"] == "end"
        assert subscriber.wait_for_payload("nursery/testroom/status", "offline", timeout=5) is not None
    finally:
        process.kill()
        subscriber.close()


def test_sigkill_leaves_the_last_will_offline(tmp_path, fake_models, broker):
    clip = tone_scene(tmp_path / "long.wav", [(None, 1), ("Crying", 60)])
    subscriber = Subscriber(broker, "nursery/testroom/status")
    process = start_cli("replay", str(clip), "--realtime", "--quiet",
                        "--config", str(write_config(tmp_path, fake_models, broker, mqtt={"keepalive_seconds": 5})))
    try:
        assert subscriber.wait_for_payload("nursery/testroom/status", "online", timeout=30) is not None
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        assert subscriber.wait_for_payload("nursery/testroom/status", "offline", timeout=15) is not None
    finally:
        process.kill()
        subscriber.close()


def test_missing_models_give_one_clear_line(tmp_path):
    clip = tone_scene(tmp_path / "scene.wav", [("Crying", 2)])
    config = write_config(tmp_path, tmp_path / "nowhere" / "manifest.json")
    for command in ("replay", "classify"):
        result = cli(command, str(clip), "--config", str(config))
        assert result.returncode == 1
        assert "manifest" in result.stderr and "build-models" in result.stderr
        assert "Traceback" not in result.stderr


def test_unreadable_files_are_named_and_the_rest_is_processed(tmp_path, fake_models):
    good = tone_scene(tmp_path / "good.wav", [(None, 2), ("Crying", 4), (None, 6)])
    bad = tmp_path / "bad.wav"
    bad.write_text("this is not audio")
    config = write_config(tmp_path, fake_models)
    result = cli("replay", str(bad), str(good), "--config", str(config), "--events-jsonl", "-")
    assert result.returncode == 1
    assert "bad.wav" in result.stderr and "Traceback" not in result.stderr
    assert any(e["label"] == "Crying" for e in events_of(result.stdout))
    result = cli("classify", str(bad), str(good), "--config", str(config), "--json")
    assert result.returncode == 1 and "bad.wav" in result.stderr
    assert [json.loads(line)["label"] for line in result.stdout.splitlines()] == ["Crying"]
