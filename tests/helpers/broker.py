"""A real mosquitto on a free loopback port for tests, and a subscriber that records what arrives.

``Broker`` writes its own config in a temporary folder: anonymous by default, with a password file
(``users=``), and/or an extra TLS listener (``tls=``) using certificates made here with the
``openssl`` CLI. It can be stopped and started again on the same port to simulate an outage; the
broker keeps persistent sessions across such a restart (``persistence true``).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from monitor.config import MqttConfig
from monitor.mqtt import MqttPublisher
from monitor.outbox import Outbox

HOST = "127.0.0.1"
MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "mosquitto")
STARTUP_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0
WAIT_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.02
CERT_DAYS = 2
SUBSCRIBER_RECONNECT_SECONDS = (0.1, 0.5)
CONNECT_PROBE_SECONDS = 0.2
RECV_BYTES = 4096


def find_mosquitto() -> str | None:
    for candidate in MOSQUITTO_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def terminate(process: subprocess.Popen, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """SIGTERM, and SIGKILL if it has not ended within ``timeout``: for the servers the tests start."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float = WAIT_TIMEOUT_SECONDS) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; the caller asserts on the result."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


@contextmanager
def started_publishers(outbox_dir: Path, device_id: str, close_timeout: float,
                       outbox_rows: int | None = None) -> Iterator[Callable[..., MqttPublisher]]:
    """``start(cfg, outbox_path=None)`` starts a publisher on an outbox of ``outbox_rows`` rows at most (each on a
    file of its own in ``outbox_dir`` unless given a path); all of them are closed on the way out, so a failing test
    leaves no client thread behind."""
    made: list[MqttPublisher] = []

    def start(cfg: MqttConfig, outbox_path: Path | None = None) -> MqttPublisher:
        outbox = Outbox(outbox_path or outbox_dir / f"outbox{len(made)}.sqlite", max_rows=outbox_rows)
        publisher = MqttPublisher(cfg, device_id, outbox)
        publisher.start()
        made.append(publisher)
        return publisher

    try:
        yield start
    finally:
        for publisher in made:
            publisher.close(close_timeout)


# --- certificates ------------------------------------------------------------------------------

@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> CertPair:
    """A self-signed certificate authority."""
    directory.mkdir(parents=True, exist_ok=True)
    pair = CertPair(directory / f"{name}.crt", directory / f"{name}.key")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", pair.key, "-out", pair.cert, "-days", str(CERT_DAYS), "-subj", f"/CN={name}")
    return pair


def make_server_cert(directory: Path, ca: CertPair, name: str = "server") -> CertPair:
    """A server certificate for 127.0.0.1 / localhost signed by ``ca``."""
    pair = CertPair(directory / f"{name}.crt", directory / f"{name}.key")
    csr, ext = directory / f"{name}.csr", directory / f"{name}.ext"
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", pair.key, "-out", csr, "-subj", f"/CN={HOST}")
    _openssl("x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial",
             "-out", pair.cert, "-days", str(CERT_DAYS), "-extfile", ext)
    return pair


@dataclass(frozen=True)
class TlsFiles:
    ca: CertPair
    server: CertPair

    @classmethod
    def create(cls, directory: Path) -> TlsFiles:
        ca = make_ca(directory, "test-ca")
        return cls(ca, make_server_cert(directory, ca))


# --- the broker --------------------------------------------------------------------------------

class Broker:
    """One mosquitto process; ``port`` is plain MQTT, ``tls_port`` (with ``tls``) is MQTT over TLS."""

    def __init__(self, workdir: Path, *, users: dict[str, str] | None = None, tls: TlsFiles | None = None):
        self.executable = find_mosquitto()
        if self.executable is None:
            raise FileNotFoundError("mosquitto is not installed")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.users = users or {}
        self.tls = tls
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self._process: subprocess.Popen | None = None
        self._write_config()

    def _write_config(self) -> None:
        lines = [
            # mosquitto started as root switches to this user; stay the owner of the temp folder.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "persistence true",
            f"persistence_location {self.workdir}/",
            f"listener {self.port} {HOST}",
        ]
        if self.users:
            password_file = self.workdir / "passwords"
            for index, (user, password) in enumerate(self.users.items()):
                create = ["-c"] if index == 0 else []
                subprocess.run(["mosquitto_passwd", "-b", *create, str(password_file), user, password],
                               check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            lines += [f"listener {self.tls_port} {HOST}", f"cafile {self.tls.ca.cert}",
                      f"certfile {self.tls.server.cert}", f"keyfile {self.tls.server.key}"]
        self.config_path.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        with open(self.log_path, "ab") as log_file:
            self._process = subprocess.Popen([self.executable, "-c", str(self.config_path)],
                                             stdout=log_file, stderr=subprocess.STDOUT)
        for port in filter(None, (self.port, self.tls_port)):
            wait_until(lambda port=port: not self.running or self._accepts(port), STARTUP_TIMEOUT_SECONDS)
            if not self.running or not self._accepts(port):
                self.stop()
                raise RuntimeError(f"mosquitto did not start on port {port}:\n{self.log()}")

    def stop(self) -> None:
        """Terminate (mosquitto saves its persistent sessions on the way out)."""
        if self._process is None:
            return
        terminate(self._process)
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @staticmethod
    def _accepts(port: int) -> bool:
        try:
            with socket.create_connection((HOST, port), timeout=CONNECT_PROBE_SECONDS):
                return True
        except OSError:
            return False


# --- a subscriber that records ----------------------------------------------------------------

@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    """The broker re-sent it to this subscriber (its PUBACK was lost in an outage): a copy, not a new publish."""
    received_at: float = 0.0
    """``time.monotonic()`` when it arrived here: for latency figures."""

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")

    def json(self):
        return json.loads(self.payload)


class Subscriber:
    """Collects every message on ``topic`` (retained ones included) on the broker's plain port.

    ``persistent=True`` keeps a QoS 1 session on the broker, so messages published while this
    subscriber is cut off (broker restart) are still delivered to it afterwards.
    """

    def __init__(self, broker: Broker, topic: str = "#", *, persistent: bool = False,
                 username: str | None = None, password: str | None = None, client_id: str | None = None):
        self.topic = topic
        self._messages: list[Received] = []
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        client_id = client_id or f"test-subscriber-{free_port()}-{time.monotonic_ns()}"
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent)
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(*SUBSCRIBER_RECONNECT_SECONDS)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(HOST, broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(WAIT_TIMEOUT_SECONDS):
            raise RuntimeError(f"subscriber could not subscribe to {topic}")

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_message(self, _client, _userdata, message) -> None:
        with self._changed:
            self._messages.append(Received(message.topic, bytes(message.payload), message.qos, bool(message.retain),
                                           bool(message.dup), time.monotonic()))
            self._changed.notify_all()

    def messages(self, topic: str | None = None) -> list[Received]:
        with self._changed:
            return [m for m in self._messages if topic is None or m.topic == topic]

    def wait_for(self, count: int, topic: str | None = None, timeout: float = WAIT_TIMEOUT_SECONDS) -> list[Received]:
        """At least ``count`` messages (on ``topic``), or whatever arrived when ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [m for m in self._messages if topic is None or m.topic == topic]
                remaining = deadline - time.monotonic()
                if len(found) >= count or remaining <= 0:
                    return found
                self._changed.wait(remaining)

    def wait_for_payload(self, topic: str, text: str, timeout: float = WAIT_TIMEOUT_SECONDS) -> Received | None:
        """The first message on ``topic`` whose payload is ``text``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for message in self._messages:
                    if message.topic == topic and message.payload == text.encode():
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- a broker that never acknowledges ------------------------------------------------------------

CONNACK_ACCEPTED = b"\x20\x02\x00\x00"
"""MQTT 3.1.1 CONNACK: no session present, connection accepted."""


class SilentBroker:
    """Accepts one client and its CONNECT, then records everything it is sent and acknowledges nothing.

    Shows that a publisher keeps a message until its PUBACK instead of trusting the socket.
    """

    def __init__(self):
        self._server = socket.create_server((HOST, 0))
        self.port = self._server.getsockname()[1]
        self._received = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="silent-broker", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            connection, _ = self._server.accept()
        except OSError:  # closed before anyone connected
            return
        with connection:
            connection.recv(RECV_BYTES)  # the CONNECT packet
            connection.sendall(CONNACK_ACCEPTED)
            while chunk := connection.recv(RECV_BYTES):
                with self._lock:
                    self._received += chunk

    def received(self) -> bytes:
        with self._lock:
            return bytes(self._received)

    def close(self) -> None:
        self._server.close()


def first_copies(received: list) -> list[dict]:
    """What a consumer deduping on message_id keeps: the first copy of each message."""
    seen, kept = set(), []
    for message in received:
        payload = message.json()
        if payload["message_id"] not in seen:
            seen.add(payload["message_id"])
            kept.append(payload)
    return kept


def copies_identical(received: list) -> bool:
    """At-least-once allows repeats; each must be the same payload as the first copy."""
    first = {m["message_id"]: m for m in first_copies(received)}
    return all(message.json() == first[message.json()["message_id"]] for message in received)


def published_again(received: list, message_ids: set[str]) -> list[str]:
    """Ids in ``message_ids`` that came again as new publishes, not as the broker's ``dup`` re-sends: the
    publisher sent once more what the broker had already acknowledged."""
    fresh = [m.json()["message_id"] for m in received if not m.dup]
    return sorted({message_id for message_id in message_ids if fresh.count(message_id) > 1})
