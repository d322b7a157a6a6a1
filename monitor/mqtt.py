"""MQTT publishing: events through a durable outbox, retained state and availability, periodic health.

Topics, for ``<prefix>/<device_id>``:

- ``.../event``: every event message (start / update / end), QoS 1, not retained. Delivery is
  at-least-once: each message carries ``message_id`` (``<event_id>:<seq>``). In normal operation,
  outages included, each is published once; a lost PUBACK (the connection drops just after the broker
  took the message) or a crash between PUBACK and outbox ack sends that one message again, so
  consumers dedupe on ``message_id``.
- ``.../state/crying``, ``.../state/screaming``: retained ``ON`` / ``OFF``; ``ON`` on an event's start,
  ``OFF`` on its end, and ``OFF`` at every start (a fresh process has no event open).
- ``.../status``: retained ``online`` / ``offline``; the broker publishes ``offline`` (last will) when
  the process dies without saying goodbye.
- ``.../health``: the periodic status JSON (mic level, clipping and overflow counts, gate pass rate,
  inference time), QoS 0, not retained: only the latest matters and a missed one is replaced soon.
- Home Assistant discovery (``mqtt.discovery``): retained ``binary_sensor`` configs for both states.

Events and state changes go into the outbox first; one sender thread publishes its head, waits for
the PUBACK, acks it, then takes the next, so order holds across broker outages and restarts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from .config import Config, HealthConfig, MqttConfig
from .constants import ALERT_LABELS
from .outbox import Outbox, OutboxMessage
from .signal_helpers import one_line

log = logging.getLogger(__name__)

EVENT_QOS = 1
STATE_QOS = 1
STATUS_QOS = 1
HEALTH_QOS = 0
CLIP_QOS = 1
ONLINE, OFFLINE = "online", "offline"
STATE_ON, STATE_OFF = "ON", "OFF"
PHASE_TO_STATE = {"start": STATE_ON, "end": STATE_OFF}

_WAIT_SLICE_SECONDS = 0.1
"""Waiting threads wake this often to notice a stop request."""
_ACKED_MIDS_KEPT = 1000
"""PUBACKs remembered until the sender collects them; far below paho's 65535 mid wrap-around."""

StateCallback = Callable[[bool, "str | None"], None]


class MqttSetupError(ValueError):
    """A settings problem found before connecting (missing password source, unreadable TLS file)."""


@dataclass(frozen=True)
class Topics:
    event: str
    status: str
    health: str
    state: dict[str, str]
    """Alert label -> its retained ON/OFF topic."""
    clip_prefix: str = ""
    """``<prefix>/<device_id>/clip``: an event's FLAC goes to ``<clip_prefix>/<event_id>``."""

    @classmethod
    def for_device(cls, prefix: str, device_id: str) -> Topics:
        base = f"{prefix.rstrip('/')}/{device_id}"
        return cls(event=f"{base}/event", status=f"{base}/status", health=f"{base}/health",
                   state={label: f"{base}/state/{label.lower()}" for label in ALERT_LABELS}, clip_prefix=f"{base}/clip")

    def clip(self, event_id: str) -> str:
        return f"{self.clip_prefix}/{event_id}"


@dataclass(frozen=True)
class PublisherHealth:
    """Connection facts for the status message."""

    connected: bool
    last_error: str | None
    """Why the publisher is not connected (None while connected)."""
    failed_connects: int
    outbox_pending: int
    outbox_dropped: int

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_mqtt_paths(cfg: Config) -> MqttConfig:
    """``cfg.mqtt`` with its file settings (password, TLS) taken relative to the config file."""
    mqtt, tls = cfg.mqtt, cfg.mqtt.tls

    def resolved(value: str | None) -> str | None:
        return None if value is None else str(cfg.resolve_path(value))

    return replace(mqtt, password_file=resolved(mqtt.password_file),
                   tls=replace(tls, ca_file=resolved(tls.ca_file), cert_file=resolved(tls.cert_file),
                               key_file=resolved(tls.key_file)))


def read_password(cfg: MqttConfig) -> str | None:
    """The broker password from ``password_env`` or ``password_file``; never logged."""
    if cfg.password_env:
        value = os.environ.get(cfg.password_env)
        if value is None:
            raise MqttSetupError(f"mqtt.password_env: environment variable {cfg.password_env} is not set")
        return value
    if cfg.password_file:
        try:
            return Path(cfg.password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise MqttSetupError(f"mqtt.password_file: cannot read {cfg.password_file}: {exc.strerror}") from None
    return None


def state_change(payload: dict, topics: Topics) -> tuple[str, str] | None:
    """(retained state topic, ON/OFF) when this event message opens or closes an alert, else None."""
    state = PHASE_TO_STATE.get(payload["phase"])
    topic = topics.state.get(payload["label"])
    return (topic, state) if state and topic else None


def discovery_messages(device_id: str, discovery_prefix: str, topics: Topics) -> list[tuple[str, bytes]]:
    """Home Assistant MQTT discovery configs: one ``sound`` binary sensor per alert label."""
    node = re.sub(r"[^A-Za-z0-9_-]", "_", device_id)
    device = {"identifiers": [f"nursery_monitor_{node}"], "name": f"Nursery Monitor {device_id}",
              "manufacturer": "Nursery Monitor", "model": "nursery-monitor"}
    version = _package_version()
    if version:
        device["sw_version"] = version
    messages = []
    for label, state_topic in topics.state.items():
        object_id = f"{node}_{label.lower()}"
        config = {
            "name": label,
            "unique_id": object_id,
            "device_class": "sound",
            "state_topic": state_topic,
            "payload_on": STATE_ON,
            "payload_off": STATE_OFF,
            "availability_topic": topics.status,
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "device": device,
        }
        messages.append((f"{discovery_prefix.rstrip('/')}/binary_sensor/{object_id}/config", _to_json(config)))
    return messages


def _to_json(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _package_version() -> str | None:
    try:
        return metadata.version("nursery-monitor")
    except metadata.PackageNotFoundError:
        return None


class MqttPublisher:
    """Owns one paho client, the sender thread and (from ``start``) the outbox it was given."""

    def __init__(self, cfg: MqttConfig, device_id: str, outbox: Outbox,
                 on_state_change: StateCallback | None = None):
        self.cfg = cfg
        self.device_id = device_id
        self.outbox = outbox
        self.topics = Topics.for_device(cfg.topic_prefix, device_id)
        self.on_state_change = on_state_change
        self._where = f"{cfg.host}:{cfg.port}"
        self.client_id = cfg.client_id or f"nursery-monitor-{device_id}"
        self._state_lock = threading.Lock()
        self._last_error: str | None = None
        self._failed_connects = 0
        self._connected = threading.Event()
        self._first_attempt_over = threading.Event()
        """The first connection attempt has succeeded or failed (``close`` waits for it with messages to send)."""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closing = False
        self._acks = threading.Condition()
        self._acked_mids: OrderedDict[int, None] = OrderedDict()
        self._sender: threading.Thread | None = None
        self._client = self._build_client()

    # --- setup ---------------------------------------------------------------------------------

    def _build_client(self) -> paho.Client:
        cfg = self.cfg
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True,
                             protocol=paho.MQTTv311)
        password = read_password(cfg)
        if password is not None and not cfg.username:
            raise MqttSetupError("mqtt.username: a password is configured but no user name")
        if cfg.username:
            client.username_pw_set(cfg.username, password)
        if cfg.tls.enabled:
            try:
                client.tls_set(ca_certs=cfg.tls.ca_file, certfile=cfg.tls.cert_file, keyfile=cfg.tls.key_file)
            except (OSError, ValueError) as exc:
                raise MqttSetupError(f"mqtt.tls: cannot load the certificates: {one_line(exc)}") from None
            client.tls_insecure_set(cfg.tls.insecure)
        client.will_set(self.topics.status, OFFLINE, qos=STATUS_QOS, retain=True)
        client.reconnect_delay_set(cfg.reconnect_min_seconds, cfg.reconnect_max_seconds)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def start(self) -> None:
        """Connect in the background (never blocks, also not when the broker is down) and start sending."""
        if self._sender is not None:
            raise RuntimeError("MqttPublisher.start() called twice: one sender keeps the order")
        for topic in self.topics.state.values():
            self.outbox.put(topic, STATE_OFF.encode(), message_id=f"start:{uuid.uuid4()}:{topic}", qos=STATE_QOS,
                            retain=True, is_event=False)
        log.info("MQTT: connecting to %s as %s (%d messages waiting in the outbox)",
                 self._where, self.client_id, len(self.outbox))
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_seconds)
        self._client.loop_start()
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-outbox-sender", daemon=True)
        self._sender.start()

    # --- what the pipeline calls ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def last_error(self) -> str | None:
        with self._state_lock:
            return self._last_error

    def health(self) -> PublisherHealth:
        with self._state_lock:
            return PublisherHealth(self._connected.is_set(), self._last_error, self._failed_connects,
                                   len(self.outbox), self.outbox.dropped)

    def publish_event(self, payload: dict) -> bool:
        """Queue an event message (and its state change) durably; False if this message_id was queued before."""
        missing = [key for key in ("event_id", "seq", "phase", "label") if key not in payload]
        if missing:
            raise ValueError(f"event payload lacks {', '.join(missing)}")
        message_id = str(payload.get("message_id") or f"{payload['event_id']}:{payload['seq']}")
        try:
            body = _to_json(payload)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"event {message_id} is not valid JSON: {exc}") from None
        stored = self.outbox.put(self.topics.event, body, message_id=message_id, qos=EVENT_QOS)
        change = state_change(payload, self.topics)
        if stored and change:
            topic, state = change
            self.outbox.put(topic, state.encode(), message_id=f"{message_id}:state", qos=STATE_QOS, retain=True,
                            is_event=False)
        self._wake.set()
        return stored

    def publish_clip(self, event_id: str, flac: bytes) -> bool:
        """Queue an event's FLAC clip (QoS 1, not retained) behind its end message; dropped before events when
        the outbox is full."""
        stored = self.outbox.put(self.topics.clip(event_id), flac, message_id=f"{event_id}:clip", qos=CLIP_QOS,
                                 is_event=False)
        self._wake.set()
        return stored

    def publish_status(self, payload: dict) -> bool:
        """Send the periodic health JSON now if connected; a missed one is simply replaced by the next."""
        if not self.connected:
            log.debug("MQTT: not connected, health message skipped")
            return False
        info = self._client.publish(self.topics.health, _to_json(payload), qos=HEALTH_QOS, retain=False)
        return info.rc == paho.MQTT_ERR_SUCCESS

    def close(self, timeout: float | None = None) -> None:
        """Deliver what can be delivered, publish ``offline``, disconnect; returns within ``timeout``
        (default ``health.shutdown_seconds``). Undelivered messages stay in the outbox for the next start."""
        if self._stop.is_set():
            return
        if timeout is None:
            timeout = HealthConfig().shutdown_seconds
        deadline = time.monotonic() + timeout
        # Also while the first attempt is under way: replaying a short file takes less than a TLS handshake.
        while (len(self.outbox) and time.monotonic() < deadline
               and (self.connected or not self._first_attempt_over.is_set())):
            time.sleep(_WAIT_SLICE_SECONDS)
        self._stop.set()
        if self._sender is not None:
            self._sender.join(max(0.0, deadline - time.monotonic()))
        if self.connected:
            info = self._client.publish(self.topics.status, OFFLINE, qos=STATUS_QOS, retain=True)
            if not self._wait_for_ack(info.mid, lambda: time.monotonic() >= deadline):
                log.warning("MQTT: 'offline' not acknowledged within %.1f s; the last will covers it", timeout)
        self._closing = True
        self._stop_network(max(0.0, deadline - time.monotonic()))
        pending = len(self.outbox)
        if pending:
            log.info("MQTT: %d messages stay in the outbox for the next start", pending)
        if self._sender is None or not self._sender.is_alive():
            self.outbox.close()

    def _stop_network(self, timeout: float) -> None:
        def disconnect_and_stop() -> None:
            self._client.disconnect()
            self._client.loop_stop()

        stopper = threading.Thread(target=disconnect_and_stop, name="mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(timeout)
        if stopper.is_alive():
            log.warning("MQTT: the network thread did not stop in time; leaving it to exit with the process")

    # --- the single sender ---------------------------------------------------------------------

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._send_next()
            except Exception as exc:  # a disk error must not silently end delivery: say so, back off, retry
                log.error("MQTT: the outbox sender failed: %s; retrying", one_line(exc))
                self._stop.wait(self.cfg.reconnect_max_seconds)

    def _send_next(self) -> None:
        if not self._connected.wait(_WAIT_SLICE_SECONDS):
            return
        self._wake.clear()
        head = self.outbox.peek_batch(1)
        if not head:
            self._wake.wait(_WAIT_SLICE_SECONDS)
            return
        if self._deliver(head[0]):
            self.outbox.ack(head[0].row_id)

    def _deliver(self, message: OutboxMessage) -> bool:
        """Hand the message to paho once and wait for its PUBACK: paho itself re-sends it after a reconnect."""
        try:
            info = self._client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
        except ValueError as exc:  # can never be sent (bad topic, oversized): waiting would block all others
            log.error("MQTT: dropping message %s that can never be sent: %s", message.message_id, exc)
            return True
        return self._wait_for_ack(info.mid, self._stop.is_set)

    def _wait_for_ack(self, mid: int, give_up: Callable[[], bool]) -> bool:
        with self._acks:
            while mid not in self._acked_mids:
                if give_up():
                    return False
                self._acks.wait(_WAIT_SLICE_SECONDS)
            del self._acked_mids[mid]
            return True

    # --- paho callbacks (network thread) -------------------------------------------------------

    def _on_connect(self, client: paho.Client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            self._record_failure(f"broker {self._where} refused the connection: {reason_code}")
            return
        client.publish(self.topics.status, ONLINE, qos=STATUS_QOS, retain=True)
        if self.cfg.discovery:
            for topic, config in discovery_messages(self.device_id, self.cfg.discovery_prefix, self.topics):
                client.publish(topic, config, qos=STATE_QOS, retain=True)
        with self._state_lock:
            self._last_error = None
            self._connected.set()
        self._first_attempt_over.set()
        log.info("MQTT: connected to %s", self._where)
        self._wake.set()
        self._notify(True, None)

    def _on_connect_fail(self, _client: paho.Client, _userdata) -> None:
        # paho calls this from inside its `except OSError` block, so the cause is the exception being handled.
        self._record_failure(f"cannot connect to {self._where}: {one_line(sys.exc_info()[1])}")

    def _on_disconnect(self, _client: paho.Client, _userdata, _flags, reason_code, _properties) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if self._closing:
            return
        if was_connected:
            self._record_failure(f"lost the connection to {self._where}: {reason_code}", connection_lost=True)

    def _on_publish(self, _client: paho.Client, _userdata, mid: int, reason_code, _properties) -> None:
        if reason_code.is_failure:
            log.error("MQTT: the broker rejected message %d: %s", mid, reason_code)
        with self._acks:
            self._acked_mids[mid] = None
            while len(self._acked_mids) > _ACKED_MIDS_KEPT:
                self._acked_mids.popitem(last=False)
            self._acks.notify_all()

    def _record_failure(self, message: str, connection_lost: bool = False) -> None:
        """One clear line per new problem (repeats go to DEBUG); paho retries with backoff."""
        with self._state_lock:
            self._connected.clear()
            is_new = message != self._last_error
            self._last_error = message
            if not connection_lost:
                self._failed_connects += 1
        level = logging.WARNING if connection_lost else logging.ERROR
        log.log(level if is_new else logging.DEBUG, "MQTT: %s; retrying", message)
        self._first_attempt_over.set()
        self._notify(False, message)

    def _notify(self, connected: bool, error: str | None) -> None:
        if self.on_state_change is None:
            return
        try:
            self.on_state_change(connected, error)
        except Exception:  # a faulty observer must not break the network thread
            log.exception("MQTT: on_state_change callback failed")
