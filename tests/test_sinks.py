"""Event sinks: readable lines, JSON lines, MQTT, and a fan-out that survives one failing sink."""

from __future__ import annotations

import io
import json
import logging

import pytest

from monitor.config import MqttConfig
from monitor.mqtt import MqttPublisher, Topics
from monitor.outbox import Outbox
from monitor.sinks import EventSink, FanoutSink, JsonlSink, MqttSink, PrintSink, SinkError, describe_event
from tests.helpers.broker import HOST, Subscriber

EVENTS = [
    {"schema": 1, "event_id": "ab12", "seq": 0, "phase": "start", "label": "Crying", "message_id": "ab12:0",
     "confidence": 0.873, "start_time": "2026-11-25T10:00:00Z"},
    {"schema": 1, "event_id": "ab12", "seq": 1, "phase": "end", "label": "Crying", "message_id": "ab12:1",
     "confidence": 0.912, "start_time": "2026-11-25T10:00:00Z"},
]


class RecordingSink:
    def __init__(self):
        self.events, self.statuses, self.closed = [], [], False

    def handle_event(self, payload):
        self.events.append(payload)

    def publish_status(self, payload):
        self.statuses.append(payload)

    def close(self, timeout=None):
        self.closed = True


class BrokenSink(RecordingSink):
    def handle_event(self, payload):
        raise OSError("disk full")

    def publish_status(self, payload):
        raise OSError("disk full")

    def close(self, timeout=None):
        raise OSError("disk full")


def test_print_sink_writes_one_readable_line_per_event():
    stream = io.StringIO()
    sink = PrintSink(stream)
    for payload in EVENTS:
        sink.handle_event(payload)
    lines = stream.getvalue().splitlines()
    assert len(lines) == len(EVENTS)
    assert lines[0] == "START Crying: event ab12 #0, confidence 0.87, at 2026-11-25T10:00:00Z"
    assert lines[1].startswith("END Crying: event ab12 #1, confidence 0.91")


def test_describe_event_tolerates_missing_optional_fields():
    line = describe_event({"event_id": "x", "seq": 3, "phase": "update", "label": "Screaming"})
    assert line == "UPDATE Screaming: event x #3"


def test_jsonl_sink_writes_flushed_json_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(str(path))
    sink.handle_event(EVENTS[0])
    assert [json.loads(line) for line in path.read_text().splitlines()] == EVENTS[:1], "flushed per event"
    sink.handle_event(EVENTS[1])
    sink.publish_status({"level_dbfs": -50})
    sink.close()
    assert [json.loads(line) for line in path.read_text().splitlines()] == EVENTS


def test_jsonl_sink_dash_is_stdout(capsys):
    sink = JsonlSink("-")
    sink.handle_event(EVENTS[0])
    sink.close()
    assert json.loads(capsys.readouterr().out) == EVENTS[0]


def test_jsonl_sink_unwritable_path_is_a_clear_error(tmp_path):
    with pytest.raises(SinkError, match="cannot open the events file"):
        JsonlSink(str(tmp_path / "no" / "such" / "dir" / "events.jsonl"))


def test_fanout_keeps_going_when_one_sink_fails(caplog):
    first, second = RecordingSink(), RecordingSink()
    fanout = FanoutSink([first, BrokenSink(), second])
    with caplog.at_level(logging.ERROR, logger="monitor.sinks"):
        for payload in EVENTS:
            fanout.handle_event(payload)
        fanout.publish_status({"gate_pass_fraction": 0.1})
        fanout.close(timeout=1.0)
    assert first.events == second.events == EVENTS
    assert first.statuses == second.statuses == [{"gate_pass_fraction": 0.1}]
    assert first.closed and second.closed
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == len(EVENTS) + 2
    assert all("BrokenSink" in e and "disk full" in e for e in errors)
    assert "ab12:0" in errors[0]


def test_every_sink_satisfies_the_protocol(tmp_path):
    publisher = MqttPublisher(MqttConfig(), "proto", Outbox(tmp_path / "outbox.sqlite"))
    sinks = [PrintSink(io.StringIO()), JsonlSink(str(tmp_path / "e.jsonl")), MqttSink(publisher), FanoutSink([])]
    assert all(isinstance(sink, EventSink) for sink in sinks)
    for sink in sinks:
        sink.close(timeout=0.5)


@pytest.mark.broker
def test_mqtt_sink_publishes_events_and_reports_health(broker, tmp_path):
    subscriber = Subscriber(broker, "nursery/sink-dev/event")
    cfg = MqttConfig(host=HOST, port=broker.port, reconnect_min_seconds=0.1, reconnect_max_seconds=0.4)
    publisher = MqttPublisher(cfg, "sink-dev", Outbox(tmp_path / "outbox.sqlite"))
    publisher.start()
    sink = MqttSink(publisher)
    try:
        for payload in EVENTS:
            sink.handle_event(payload)
        assert [m.json() for m in subscriber.wait_for(len(EVENTS))] == EVENTS
        health = sink.health()
        assert health.connected and health.last_error is None
        assert Topics.for_device("nursery", "sink-dev").event == subscriber.topic
    finally:
        sink.close(timeout=2.0)
        subscriber.close()
