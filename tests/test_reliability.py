"""The real daemon under the faults a nursery device meets: a broker outage during a replay, SIGKILL with events
queued, a microphone missing or unplugged, a stalled audio loop under the systemd watchdog.

Subprocess tests run `nursery-monitor` with the fake tone models (tests/fake_models.py) and a real mosquitto;
the microphone and stall tests run ``monitor.app.run_live`` in-process with a fake input stream, because a
fake sound card cannot be put into a separate process without test code in the product.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from monitor import app, capture
from monitor.capture import MIC_ERROR, MIC_OK, MIC_STARTING, Backoff
from monitor.config import load_config
from monitor.mqtt import Topics
from tests.helpers.audio import FakeDevice
from tests.helpers.broker import Subscriber, copies_identical, first_copies, published_again, wait_until
from tests.helpers.daemon import (
    DEVICE_ID,
    EVENTS_QUICKLY_OVER,
    RunningDaemon,
    queued_events,
    set_top_level,
    stderr_problems,
    tone_scene,
    write_config,
)
from tests.helpers.systemd import PING, WATCHDOG_USEC

TOPICS = Topics.for_device("nursery", DEVICE_ID)
RECONNECT_MAX_SECONDS = 1.0
"""write_config's mqtt.reconnect_max_seconds: the longest wait between two reconnect attempts."""
OUTAGE_SECONDS = 2.5 * RECONNECT_MAX_SECONDS
MESSAGES_DURING_OUTAGE = 3
DELIVERY_TIMEOUT_SECONDS = 30.0
SHUTDOWN_SECONDS = 10.0
"""health.shutdown_seconds for the outage test: time to drain the outbox after the replay ends."""
EVENTS_OFTEN = {**EVENTS_QUICKLY_OVER, "update_interval_seconds": 0.5}
"""Short events with an update every 0.5 s: several messages per tone burst."""
MIC_RETRY = {"retry_min_seconds": 0.1, "retry_max_seconds": 1.0}
STATUS_EVERY_SECOND = {"status_interval_seconds": 1.0}
PINGS_SEEN = 5
SILENT_PINGS = 5
"""Ping intervals without a ping that show the watchdog has stopped."""
STOP_TIMEOUT_SECONDS = 10.0
STALL_POLL_SECONDS = 0.05


# --- helpers ---------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_phases_in_order(messages: list[dict]) -> None:
    """Per event id: seq 0, 1, 2 ...; start first; nothing after an end; one start_time."""
    by_event: dict[str, list[dict]] = {}
    for message in messages:
        by_event.setdefault(message["event_id"], []).append(message)
    for event_id, parts in by_event.items():
        assert [p["seq"] for p in parts] == list(range(len(parts))), event_id
        assert parts[0]["phase"] == "start" and all(p["phase"] != "start" for p in parts[1:]), event_id
        assert all(p["phase"] != "end" for p in parts[:-1]), event_id
        assert len({p["start_time"] for p in parts}) == 1, event_id


def max_attempts(seconds: float, retry: dict) -> int:
    """The most open attempts a backoff of ``retry`` allows in ``seconds``: one at once, then one per delay."""
    backoff, attempts, waited = Backoff(retry["retry_min_seconds"], retry["retry_max_seconds"]), 1, 0.0
    while (waited := waited + backoff.next_delay()) <= seconds:
        attempts += 1
    return attempts


# --- broker outage and SIGKILL -----------------------------------------------------------------------


OUTAGE_SCENE = [(None, 1.0), ("Crying", 2.5), (None, 4.0), ("Screaming", 2.5), (None, 2.0), ("Crying", 2.5),
                (None, 3.5)]
"""Three bursts; the first event has ended before the outage begins, so no event message is in flight then."""


def test_broker_outage_during_replay_loses_and_repeats_no_event(tmp_path, fake_models, broker, record_property):
    clip = tone_scene(tmp_path / "bursts.wav", OUTAGE_SCENE)
    config = write_config(tmp_path, fake_models, broker, fusion=EVENTS_OFTEN,
                          health={"shutdown_seconds": SHUTDOWN_SECONDS})
    sent_file = tmp_path / "sent.jsonl"
    subscriber = Subscriber(broker, TOPICS.event, persistent=True, client_id="reliability-outage")
    try:
        with RunningDaemon("replay", str(clip), "--realtime", "--quiet", "--events-jsonl", str(sent_file),
                           "--config", str(config)) as daemon:
            assert wait_until(lambda: any(m["phase"] == "end" for m in first_copies(subscriber.messages(TOPICS.event))),
                              DELIVERY_TIMEOUT_SECONDS), daemon.text()
            delivered_before_outage = {m["message_id"] for m in first_copies(subscriber.messages(TOPICS.event))}
            broker.stop()
            outage_began, sent_before = time.monotonic(), len(read_jsonl(sent_file))
            assert wait_until(lambda: time.monotonic() - outage_began >= OUTAGE_SECONDS
                              and len(read_jsonl(sent_file)) >= sent_before + MESSAGES_DURING_OUTAGE,
                              DELIVERY_TIMEOUT_SECONDS), "no events during the outage"
            sent_during_outage = len(read_jsonl(sent_file)) - sent_before
            broker.start()
            assert daemon.wait(DELIVERY_TIMEOUT_SECONDS + SHUTDOWN_SECONDS) == 0, daemon.text()
        sent = read_jsonl(sent_file)
        wait_until(lambda: len(first_copies(subscriber.messages(TOPICS.event))) >= len(sent))
        received = subscriber.messages(TOPICS.event)
        delivered = first_copies(received)
    finally:
        subscriber.close()

    for name, value in (("sent", len(sent)), ("sent_during_outage", sent_during_outage),
                        ("delivered", len(delivered)), ("copies_received", len(received))):
        record_property(name, value)  # the figures in docs/RELIABILITY.md (pytest --junitxml)
    labels = [m["label"] for m in sent if m["phase"] == "start"]
    assert labels == ["Crying", "Screaming", "Crying"]
    assert sent_during_outage >= MESSAGES_DURING_OUTAGE
    assert delivered == sent, "every message, in order, with its original payload and timestamps"
    assert copies_identical(received), "a repeat is an identical copy"
    assert published_again(received, delivered_before_outage) == [], "nothing delivered before the outage is sent again"
    assert_phases_in_order(delivered)
    assert daemon.matching("MQTT: lost the connection"), "the outage was noticed"
    assert len(daemon.matching("MQTT: connected to")) >= 2, "and the daemon reconnected"
    assert stderr_problems(daemon.text()) == []


KILL_SCENE = [(None, 1.0), ("Crying", 2.5), (None, 3.0), ("Screaming", 60.0)]


def test_events_queued_when_the_daemon_is_killed_are_delivered_after_restart(tmp_path, fake_models, broker,
                                                                            record_property):
    clip = tone_scene(tmp_path / "scene.wav", KILL_SCENE)
    # Updates only every 5 s (the default): no message is half-written (in the JSON lines, not yet in the
    # outbox) when the kill lands right after the Screaming start.
    config = write_config(tmp_path, fake_models, broker, fusion=EVENTS_QUICKLY_OVER,
                          audio={"device": "no-such-mic", **MIC_RETRY})
    outbox, sent_file = tmp_path / "outbox.sqlite", tmp_path / "sent.jsonl"
    broker.stop()

    def screaming_started_and_queued() -> bool:
        sent = read_jsonl(sent_file)
        return any(m["label"] == "Screaming" for m in sent) and queued_events(outbox) == len(sent)

    with RunningDaemon("replay", str(clip), "--realtime", "--quiet", "--events-jsonl", str(sent_file),
                       "--config", str(config)) as first:
        assert wait_until(screaming_started_and_queued, DELIVERY_TIMEOUT_SECONDS), first.text()
        first.kill()
    sent = read_jsonl(sent_file)
    assert queued_events(outbox) == len(sent), "the killed daemon wrote nothing after its last event"
    assert [m["phase"] for m in sent if m["label"] == "Crying"][-1] == "end"

    broker.start()
    subscriber = Subscriber(broker, f"nursery/{DEVICE_ID}/#")
    try:
        with RunningDaemon("run", "--config", str(config)) as restarted:  # as systemd restarts the service
            assert wait_until(lambda: len(subscriber.messages(TOPICS.event)) >= len(sent), DELIVERY_TIMEOUT_SECONDS)
            assert wait_until(lambda: queued_events(outbox) == 0)
            cleared = wait_until(lambda: [m.text for m in subscriber.messages(TOPICS.state["Screaming"])][-2:]
                                 == ["ON", "OFF"])
            assert restarted.terminate() == 0, restarted.text()
        delivered = [m.json() for m in subscriber.messages(TOPICS.event)]
    finally:
        subscriber.close()

    record_property("sent", len(sent))
    record_property("delivered", len(delivered))
    assert delivered == sent, "the queued events, in order, unchanged"
    assert cleared, "the restarted daemon clears the state the killed one left ON"
    assert stderr_problems(restarted.text()) == []


# --- microphone ----------------------------------------------------------------------------------------


def health_messages(subscriber: Subscriber) -> list[dict]:
    return [m.json() for m in subscriber.messages(TOPICS.health)]


def wait_for_health(subscriber: Subscriber, condition, after: int = 0) -> dict | None:
    """The first status message after the ``after`` first ones that satisfies ``condition``."""
    found: list[dict] = []

    def seen() -> bool:
        found[:] = [h for h in health_messages(subscriber)[after:] if condition(h)]
        return bool(found)

    return found[0] if wait_until(seen, DELIVERY_TIMEOUT_SECONDS) else None


class LiveDaemon:
    """``monitor.app.run_live`` in a thread, with its stop event in the test's hands instead of a signal."""

    def __init__(self, cfg, monkeypatch):
        self.stop = threading.Event()
        monkeypatch.setattr(app, "stop_on_signals", lambda: nullcontext(self.stop))
        self.exit_codes: list[int] = []
        self.thread = threading.Thread(target=lambda: self.exit_codes.append(app.run_live(cfg, argparse.Namespace())),
                                       name="run-live", daemon=True)

    @contextmanager
    def running(self) -> Iterator[LiveDaemon]:
        self.thread.start()
        try:
            yield self
        finally:
            self.stop.set()
            self.thread.join(STOP_TIMEOUT_SECONDS)
        assert not self.thread.is_alive(), "run_live did not stop"
        assert self.exit_codes == [app.EXIT_OK]


def test_run_survives_a_microphone_missing_at_start_and_unplugged_mid_run(tmp_path, fake_models, broker,
                                                                          monkeypatch):
    cfg = load_config(write_config(tmp_path, fake_models, broker, audio={"block_seconds": 0.1, **MIC_RETRY},
                                   health=STATUS_EVERY_SECOND))
    device = FakeDevice(rate=48000, channels=2, period=cfg.audio.block_seconds)  # real-time pace
    device.unplug()
    monkeypatch.setattr(capture, "open_sounddevice_stream", device.factory)
    subscriber = Subscriber(broker, TOPICS.health)
    try:
        started = time.monotonic()
        with LiveDaemon(cfg, monkeypatch).running():
            missing = wait_for_health(subscriber, lambda h: h["mic"]["state"] == MIC_ERROR)
            attempts_while_missing, missing_for = device.open_attempts, time.monotonic() - started
            device.present = True
            capturing = wait_for_health(subscriber, lambda h: h["mic"]["state"] == MIC_OK and h["windows_processed"])

            seen = len(health_messages(subscriber))
            device.unplug()
            unplugged = wait_for_health(subscriber, lambda h: h["mic"]["state"] == MIC_ERROR, after=seen)
            seen = len(health_messages(subscriber))
            device.present = True
            recovered = wait_for_health(subscriber, lambda h: h["mic"]["state"] == MIC_OK
                                        and h["audio_seconds"] > capturing["audio_seconds"], after=seen)
    finally:
        subscriber.close()

    assert missing is not None and "no input device matching" in missing["mic"]["last_error"]
    assert 2 <= attempts_while_missing <= max_attempts(missing_for, MIC_RETRY), "retries, with backoff"
    assert capturing is not None, "capture starts when the device appears"
    assert unplugged is not None and unplugged["mic"]["last_error"]
    assert recovered is not None, "capture resumes when the device returns"
    assert len(device.streams) >= 2 and device.requests[-1].reopening


def test_run_without_its_microphone_keeps_running_and_reports_mic_error(tmp_path, fake_models, broker):
    config = write_config(tmp_path, fake_models, broker, audio={"device": "no-such-mic", **MIC_RETRY},
                          health=STATUS_EVERY_SECOND)
    subscriber = Subscriber(broker, f"nursery/{DEVICE_ID}/#")
    try:
        with RunningDaemon("run", "--config", str(config)) as daemon:
            assert subscriber.wait_for_payload(TOPICS.status, "online", DELIVERY_TIMEOUT_SECONDS) is not None
            wait_until(lambda: sum(h["mic"]["state"] == MIC_ERROR for h in health_messages(subscriber)) >= 3,
                       DELIVERY_TIMEOUT_SECONDS)
            statuses = health_messages(subscriber)
            assert daemon.alive, daemon.text()
            assert daemon.terminate() == 0, daemon.text()
        assert subscriber.wait_for_payload(TOPICS.status, "offline") is not None
    finally:
        subscriber.close()

    # On a loaded machine the first status can go out before the first attempt to open the microphone.
    states = [status["mic"]["state"] for status in statuses]
    errors = [status for status in statuses if status["mic"]["state"] == MIC_ERROR]
    assert len(errors) >= 3 and set(states[:len(states) - len(errors)]) <= {MIC_STARTING}, states
    for status in errors:
        assert "no input device matching 'no-such-mic'" in status["mic"]["last_error"]
    assert len(daemon.matching("microphone error")) == 1, "one warning, not one per retry"
    assert stderr_problems(daemon.text()) == []


# --- systemd watchdog ------------------------------------------------------------------------------------


def test_daemon_notifies_ready_and_pets_the_watchdog_until_stopped(tmp_path, fake_models, notify_listener):
    config = write_config(tmp_path, fake_models, audio={"device": "no-such-mic", **MIC_RETRY},
                          health=STATUS_EVERY_SECOND)
    with RunningDaemon("run", "--config", str(config)) as daemon:
        assert notify_listener.wait_for("READY=1"), daemon.text()
        assert len(notify_listener.wait_for(PING, PINGS_SEEN)) >= PINGS_SEEN, "pings while the loop runs"
        # the first status may still say "starting" on a loaded machine; the mic error must follow
        status = notify_listener.wait_for(f"STATUS=mic {MIC_ERROR}")
        assert daemon.terminate() == 0, daemon.text()
    assert notify_listener.wait_for("STOPPING=1")
    assert status, notify_listener.messages("STATUS=")


class StallingModel:
    """Wraps the YAMNet classifier; while ``held`` is clear a call blocks, as a hung inference would (until the
    daemon is told to stop, so a failing test cannot leave the loop hanging)."""

    def __init__(self, model, give_up: threading.Event):
        self._model = model
        self.version = model.version
        self.held = threading.Event()
        self.held.set()
        self.blocked = threading.Event()
        self._give_up = give_up

    def predict(self, prepared):
        if not self.held.is_set():
            self.blocked.set()
            while not self.held.wait(STALL_POLL_SECONDS) and not self._give_up.is_set():
                pass
        return self._model.predict(prepared)


def test_watchdog_stops_while_the_audio_loop_is_stuck_and_resumes_after(tmp_path, fake_models, notify_listener,
                                                                        monkeypatch, caplog):
    cfg = load_config(set_top_level(write_config(
        tmp_path, fake_models, audio={"block_seconds": 0.1, **MIC_RETRY}, health={"stall_seconds": 1.0},
        gate={"noise_floor_warmup_seconds": 600.0}), log_level="INFO"))  # every window reaches the model
    device = FakeDevice(rate=16000, channels=1, period=cfg.audio.block_seconds)
    monkeypatch.setattr(capture, "open_sounddevice_stream", device.factory)
    live = LiveDaemon(cfg, monkeypatch)
    stalling: list[StallingModel] = []
    load_real = app.load_classifiers

    def load_stalling(cfg):
        classifiers = load_real(cfg)
        classifiers.yamnet = StallingModel(classifiers.yamnet, give_up=live.stop)
        stalling.append(classifiers.yamnet)
        return classifiers

    monkeypatch.setattr(app, "load_classifiers", load_stalling)
    interval = WATCHDOG_USEC / 2 / 1e6
    with caplog.at_level(logging.INFO, logger="monitor"), live.running():
        assert notify_listener.wait_for("READY=1")
        assert wait_until(lambda: device.blocks_sent > 0)
        flowing = time.monotonic()
        assert wait_until(lambda: notify_listener.count_since(flowing) >= PINGS_SEEN), "pings while audio flows"

        [model] = stalling
        model.held.clear()
        assert model.blocked.wait(STOP_TIMEOUT_SECONDS), "the loop reached the model"
        assert wait_until(lambda: "audio loop stalled" in caplog.text)
        stalled = time.monotonic() + interval  # a tick that read the clock before the stall may still land
        time.sleep(SILENT_PINGS * interval)  # absence of pings can only be seen over time
        pings_while_stuck = notify_listener.count_since(stalled)

        model.held.set()
        released = time.monotonic()
        assert wait_until(lambda: notify_listener.count_since(released) >= 1), "pings resume"
    assert pings_while_stuck == 0
    assert "audio loop alive again" in caplog.text
    assert notify_listener.wait_for("STOPPING=1")
