"""The replay pipeline in-process, for end-to-end tests on the real models."""

from __future__ import annotations

from pathlib import Path

from monitor.capture import FileReplaySource
from monitor.pipeline import Pipeline
from monitor.sinks import FanoutSink


def clip_events(path: Path, runtime) -> list[dict]:
    """The replay pipeline in-process: the same stages and config as `nursery-monitor replay`."""
    cfg, classifiers = runtime
    pipeline = Pipeline(cfg, classifiers, FanoutSink([]))
    return pipeline.run(FileReplaySource([path], cfg.audio, cfg.preprocess)).events


def starts(events: list[dict]) -> list[str]:
    return [e["label"] for e in events if e["phase"] == "start"]
