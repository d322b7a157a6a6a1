"""The durable outbox: order, acks, dedupe, bounds, and survival of a killed process."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.outbox import Outbox, OutboxError

REPO_ROOT = Path(__file__).resolve().parents[1]
TOPIC = "nursery/test/event"
STATE_TOPIC = "nursery/test/state/crying"


def put_event(outbox: Outbox, message_id: str, is_event: bool = True, topic: str = TOPIC) -> bool:
    return outbox.put(topic, f'{{"id": "{message_id}"}}'.encode(), message_id=message_id, is_event=is_event)


def ids(outbox: Outbox, n: int = 1000) -> list[str]:
    return [message.message_id for message in outbox.peek_batch(n)]


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(tmp_path / "outbox.sqlite", max_rows=100)
    yield box
    box.close()


def test_fifo_peek_does_not_remove_and_ack_does(outbox):
    for message_id in ("a", "b", "c"):
        assert put_event(outbox, message_id)
    assert ids(outbox, 2) == ["a", "b"]
    assert ids(outbox, 2) == ["a", "b"]
    assert len(outbox) == 3
    head = outbox.peek_batch(1)[0]
    assert (head.topic, head.payload, head.qos, head.retain) == (TOPIC, b'{"id": "a"}', 1, False)
    outbox.ack(head.row_id)
    assert ids(outbox) == ["b", "c"]
    assert len(outbox) == 2


def test_same_message_id_is_never_stored_twice(outbox):
    assert put_event(outbox, "e1:0")
    assert not put_event(outbox, "e1:0")
    assert ids(outbox) == ["e1:0"]
    outbox.ack(outbox.peek_batch(1)[0].row_id)
    assert not put_event(outbox, "e1:0"), "a delivered message must not be queued again"
    assert len(outbox) == 0


def test_messages_survive_reopening(tmp_path):
    path = tmp_path / "outbox.sqlite"
    first = Outbox(path, max_rows=100)
    for message_id in ("a", "b", "c"):
        put_event(first, message_id)
    first.ack(first.peek_batch(1)[0].row_id)
    first.close()
    second = Outbox(path, max_rows=100)
    assert ids(second) == ["b", "c"]
    assert not put_event(second, "a"), "delivered ids are remembered across restarts"
    second.close()


CHILD_PUTS_FOREVER = """
import sys
from monitor.outbox import Outbox
box = Outbox(sys.argv[1], max_rows=100000)
n = 0
while True:
    box.put("nursery/test/event", b"x" * 200, message_id=f"m{n}")
    print(f"m{n}", flush=True)
    n += 1
"""


def test_every_confirmed_put_survives_sigkill_in_order(tmp_path):
    path = tmp_path / "outbox.sqlite"
    child = subprocess.Popen([sys.executable, "-c", CHILD_PUTS_FOREVER, str(path)], cwd=REPO_ROOT,
                             stdout=subprocess.PIPE, text=True)
    confirmed = [child.stdout.readline().strip() for _ in range(50)]
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    survived = ids(Outbox(path, max_rows=100000), 100000)
    assert survived[:len(confirmed)] == confirmed
    assert survived == [f"m{n}" for n in range(len(survived))], "in order, no gaps, no duplicates"


def test_full_outbox_drops_superseded_states_then_oldest_events_and_warns(tmp_path, caplog):
    box = Outbox(tmp_path / "outbox.sqlite", max_rows=3)
    put_event(box, "s1", is_event=False, topic=STATE_TOPIC)
    put_event(box, "e1")
    put_event(box, "s2", is_event=False, topic=STATE_TOPIC)
    with caplog.at_level(logging.WARNING, logger="monitor.outbox"):
        put_event(box, "e2")
        assert ids(box) == ["e1", "s2", "e2"], "s1 is superseded by s2"
        put_event(box, "e3")
        assert ids(box) == ["s2", "e2", "e3"], "the current state outlives old events"
    assert box.dropped == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "s1" in warnings[0] and "e1" in warnings[1]
    box.close()


def test_default_bound_comes_from_the_config_schema(tmp_path):
    from monitor.config import MqttConfig

    box = Outbox(tmp_path / "outbox.sqlite")
    assert box.max_rows == MqttConfig().outbox_max_rows
    box.close()


def test_a_file_that_is_not_an_outbox_gives_a_clear_error(tmp_path):
    path = tmp_path / "outbox.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match="cannot open the MQTT outbox"):
        Outbox(path)
