"""What systemd listens on for sd_notify, for the health and reliability tests."""

from __future__ import annotations

import socket

RECEIVE_TIMEOUT_SECONDS = 5.0


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
