"""Shared fixtures. Broker fixtures: a real mosquitto on loopback (skipped when it is not installed);
``fake_models``: the tiny tone models of tests/helpers/fake_models.py and their manifest; ``notify_listener``:
systemd's side of sd_notify for the daemons a test starts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.broker import Broker, find_mosquitto
from tests.helpers.fake_models import write_fake_models
from tests.helpers.systemd import WATCHDOG_USEC, NotifyListener


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses a broker (through any fixture) is marked ``broker``, so ``-m "not broker"``
    (``make check``) leaves them all out, not only those that remembered the marker."""
    for item in items:
        if "broker_factory" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.broker)


@pytest.fixture
def broker_factory(tmp_path_factory) -> Iterator[Callable[..., Broker]]:
    """Start brokers with ``Broker`` options (``users=``, ``tls=``); all are stopped at teardown."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (Debian: apt-get install mosquitto mosquitto-clients)")
    started: list[Broker] = []

    def start(**options) -> Broker:
        broker = Broker(tmp_path_factory.mktemp("broker"), **options)
        broker.start()
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()


@pytest.fixture
def broker(broker_factory) -> Broker:
    """An anonymous broker on a free loopback port."""
    return broker_factory()


@pytest.fixture
def fake_models(tmp_path) -> Path:
    """The manifest of the fake tone models (a 500 Hz tone is Crying, 1000 Hz Screaming, 2000 Hz Normal)."""
    return write_fake_models(tmp_path / "models")


@pytest.fixture
def notify_listener(monkeypatch):
    """NOTIFY_SOCKET and WATCHDOG_USEC set (for this process and the daemons it starts); the listener records every
    datagram (tests.helpers.systemd.NotifyListener)."""
    listener = NotifyListener()
    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield listener
    listener.close()
