"""Shared fixtures. Broker fixtures: a real mosquitto on loopback (skipped when it is not installed)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.broker import Broker, find_mosquitto


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
