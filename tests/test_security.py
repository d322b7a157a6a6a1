"""The real daemon against a mosquitto that wants a password and speaks TLS with a CA made here.

Right credentials (password from an environment variable or a file) and the trusted CA: connected, events
delivered. A wrong password or an untrusted certificate: one clear error line, no traceback, and the daemon
keeps running and retrying (systemd sees no crash loop). The password never appears in the output, even at
DEBUG. Publisher-level versions of these are in tests/test_mqtt_security.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.mqtt import Topics
from tests.helpers.broker import Broker, Subscriber, TlsFiles, make_ca, wait_until
from tests.helpers.credentials import PASSWORD, PASSWORD_ENV, USER, WRONG_PASSWORD
from tests.helpers.daemon import RunningDaemon, set_top_level, stderr_problems, tone_scene, write_config

pytestmark = pytest.mark.broker

TOPICS = Topics.for_device("nursery", "testroom")
RETRIES_SEEN = 3
WAIT_SECONDS = 30.0
SHORT_EVENTS = {"hold_seconds": 1.0}
CRY_SCENE = [(None, 0.3), ("Crying", 1.7), (None, 0.5)]
"""Short: the end of the replay ends the event."""
ERROR_LEVEL = " ERROR "
MQTT_LOG = "monitor.mqtt: MQTT:"


@pytest.fixture
def secure_broker(broker_factory, tmp_path) -> Broker:
    """Password file (``USER``/``PASSWORD``) on every listener, plus a TLS listener on ``tls_port``."""
    return broker_factory(users={USER: PASSWORD}, tls=TlsFiles.create(tmp_path / "certs"))


def secure_config(tmp_path: Path, fake_models: Path, broker: Broker, ca_file: Path, **credentials) -> Path:
    """The daemon on the broker's TLS port, logging at DEBUG (where a leaked secret would show first)."""
    mqtt = {"port": broker.tls_port, "username": USER, "tls": {"enabled": True, "ca_file": str(ca_file)},
            **credentials}
    config = write_config(tmp_path, fake_models, broker, mqtt=mqtt, fusion=SHORT_EVENTS,
                          audio={"device": "no-such-mic"})
    return set_top_level(config, log_level="DEBUG")


def password_from(source: str, tmp_path: Path, monkeypatch, password: str) -> dict:
    """``mqtt`` settings that hand the daemon ``password`` through an environment variable or a file."""
    if source == "env":
        monkeypatch.setenv(PASSWORD_ENV, password)  # inherited by the daemon
        return {"password_env": PASSWORD_ENV}
    secret = tmp_path / "mqtt-password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    return {"password_file": str(secret)}


def assert_keeps_retrying_with_one_clear_error(daemon: RunningDaemon, failure: str, secret: str) -> None:
    """The failure logged once at ERROR (repeats at DEBUG), the daemon still up, then a clean SIGTERM."""
    retries = daemon.wait_for_lines(MQTT_LOG, failure, count=RETRIES_SEEN, timeout=WAIT_SECONDS)
    assert len(retries) >= RETRIES_SEEN, daemon.text()
    assert daemon.alive, "a refused connection must not end the daemon"
    assert daemon.terminate() == 0, daemon.text()
    errors = daemon.matching(ERROR_LEVEL)
    assert len(errors) == 1 and failure in errors[0], errors
    assert stderr_problems(daemon.text() + daemon.text("stdout"), secret) == []


@pytest.mark.parametrize("source", ["env", "file"])
def test_right_password_and_trusted_ca_connect_and_deliver(tmp_path, fake_models, secure_broker, monkeypatch, source):
    clip = tone_scene(tmp_path / "cry.wav", CRY_SCENE)
    credentials = password_from(source, tmp_path, monkeypatch, PASSWORD)
    config = secure_config(tmp_path, fake_models, secure_broker, secure_broker.tls.ca.cert, **credentials)
    subscriber = Subscriber(secure_broker, "nursery/testroom/#", username=USER, password=PASSWORD)
    try:
        # Not paced: the replay is over before the TLS handshake, and the daemon must still deliver before exiting.
        with RunningDaemon("replay", str(clip), "--quiet", "--config", str(config)) as daemon:
            assert daemon.wait(WAIT_SECONDS) == 0, daemon.text()
        assert wait_until(lambda: len(subscriber.messages(TOPICS.event)) >= 2)
        phases = [m.json()["phase"] for m in subscriber.messages(TOPICS.event)]
        assert subscriber.wait_for_payload(TOPICS.status, "online") is not None
    finally:
        subscriber.close()

    assert phases[0] == "start" and phases[-1] == "end"
    assert daemon.matching(f"MQTT: connected to 127.0.0.1:{secure_broker.tls_port}")
    assert daemon.matching(" DEBUG "), "the secret was checked against DEBUG output"
    assert daemon.matching(ERROR_LEVEL) == []
    assert stderr_problems(daemon.text() + daemon.text("stdout"), PASSWORD) == []


@pytest.mark.parametrize("source", ["env", "file"])
def test_wrong_password_is_one_clear_error_and_the_daemon_keeps_retrying(tmp_path, fake_models, secure_broker,
                                                                         monkeypatch, source):
    credentials = password_from(source, tmp_path, monkeypatch, WRONG_PASSWORD)
    config = secure_config(tmp_path, fake_models, secure_broker, secure_broker.tls.ca.cert, **credentials)
    with RunningDaemon("run", "--config", str(config)) as daemon:
        assert_keeps_retrying_with_one_clear_error(
            daemon, f"broker 127.0.0.1:{secure_broker.tls_port} refused the connection: Not authorized",
            WRONG_PASSWORD)


def test_untrusted_certificate_is_one_clear_error_and_the_daemon_keeps_retrying(tmp_path, fake_models,
                                                                                secure_broker, monkeypatch):
    stranger = make_ca(tmp_path / "stranger", "stranger-ca")
    credentials = password_from("env", tmp_path, monkeypatch, PASSWORD)
    config = secure_config(tmp_path, fake_models, secure_broker, stranger.cert, **credentials)
    with RunningDaemon("run", "--config", str(config)) as daemon:
        assert_keeps_retrying_with_one_clear_error(daemon, "CERTIFICATE_VERIFY_FAILED", PASSWORD)


def test_unset_password_variable_stops_the_start_with_one_line(tmp_path, fake_models, secure_broker, monkeypatch):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    config = secure_config(tmp_path, fake_models, secure_broker, secure_broker.tls.ca.cert,
                           password_env=PASSWORD_ENV)
    with RunningDaemon("run", "--config", str(config)) as daemon:
        assert daemon.wait(WAIT_SECONDS) == 1
    problem = daemon.matching("nursery-monitor:")
    assert problem == [f"nursery-monitor: mqtt.password_env: environment variable {PASSWORD_ENV} is not set"]
    assert stderr_problems(daemon.text()) == []
