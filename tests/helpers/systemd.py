"""What systemd listens on for sd_notify, for the health and reliability tests."""

from __future__ import annotations

import os
import socket
import threading
import time

RECEIVE_TIMEOUT_SECONDS = 5.0
WAIT_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
WATCHDOG_USEC = 200_000
"""systemd would expect a ping every 0.2 s; the daemon pings every 0.1 s."""
PING = "WATCHDOG=1"


class NotifySocket:
    """What systemd listens on: a unix datagram socket (a path, or '@name' in the abstract namespace)."""

    def __init__(self, address: str):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)

    def receive(self, timeout: float = RECEIVE_TIMEOUT_SECONDS) -> str | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        except TimeoutError:
            return None

    def drain(self) -> list[str]:
        messages = []
        while (message := self.receive(timeout=0.001)) is not None:
            messages.append(message)
        return messages

    def close(self) -> None:
        self.sock.close()


class NotifyListener:
    """systemd's side of NOTIFY_SOCKET, received in a thread: every datagram with the time it arrived."""

    def __init__(self):
        self.socket = NotifySocket(f"@nursery-reliability-{os.getpid()}-{time.monotonic_ns()}")
        self.address = self.socket.address
        self._messages: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="notify-listener", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            message = self.socket.receive(timeout=0.05)
            if message is not None:
                with self._changed:
                    self._messages.append((time.monotonic(), message))
                    self._changed.notify_all()

    def messages(self, prefix: str = "") -> list[str]:
        with self._changed:
            return [m for _, m in self._messages if m.startswith(prefix)]

    def count_since(self, since: float, message: str = PING) -> int:
        with self._changed:
            return sum(1 for at, m in self._messages if at >= since and m == message)

    def wait_for(self, prefix: str, count: int = 1, timeout: float = WAIT_TIMEOUT_SECONDS) -> list[str]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(found := [m for _, m in self._messages if m.startswith(prefix)]) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            return found

    def close(self) -> None:
        self._closed.set()
        self._thread.join(STOP_TIMEOUT_SECONDS)
        self.socket.close()
