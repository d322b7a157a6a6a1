"""Credentials and TLS against a real mosquitto: right ones connect; wrong ones give one clear line and retries."""

from __future__ import annotations

import logging

import pytest

from monitor.config import MqttConfig, TlsConfig, parse_config
from monitor.mqtt import MqttPublisher, MqttSetupError, resolve_mqtt_paths
from monitor.outbox import Outbox
from tests.helpers.broker import HOST, Broker, Subscriber, TlsFiles, make_ca, started_publishers, wait_until
from tests.helpers.credentials import PASSWORD, PASSWORD_ENV, USER, WRONG_PASSWORD

pytestmark = pytest.mark.broker

DEVICE = "nursery-sec"
FAST_RECONNECT = {"reconnect_min_seconds": 0.1, "reconnect_max_seconds": 0.3}
RETRIES_SEEN = 3
CLOSE_TIMEOUT = 3.0
EVENT = {"schema": 1, "event_id": "sec-1", "seq": 0, "phase": "start", "label": "Crying", "message_id": "sec-1:0"}


@pytest.fixture
def auth_broker(broker_factory) -> Broker:
    return broker_factory(users={USER: PASSWORD})


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> TlsFiles:
    return TlsFiles.create(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def run_publisher(tmp_path):
    with started_publishers(tmp_path, DEVICE, CLOSE_TIMEOUT) as start:
        yield lambda **settings: start(MqttConfig(host=HOST, **{**FAST_RECONNECT, **settings}))


def assert_one_clear_error(caplog, capfd, must_contain: str, secret: str | None = None) -> None:
    """A single one-line error for repeated failures; no traceback anywhere; the secret nowhere."""
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert must_contain in message and "\n" not in message
    assert not any(r.exc_info for r in caplog.records)
    captured = capfd.readouterr()
    assert "Traceback" not in caplog.text + captured.err + captured.out
    if secret:
        assert secret not in caplog.text + captured.err + captured.out


def test_right_password_from_env_connects_and_delivers(auth_broker, run_publisher, monkeypatch, caplog, capfd):
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    subscriber = Subscriber(auth_broker, f"nursery/{DEVICE}/event", username=USER, password=PASSWORD)
    try:
        with caplog.at_level(logging.DEBUG):
            publisher = run_publisher(port=auth_broker.port, username=USER, password_env=PASSWORD_ENV)
            publisher.publish_event(EVENT)
            [received] = subscriber.wait_for(1)
            publisher.close(CLOSE_TIMEOUT)
        assert received.json() == EVENT
        assert PASSWORD not in caplog.text + "".join(capfd.readouterr())
    finally:
        subscriber.close()


def test_password_file_is_read_and_stripped(auth_broker, run_publisher, tmp_path):
    secret = tmp_path / "mqtt-password"
    secret.write_text(PASSWORD + "\n")
    publisher = run_publisher(port=auth_broker.port, username=USER, password_file=str(secret))
    assert wait_until(lambda: publisher.connected), publisher.last_error


def test_wrong_password_is_one_clear_error_and_keeps_retrying(auth_broker, run_publisher, monkeypatch, caplog,
                                                              capfd):
    monkeypatch.setenv(PASSWORD_ENV, WRONG_PASSWORD)
    with caplog.at_level(logging.DEBUG):
        publisher = run_publisher(port=auth_broker.port, username=USER, password_env=PASSWORD_ENV)
        publisher.publish_event(EVENT)
        assert wait_until(lambda: publisher.health().failed_connects >= RETRIES_SEEN)
    assert not publisher.connected
    assert "refused" in publisher.last_error and "authori" in publisher.last_error.lower()
    assert len(publisher.outbox) >= 1, "the event waits in the outbox for a working login"
    assert_one_clear_error(caplog, capfd, "refused", secret=WRONG_PASSWORD)


def test_missing_password_sources_are_setup_errors(tmp_path, monkeypatch):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    with pytest.raises(MqttSetupError, match=f"mqtt.password_env: environment variable {PASSWORD_ENV} is not set"):
        MqttPublisher(MqttConfig(username=USER, password_env=PASSWORD_ENV), DEVICE, outbox)
    with pytest.raises(MqttSetupError, match="mqtt.password_file: cannot read"):
        MqttPublisher(MqttConfig(username=USER, password_file=str(tmp_path / "absent")), DEVICE, outbox)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    with pytest.raises(MqttSetupError, match="mqtt.username"):
        MqttPublisher(MqttConfig(password_env=PASSWORD_ENV), DEVICE, outbox)
    outbox.close()


def test_tls_with_the_trusted_ca_connects_and_delivers(broker_factory, tls_files, run_publisher):
    broker = broker_factory(tls=tls_files)
    subscriber = Subscriber(broker, f"nursery/{DEVICE}/event")
    try:
        publisher = run_publisher(port=broker.tls_port, tls=TlsConfig(enabled=True, ca_file=str(tls_files.ca.cert)))
        publisher.publish_event(EVENT)
        [received] = subscriber.wait_for(1)
        assert received.json() == EVENT
        assert publisher.connected
    finally:
        subscriber.close()


def test_tls_with_an_untrusted_ca_is_one_clear_error(broker_factory, tls_files, run_publisher, tmp_path, caplog,
                                                      capfd):
    broker = broker_factory(tls=tls_files)
    stranger = make_ca(tmp_path / "stranger", "stranger-ca")
    with caplog.at_level(logging.DEBUG):
        publisher = run_publisher(port=broker.tls_port, tls=TlsConfig(enabled=True, ca_file=str(stranger.cert)))
        assert wait_until(lambda: publisher.health().failed_connects >= RETRIES_SEEN)
    assert not publisher.connected
    assert "certificate verify failed" in publisher.last_error
    assert_one_clear_error(caplog, capfd, "CERTIFICATE_VERIFY_FAILED")


def test_tls_ca_file_that_does_not_exist_is_a_setup_error(tmp_path):
    outbox = Outbox(tmp_path / "outbox.sqlite")
    with pytest.raises(MqttSetupError, match="mqtt.tls: cannot load the certificates"):
        MqttPublisher(MqttConfig(tls=TlsConfig(enabled=True, ca_file=str(tmp_path / "missing-ca.crt"))), DEVICE,
                      outbox)
    outbox.close()


def test_secret_and_certificate_paths_are_relative_to_the_config_file(tmp_path):
    cfg = parse_config("mqtt:\n  password_file: secrets/mqtt\n  tls:\n    ca_file: /etc/ssl/ca.crt\n"
                       "    cert_file: certs/client.crt\n", base_dir=tmp_path)
    resolved = resolve_mqtt_paths(cfg)
    assert resolved.password_file == str(tmp_path / "secrets/mqtt")
    assert resolved.tls.ca_file == "/etc/ssl/ca.crt"
    assert resolved.tls.cert_file == str(tmp_path / "certs/client.crt")
    assert resolved.tls.key_file is None
    assert (resolved.host, resolved.port) == (cfg.mqtt.host, cfg.mqtt.port)
