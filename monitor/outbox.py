"""A durable FIFO of outgoing MQTT messages in SQLite.

Every event is written here before anything is sent, so an unreachable broker or a killed process
loses nothing: whatever was put and not acked is handed out again, in order, after a restart.
WAL journaling with ``synchronous=FULL`` makes each committed ``put`` survive a power cut.

Delivery is at-least-once: a crash after the broker's PUBACK but before ``ack`` sends that message
again on restart. Consumers dedupe on ``message_id``, which the outbox itself never stores twice
(also not shortly after it was delivered: recently acked ids are remembered).

The outbox is bounded (``mqtt.outbox_max_rows``). When it is full, a superseded state message
goes first, then the oldest event; every drop is logged and counted in ``dropped``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .config import MqttConfig

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    row_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT    NOT NULL UNIQUE,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    qos        INTEGER NOT NULL,
    retain     INTEGER NOT NULL,
    is_event   INTEGER NOT NULL,
    created_at REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS delivered (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT    NOT NULL UNIQUE
);
"""
# AUTOINCREMENT: row ids are never reused, so ordering by row_id is insertion order even after deletes.


class OutboxError(RuntimeError):
    """The outbox file cannot be opened or is not an outbox."""


@dataclass(frozen=True)
class OutboxMessage:
    row_id: int
    message_id: str
    topic: str
    payload: bytes
    qos: int
    retain: bool
    is_event: bool
    created_at: float


class Outbox:
    """SQLite-backed FIFO; safe to share between one producer thread and one sender thread."""

    def __init__(self, path: str | os.PathLike, max_rows: int | None = None):
        if max_rows is None:
            max_rows = MqttConfig().outbox_max_rows
        if max_rows < 1:
            raise ValueError(f"outbox max_rows must be at least 1, got {max_rows}")
        self.path = Path(path)
        self.max_rows = max_rows
        self.dropped = 0
        """Messages discarded because the outbox was full (also logged one by one)."""
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"cannot open the MQTT outbox {self.path}: {exc}") from None

    def put(self, topic: str, payload: bytes, *, message_id: str, qos: int = 1, retain: bool = False,
            is_event: bool = True) -> bool:
        """Store a message durably; False (and nothing stored) if ``message_id`` is already known."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if self._is_known(message_id):
                log.debug("outbox already holds or delivered %s: not stored again", message_id)
                return False
            if self._count() >= self.max_rows:
                self._drop_one()
            self._db.execute(
                "INSERT INTO outbox (message_id, topic, payload, qos, retain, is_event, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (message_id, topic, bytes(payload), qos, int(retain), int(is_event), time.time()))
            return True

    def peek_batch(self, n: int) -> list[OutboxMessage]:
        """The oldest ``n`` unacknowledged messages, oldest first (they stay until acked)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT row_id, message_id, topic, payload, qos, retain, is_event, created_at"
                " FROM outbox ORDER BY row_id LIMIT ?", (n,)).fetchall()
        return [OutboxMessage(row_id, message_id, topic, bytes(payload), qos, bool(retain), bool(is_event), created)
                for row_id, message_id, topic, payload, qos, retain, is_event, created in rows]

    def ack(self, row_id: int) -> None:
        """The broker has the message: forget it, but remember its id so it is never queued again."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT message_id FROM outbox WHERE row_id = ?", (row_id,)).fetchone()
            if row is None:
                return
            self._db.execute("DELETE FROM outbox WHERE row_id = ?", (row_id,))
            self._db.execute("INSERT OR IGNORE INTO delivered (message_id) VALUES (?)", row)
            # Remember as many delivered ids as the outbox can hold: enough to catch a replayed producer.
            self._db.execute("DELETE FROM delivered WHERE seq <= (SELECT MAX(seq) FROM delivered) - ?",
                             (self.max_rows,))

    def __len__(self) -> int:
        with self._lock:
            return self._count()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def _is_known(self, message_id: str) -> bool:
        return any(self._db.execute(f"SELECT 1 FROM {table} WHERE message_id = ?", (message_id,)).fetchone()
                   for table in ("outbox", "delivered"))

    def _drop_one(self) -> None:
        """Make room: a superseded state message goes first, then the oldest event, never silently.

        A non-event message with a newer one on the same topic (a retained state that was ON and is
        now OFF) carries no information any more; the newest message on each state topic is the
        current truth, so it is kept longer than old event history.
        """
        row = self._db.execute(
            "SELECT row_id, message_id, topic, is_event FROM outbox AS old WHERE is_event = 0"
            " AND EXISTS (SELECT 1 FROM outbox AS new WHERE new.topic = old.topic AND new.row_id > old.row_id)"
            " ORDER BY row_id LIMIT 1").fetchone()
        if row is None:
            row = self._db.execute(
                "SELECT row_id, message_id, topic, is_event FROM outbox ORDER BY is_event DESC, row_id LIMIT 1"
            ).fetchone()
        row_id, message_id, topic, is_event = row
        self._db.execute("DELETE FROM outbox WHERE row_id = ?", (row_id,))
        self.dropped += 1
        log.warning("MQTT outbox full (%d messages): dropped the oldest %s %s on %s",
                    self.max_rows, "event" if is_event else "superseded message", message_id, topic)
