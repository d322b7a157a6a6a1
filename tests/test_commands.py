"""Every command finds its config the same way ($NURSERY_CONFIG, else ./config.yaml, else the defaults) and
answers a bad one alike: one line naming the key and its YAML line, exit code 2, nothing started.
Called in-process (``monitor.cli.main``), so each case costs no interpreter start."""

from __future__ import annotations

import pytest

from monitor import cli
from monitor.command import EXIT_CONFIG

BAD_KEY_TEXT = "gate:\n  vad_aggressiveness: 7\n"
BAD_KEY, BAD_LINE = "gate.vad_aggressiveness", 2

COMMANDS = {
    "run": ["run"],
    "replay": ["replay", "never-opened.wav"],
    "classify": ["classify", "never-opened.wav"],
    "check-config": ["check-config"],
    "evaluate": ["evaluate"],
    "audit-labels": ["audit-labels"],
    "build-models": ["build-models"],
    "bench": ["bench", "--hours", "0.01"],
}


def _assert_refused(result: int, stderr: str, workdir) -> None:
    assert result == EXIT_CONFIG
    [problem] = stderr.splitlines()
    assert f"config key '{BAD_KEY}' (line {BAD_LINE})" in problem and "between 0 and 3" in problem, problem
    assert sorted(p.name for p in workdir.iterdir()) == ["config.yaml"], "nothing started"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_reads_config_yaml_in_the_working_directory(tmp_path, monkeypatch, capsys, command):
    (tmp_path / "config.yaml").write_text(BAD_KEY_TEXT)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NURSERY_CONFIG", raising=False)
    monkeypatch.setenv("NURSERY_BUILD", str(tmp_path / "build"))
    monkeypatch.setenv("NURSERY_MODELS", str(tmp_path / "models"))
    result = cli.main(COMMANDS[command])
    _assert_refused(result, capsys.readouterr().err, tmp_path)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_reads_nursery_config(tmp_path, monkeypatch, capsys, command):
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (config_dir / "config.yaml").write_text(BAD_KEY_TEXT)
    monkeypatch.chdir(config_dir)
    monkeypatch.setenv("NURSERY_CONFIG", str(config_dir / "config.yaml"))
    monkeypatch.setenv("NURSERY_BUILD", str(tmp_path / "build"))
    monkeypatch.setenv("NURSERY_MODELS", str(tmp_path / "models"))
    result = cli.main(COMMANDS[command])
    _assert_refused(result, capsys.readouterr().err, config_dir)
