"""Progress: a tqdm bar only on a terminal; elsewhere a log line per tenth (or per 30 s); nothing when quiet."""

from __future__ import annotations

import io
import json
import logging
import subprocess

import pytest

from bench import replay
from monitor.progress import LOG_EVERY_SECONDS, LogProgress, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "monitor.progress"]


def test_off_a_terminal_progress_is_a_log_line_per_tenth(caplog):
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0  # one second per item: 100 s in all
        return now[0]

    with caplog.at_level(logging.INFO, logger="monitor.progress"):
        items = list(LogProgress(range(100), desc="evaluate", unit="clip", clock=clock))
    lines = _lines(caplog)
    assert items == list(range(100)) and len(lines) == 10
    assert lines[0].startswith("evaluate: 10/100 clip (10%)") and lines[-1].startswith("evaluate: 100/100 clip (100%)")


def test_off_a_terminal_a_quick_loop_says_only_that_it_is_done(caplog):
    with caplog.at_level(logging.INFO, logger="monitor.progress"):
        items = list(LogProgress(range(1000), desc="evaluate", unit="clip", clock=lambda: 0.0))
        with LogProgress(desc="replay", total=50.0, unit="s", clock=lambda: 0.0) as bar:
            bar.update(50.0)
    assert items == list(range(1000))
    assert _lines(caplog) == ["evaluate: 1000/1000 clip (100%), 0 s", "replay: 50/50 s (100%), 0 s"]


def test_off_a_terminal_no_bar_is_drawn(caplog):
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="monitor.progress"):
        items = list(progress_bar(range(1000), desc="evaluate", unit="clip", stream=stream))
    assert items == list(range(1000)) and stream.getvalue() == ""
    assert _lines(caplog)[-1].startswith("evaluate: 1000/1000 clip (100%)")


def test_off_a_terminal_a_slow_loop_still_reports_every_30_seconds(caplog):
    now = [0.0]
    bar = LogProgress(desc="replay", total=10_000.0, unit="s", clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="monitor.progress"):
        bar.update(10)
        now[0] = LOG_EVERY_SECONDS + 1
        bar.set_postfix(loss="0.412")
        bar.update(10)
        bar.close()
    assert _lines(caplog) == ["replay: 20/10000 s (0%), 31 s (loss=0.412)"], "one timed line, close adds no repeat"


def test_on_a_terminal_a_bar_is_drawn(caplog):
    stream = Terminal()
    with caplog.at_level(logging.INFO, logger="monitor.progress"):
        for _ in progress_bar(range(5), desc="windows", unit="clip", stream=stream):
            pass
    assert "windows" in stream.getvalue() and "5/5" in stream.getvalue() and _lines(caplog) == []


@pytest.mark.parametrize("stream", [io.StringIO(), Terminal()])
def test_quiet_shows_nothing(caplog, stream):
    with caplog.at_level(logging.INFO, logger="monitor.progress"):
        with progress_bar(total=100.0, desc="replay", unit="s", enabled=False, stream=stream) as bar:
            bar.update(100.0)
    assert stream.getvalue() == "" and _lines(caplog) == [] and bar.n == 100.0


def test_bench_quiet_reaches_the_replay_workers(tmp_path, monkeypatch):
    commands = []

    def fake_run(command, **_):
        commands.append(command)
        paths.result.write_text(json.dumps({"ok": True}))
        return subprocess.CompletedProcess(command, 0)

    paths = replay.WorkerPaths(tmp_path / "stream.flac", tmp_path / "result.json")
    monkeypatch.setattr(replay.subprocess, "run", fake_run)
    replay.run_worker("ours", paths, None, show_progress=False)
    replay.run_worker("ours", paths, None)
    assert "--quiet" in commands[0] and "--quiet" not in commands[1]
