"""MqttPublisher against a real mosquitto: delivery, retained state, last will, outages and restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from monitor.config import MqttConfig
from monitor.mqtt import OFFLINE, ONLINE, MqttPublisher, Topics, discovery_messages, state_change
from monitor.outbox import Outbox
from tests.helpers.broker import (
    HOST,
    Broker,
    SilentBroker,
    Subscriber,
    copies_identical,
    first_copies,
    published_again,
    started_publishers,
    wait_until,
)

pytestmark = pytest.mark.broker

REPO_ROOT = Path(__file__).resolve().parents[1]
DEVICE = "nursery-test"
TOPICS = Topics.for_device("nursery", DEVICE)
FAST_RECONNECT = {"reconnect_min_seconds": 0.1, "reconnect_max_seconds": 0.4}
CLOSE_TIMEOUT = 3.0


def mqtt_config(broker: Broker, **overrides) -> MqttConfig:
    return MqttConfig(host=HOST, port=broker.port, **{**FAST_RECONNECT, **overrides})


def event_payload(event_id: str, seq: int, phase: str, label: str = "Crying") -> dict:
    """The fields the publisher reads, plus opaque extras that must arrive untouched."""
    return {"schema": 1, "event_id": event_id, "seq": seq, "phase": phase, "label": label,
            "message_id": f"{event_id}:{seq}", "confidence": 0.5 + seq / 100, "start_time": "2026-11-25T10:00:00Z",
            "scores": {"Crying": 0.9, "Screaming": 0.05, "Normal": 0.05}, "note": "naïve ünïcode"}


def event_sequence(event_id: str, updates: int, label: str = "Crying") -> list[dict]:
    phases = ["start", *["update"] * updates, "end"]
    return [event_payload(event_id, seq, phase, label) for seq, phase in enumerate(phases)]


@pytest.fixture
def make_publisher(tmp_path):
    """Started publishers on a given broker; each is closed at teardown."""
    with started_publishers(tmp_path, DEVICE, CLOSE_TIMEOUT, outbox_rows=1000) as start:
        def make(broker: Broker, outbox_path: Path | None = None, **overrides) -> MqttPublisher:
            return start(mqtt_config(broker, **overrides), outbox_path)

        yield make


@pytest.fixture
def subscribers():
    made: list[Subscriber] = []

    def make(broker: Broker, topic: str = f"nursery/{DEVICE}/#", **options) -> Subscriber:
        subscriber = Subscriber(broker, topic, **options)
        made.append(subscriber)
        return subscriber

    yield make
    for subscriber in made:
        subscriber.close()


def test_events_arrive_in_order_with_qos1_and_intact_payload(broker, make_publisher, subscribers):
    subscriber = subscribers(broker)
    publisher = make_publisher(broker)
    sent = event_sequence("ev-1", updates=2)
    for payload in sent:
        assert publisher.publish_event(payload)
    received = subscriber.wait_for(len(sent), TOPICS.event)
    assert [m.json() for m in received] == sent
    assert all(m.qos == 1 and not m.retain for m in received)


def test_state_and_status_are_retained(broker, make_publisher, subscribers):
    publisher = make_publisher(broker)
    publisher.publish_event(event_payload("ev-2", 0, "start", "Screaming"))
    assert wait_until(lambda: publisher.connected and len(publisher.outbox) == 0)
    late = subscribers(broker)  # connects after the fact: sees only what the broker retained
    assert late.wait_for_payload(TOPICS.status, ONLINE).retain
    assert late.wait_for_payload(TOPICS.state["Screaming"], "ON").retain
    assert late.wait_for_payload(TOPICS.state["Crying"], "OFF").retain, "states start OFF"
    assert late.messages(TOPICS.event) == [], "events are not retained"

    publisher.publish_event(event_payload("ev-2", 1, "end", "Screaming"))
    assert wait_until(lambda: len(publisher.outbox) == 0)
    assert subscribers(broker).wait_for_payload(TOPICS.state["Screaming"], "OFF").retain


def test_close_publishes_offline_retained(broker, make_publisher, subscribers):
    publisher = make_publisher(broker)
    assert wait_until(lambda: publisher.connected)
    publisher.close(CLOSE_TIMEOUT)
    assert not publisher.connected
    assert subscribers(broker).wait_for_payload(TOPICS.status, OFFLINE).retain


def test_health_message_is_json_not_retained(broker, make_publisher, subscribers):
    subscriber = subscribers(broker)
    publisher = make_publisher(broker)
    assert wait_until(lambda: publisher.connected)
    status = {"level_dbfs": -48.2, "clipped_blocks": 0, "overflows": 1, "gate_pass_fraction": 0.12,
              "inference_ms": {"yamnet": 11.0}, "mqtt": publisher.health().to_dict()}
    assert publisher.publish_status(status)
    [received] = subscriber.wait_for(1, TOPICS.health)
    assert received.json() == status
    assert not received.retain and received.qos == 0


def test_a_message_stays_in_the_outbox_until_its_puback(tmp_path):
    silent = SilentBroker()
    publisher = MqttPublisher(mqtt_config(silent), DEVICE, Outbox(tmp_path / "outbox.sqlite"))
    try:
        publisher.start()
        payload = event_payload("ev-7", 0, "update")
        publisher.publish_event(payload)
        head = publisher.outbox.peek_batch(1)[0]  # the OFF state every start queues first
        assert wait_until(lambda: head.topic.encode() in silent.received()), "the head was sent"
        queued = publisher.outbox.peek_batch(10)
        assert queued[0] == head, "unacknowledged, so still at the head"
        assert [m.message_id for m in queued[len(TOPICS.state):]] == [payload["message_id"]]
        assert payload["message_id"].encode() not in silent.received(), "nothing overtakes the unacked head"
    finally:
        publisher.close(timeout=0.5)
        silent.close()


def test_home_assistant_discovery(broker, make_publisher, subscribers):
    publisher = make_publisher(broker, discovery=True)
    assert wait_until(lambda: publisher.connected)
    received = subscribers(broker, "homeassistant/#").wait_for(2)  # what the broker retained
    assert sorted(m.topic for m in received) == [f"homeassistant/binary_sensor/{DEVICE}_{slug}/config"
                                                 for slug in ("crying", "screaming")]
    configs = {m.json()["state_topic"]: m.json() for m in received}
    assert set(configs) == set(TOPICS.state.values())
    assert all(m.retain for m in received)
    for config in configs.values():
        assert config["device_class"] == "sound"
        assert config["availability_topic"] == TOPICS.status
        assert (config["payload_available"], config["payload_not_available"]) == (ONLINE, OFFLINE)
        assert config["device"]["identifiers"]
    assert len({c["unique_id"] for c in configs.values()}) == 2


def test_state_change_and_discovery_are_pure():
    assert state_change(event_payload("e", 0, "start", "Crying"), TOPICS) == (TOPICS.state["Crying"], "ON")
    assert state_change(event_payload("e", 1, "update", "Crying"), TOPICS) is None
    assert state_change(event_payload("e", 2, "end", "Screaming"), TOPICS) == (TOPICS.state["Screaming"], "OFF")
    assert state_change(event_payload("e", 0, "start", "Normal"), TOPICS) is None
    [(topic, _), _] = discovery_messages("room 1.a", "homeassistant", TOPICS)
    assert topic == "homeassistant/binary_sensor/room_1_a_crying/config", "ids limited to HA's character set"


def test_start_does_not_block_and_queues_while_the_broker_is_down(broker, make_publisher, subscribers):
    broker.stop()
    publisher_box: list[MqttPublisher] = []
    starter = threading.Thread(target=lambda: publisher_box.append(make_publisher(broker)))
    starter.start()
    starter.join(CLOSE_TIMEOUT)
    assert not starter.is_alive(), "start() must return while the broker is down"
    [publisher] = publisher_box
    sent = event_sequence("ev-3", updates=1)
    for payload in sent:
        publisher.publish_event(payload)
    assert wait_until(lambda: publisher.last_error is not None)
    assert not publisher.connected
    assert "Connection refused" in publisher.last_error
    assert len(publisher.outbox) >= len(sent)

    broker.start()
    subscriber = subscribers(broker)
    assert [m.json() for m in subscriber.wait_for(len(sent), TOPICS.event)] == sent
    assert wait_until(lambda: publisher.connected) and publisher.last_error is None


def test_state_changes_are_reported_to_the_observer(broker, tmp_path):
    broker.stop()
    changes: list[tuple[bool, str | None]] = []
    publisher = MqttPublisher(mqtt_config(broker), DEVICE, Outbox(tmp_path / "outbox.sqlite"),
                              on_state_change=lambda connected, error: changes.append((connected, error)))
    try:
        publisher.start()
        with pytest.raises(RuntimeError, match="called twice"):
            publisher.start()
        assert wait_until(lambda: len(changes) >= 1)
        broker.start()
        assert wait_until(lambda: changes[-1] == (True, None))
        assert changes[0][0] is False and "Connection refused" in changes[0][1]
        assert publisher.connected
    finally:
        publisher.close(CLOSE_TIMEOUT)


def test_broker_outage_longer_than_backoff_loses_and_repeats_nothing(broker, make_publisher, subscribers):
    subscriber = subscribers(broker, persistent=True, client_id="outage-subscriber")
    publisher = make_publisher(broker)
    sent = event_sequence("ev-4", updates=18)
    before, during, after = sent[:5], sent[5:15], sent[15:]
    for payload in before:
        publisher.publish_event(payload)
    # The broker acknowledges a message before it delivers it; wait for both, so the outage begins with nothing
    # in flight anywhere (else the broker's re-send after its restart is the subscriber's only copy).
    assert wait_until(lambda: len(publisher.outbox) == 0 and len(subscriber.messages(TOPICS.event)) == len(before))
    broker.stop()
    for payload in during:  # the outage lasts several of the longest reconnect waits
        publisher.publish_event(payload)
        time.sleep(FAST_RECONNECT["reconnect_max_seconds"] / 4)
    assert wait_until(lambda: publisher.health().failed_connects >= 2)
    broker.start()
    for payload in after:
        publisher.publish_event(payload)
    assert wait_until(lambda: len(publisher.outbox) == 0)
    assert wait_until(lambda: len(first_copies(subscriber.messages(TOPICS.event))) >= len(sent))
    received = subscriber.messages(TOPICS.event)
    assert first_copies(received) == sent, "every event, in order, payload intact"
    assert copies_identical(received), "a repeat is an identical copy"
    assert published_again(received, {m["message_id"] for m in before}) == [], \
        "what the broker acknowledged before the outage is not published again"


def test_broker_killed_with_messages_in_flight_loses_nothing(broker, make_publisher, subscribers):
    """At-least-once: a message whose PUBACK was lost may come twice, identical, and dedupes on message_id."""
    subscriber = subscribers(broker, persistent=True, client_id="in-flight-subscriber")
    publisher = make_publisher(broker)
    sent = event_sequence("ev-8", updates=13)
    for payload in sent[:10]:
        publisher.publish_event(payload)
    broker.stop()  # without waiting: some of these are queued, one may be in flight
    for payload in sent[10:]:
        publisher.publish_event(payload)
    broker.start()
    assert wait_until(lambda: len(first_copies(subscriber.messages(TOPICS.event))) == len(sent))
    assert wait_until(lambda: len(publisher.outbox) == 0)
    received = subscriber.messages(TOPICS.event)
    assert first_copies(received) == sent, "nothing lost, in order"
    assert copies_identical(received), "a repeat is an identical copy"


PUBLISHER_CHILD = """
import json, sys, time
from monitor.config import MqttConfig
from monitor.mqtt import MqttPublisher
from monitor.outbox import Outbox
settings = json.loads(sys.argv[1])
publisher = MqttPublisher(MqttConfig(**settings["mqtt"]), settings["device_id"], Outbox(settings["outbox"]))
publisher.start()
for payload in settings["events"]:
    publisher.publish_event(payload)
print("queued", flush=True)
while True:
    print("connected" if publisher.connected else "waiting", flush=True)
    time.sleep(0.05)
"""


def spawn_publisher(broker: Broker, outbox: Path, events: list[dict]) -> subprocess.Popen:
    settings = {"mqtt": {"host": HOST, "port": broker.port, **FAST_RECONNECT}, "device_id": DEVICE,
                "outbox": str(outbox), "events": events}
    return subprocess.Popen([sys.executable, "-c", PUBLISHER_CHILD, json.dumps(settings)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until(child: subprocess.Popen, line: str) -> bool:
    for output in child.stdout:
        if output.strip() == line:
            return True
    return False


def kill(child: subprocess.Popen) -> None:
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    child.stderr.close()


def test_last_will_offline_after_sigkill(broker, tmp_path, subscribers):
    subscriber = subscribers(broker)
    child = spawn_publisher(broker, tmp_path / "outbox.sqlite", [])
    try:
        assert read_until(child, "connected")
        assert subscriber.wait_for_payload(TOPICS.status, ONLINE)
    finally:
        kill(child)
    offline = [m for m in subscriber.wait_for(2, TOPICS.status) if m.text == OFFLINE]
    assert offline, "the broker publishes the last will when the publisher dies"
    assert subscribers(broker).wait_for_payload(TOPICS.status, OFFLINE).retain


def test_events_queued_by_a_killed_publisher_are_delivered_by_the_next(broker, tmp_path, make_publisher,
                                                                      subscribers):
    outbox = tmp_path / "outbox.sqlite"
    sent = event_sequence("ev-5", updates=3) + event_sequence("ev-6", updates=0, label="Screaming")
    broker.stop()
    child = spawn_publisher(broker, outbox, sent)
    try:
        assert read_until(child, "queued")
    finally:
        kill(child)
    broker.start()
    subscriber = subscribers(broker)
    publisher = make_publisher(broker, outbox_path=outbox)
    assert [m.json() for m in subscriber.wait_for(len(sent), TOPICS.event)] == sent
    assert wait_until(lambda: len(publisher.outbox) == 0)
    assert subscriber.wait_for_payload(TOPICS.state["Screaming"], "OFF")


def test_an_event_payload_without_its_keys_is_refused_clearly(broker, make_publisher):
    publisher = make_publisher(broker)
    with pytest.raises(ValueError, match="lacks event_id"):
        publisher.publish_event({"seq": 0, "phase": "start", "label": "Crying"})
