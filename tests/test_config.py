"""The config schema: defaults valid, bad values named with their key and line, exit code 2."""

from pathlib import Path

import pytest

from monitor import cli
from monitor.config import Config, ConfigError, default_yaml, describe, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_valid_and_round_trip_through_yaml():
    cfg = parse_config(default_yaml())
    assert describe(cfg) == describe(Config())


def test_shipped_config_covers_every_key():
    shipped = load_config(REPO / "config.yaml")
    shipped_keys = {key for key, _, _ in describe(shipped)}
    text = (REPO / "config.yaml").read_text()
    for key, _, _ in describe():
        assert key in shipped_keys
        assert f"{key.split('.')[-1]}:" in text, f"config.yaml does not show {key}"


@pytest.mark.parametrize("text, key, line, words", [
    ("gate:\n  vad_aggressiveness: 7\n", "gate.vad_aggressiveness", 2, "between 0 and 3"),
    ("fusion:\n  enter_threshold: high\n", "fusion.enter_threshold", 2, "expected a number"),
    ("mqtt:\n  port: 1883\n  colour: red\n", "mqtt.colour", 3, "unknown key"),
    ("nonsense: 1\n", "nonsense", 1, "unknown key"),
    ("mqtt:\n  tls:\n    enabled: yes please\n", "mqtt.tls.enabled", 3, "true or false"),
    ("window: 3\n", "window", 1, "expected a mapping"),
    ("fusion:\n  enter_threshold: 0.3\n  exit_threshold: 0.5\n", "fusion.exit_threshold", 3, "must not exceed"),
    ("device_id: a/b\n", "device_id", 1, "no '/'"),
])
def test_bad_values_name_the_key_and_line(text, key, line, words):
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.key == key
    assert info.value.line == line
    assert words in str(info.value)


def test_integers_are_not_booleans_and_floats_accept_integers():
    with pytest.raises(ConfigError):
        parse_config("window:\n  hop_seconds: true\n")
    assert parse_config("window:\n  hop_seconds: 0.25\n").window.hop_seconds == 0.25
    assert parse_config("fusion:\n  enter_threshold: 1\n  exit_threshold: 0\n").fusion.enter_threshold == 1.0
    assert parse_config("audio:\n  device: USB\n").audio.device == "USB"
    assert parse_config("audio:\n  device: 2\n").audio.device == 2


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    (tmp_path / "c.yaml").write_text("models:\n  manifest: m/manifest.json\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.resolve_path(cfg.models.manifest) == tmp_path / "m" / "manifest.json"


def _cli(capsys, *args) -> tuple[int, str, str]:
    """The CLI in-process: (exit code, stdout, stderr)."""
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_config_exits_2_naming_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("gate:\n  energy_margin_db: -3\n")
    code, _, err = _cli(capsys, "check-config", "--config", str(bad))
    assert code == 2
    assert "gate.energy_margin_db" in err and "line 2" in err


def test_run_refuses_bad_config_before_starting(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mqtt:\n  port: 99999\n")
    code, _, err = _cli(capsys, "replay", "--config", str(bad), "nothing.wav")
    assert code == 2
    assert "mqtt.port" in err


def test_check_config_accepts_the_shipped_file(capsys):
    code, out, err = _cli(capsys, "check-config", "--config", str(REPO / "config.yaml"))
    assert code == 0, err
    assert "fusion.enter_threshold" in out
