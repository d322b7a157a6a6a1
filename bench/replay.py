"""Measured replays of the stream: ours through the real ``Pipeline``, and the baseline, each alone in a fresh
single-threaded process (``python -m bench.replay``), so wall time, CPU time and peak RSS are theirs only.

Ours is wired exactly as `nursery-monitor replay` wires it (``FileReplaySource`` -> ``Pipeline``, the live
config, models from the manifest), with an in-memory sink instead of MQTT. Each worker writes a JSON
result: the events on the audio clock, and the measurements.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from monitor.command import EXIT_OK, add_config_option, setup_logging
from monitor.config import Config, load_config
from monitor.constants import LABELS, SAMPLE_RATE, WINDOW_SECONDS
from monitor.events import PHASE_END, PHASE_START
from monitor.fusion import AUDIOSET_ROWS
from monitor.paths import REPO_ROOT
from monitor.progress import log as progress_log
from monitor.progress import progress_bar

from .baseline import BaselineSpec
from .score import DetectedEvent

log = logging.getLogger(__name__)

HEAVY_MODULES = ("torch", "tensorflow")
"""The runtime must never import these; each worker reports whether they got loaded."""
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
STREAM_EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
"""Wall time of the stream's first sample in event payloads: fixed, so reruns give identical events."""
SECONDS_PER_HOUR = 3600.0
KB_PER_MB = 1024.0
PROGRESS_INTERVAL_S = 1.0
MEMORY_POLL_SECONDS = 0.05
WORKERS = ("ours", "baseline", "profile")


class EventLog:
    """Start/update/end messages -> ``DetectedEvent``s stamped with the audio time they went out.

    As a pipeline sink it receives messages before the pipeline reports the window that caused them, so
    they wait in ``pending`` until ``stamp(now)`` (from the window callback, or at the end of the stream).
    """

    def __init__(self) -> None:
        self.pending: list[dict] = []
        self._open: dict[str, tuple[str, float, float]] = {}
        """event_id -> (label, claimed start, raised at)."""
        self.events: list[DetectedEvent] = []
        self.messages = 0

    def handle_event(self, payload: dict) -> None:
        self.pending.append(payload)

    def publish_status(self, payload: dict) -> None:
        """Status messages carry no events."""

    def close(self, timeout: float | None = None) -> None:
        """Nothing to release."""

    def stamp(self, now_s: float) -> None:
        for payload in self.pending:
            self.record(now_s, payload)
        self.pending.clear()

    def record(self, now_s: float, payload: dict) -> None:
        """One message that went out at audio time ``now_s``."""
        self.messages += 1
        event_id, phase = payload["event_id"], payload["phase"]
        if phase == PHASE_START:
            self._open[event_id] = (payload["label"], float(payload["start_audio_s"]), now_s)
        elif phase == PHASE_END and event_id in self._open:
            label, start, raised = self._open.pop(event_id)
            end = payload.get("end_audio_s")
            self.events.append(DetectedEvent(label, start_s=start, end_s=now_s if end is None else float(end),
                                             raised_s=raised))

    def finish(self, now_s: float) -> list[DetectedEvent]:
        """All events, raised order; one still open (the pipeline should have ended it) ends at ``now_s``."""
        self.stamp(now_s)
        for label, start, raised in self._open.values():
            self.events.append(DetectedEvent(label, start_s=start, end_s=now_s, raised_s=raised))
        self._open.clear()
        return sorted(self.events, key=lambda e: e.raised_s)


class AudiosetCapture:
    """Stands in for the YAMNet classifier and keeps the AudioSet rows fusion reads (``AUDIOSET_ROWS``) of its
    last call."""

    def __init__(self, yamnet) -> None:
        self._yamnet = yamnet
        self.version = yamnet.version
        self.last_audioset: np.ndarray | None = None

    def predict(self, prepared: np.ndarray):
        probs, audioset = self._yamnet.predict(prepared)
        self.last_audioset = audioset[0, list(AUDIOSET_ROWS)].copy()
        return probs, audioset


def _missing(width: int) -> np.ndarray:
    return np.full(width, np.nan, np.float32)


@dataclass
class WindowRecord:
    """Per window, what fusion and the tracker need to be re-run under other thresholds without the models."""

    end_s: list[float] = field(default_factory=list)
    level_dbfs: list[float] = field(default_factory=list)
    passed: list[bool] = field(default_factory=list)
    yamnet: list[np.ndarray] = field(default_factory=list)
    wav2vec2: list[np.ndarray] = field(default_factory=list)
    audioset: list[np.ndarray] = field(default_factory=list)
    """``AUDIOSET_ROWS`` of YAMNet's AudioSet scores."""

    def add(self, outcome, audioset: np.ndarray | None) -> None:
        passed = outcome.fused is not None
        self.end_s.append(outcome.window.end_seconds)
        self.level_dbfs.append(outcome.gate.level_dbfs)
        self.passed.append(passed)
        probs = outcome.model_probs if passed else {}
        self.yamnet.append(probs.get("yamnet", _missing(len(LABELS))))
        self.wav2vec2.append(probs.get("wav2vec2", _missing(len(LABELS))))
        self.audioset.append(audioset if passed and audioset is not None else _missing(len(AUDIOSET_ROWS)))

    def save(self, path: Path) -> None:
        np.savez_compressed(path, end_s=np.asarray(self.end_s), level_dbfs=np.asarray(self.level_dbfs, np.float32),
                            passed=np.asarray(self.passed), yamnet=np.asarray(self.yamnet, np.float32),
                            wav2vec2=np.asarray(self.wav2vec2, np.float32),
                            audioset=np.asarray(self.audioset, np.float32))


def load_window_record(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


# --- measuring -------------------------------------------------------------------------------------

def heavy_modules_loaded() -> list[str]:
    return sorted(name for name in sys.modules if name in HEAVY_MODULES)


def proc_status_kb(field_name: str, pid: int | str = "self") -> int | None:
    """An integer field of /proc/PID/status (VmRSS, VmHWM in kB, Threads); None where there is none (the process
    is gone, or not Linux)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in lines if line.startswith(f"{field_name}:")), None)


def peak_rss_mb() -> float:
    """Peak resident memory of this process's own image (VmHWM). Not ``ru_maxrss``: after fork + exec that starts
    from the parent's peak, so every worker the bench starts would report the bench's own memory."""
    kb = proc_status_kb("VmHWM")
    return (kb if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / KB_PER_MB


def measurements(wall: float, cpu: float, audio_seconds: float) -> dict:
    """rtf, CPU and memory of this process for ``audio_seconds`` of audio."""
    peak_mb = peak_rss_mb()
    hours = audio_seconds / SECONDS_PER_HOUR
    return {"audio_seconds": round(audio_seconds, 3), "wall_seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
            "rtf": round(wall / audio_seconds, 5) if audio_seconds else None,
            "cpu_rtf": round(cpu / audio_seconds, 5) if audio_seconds else None,
            "cpu_seconds_per_audio_hour": round(cpu / hours, 2) if hours else None,
            "peak_rss_mb": round(peak_mb, 1), "heavy_modules_loaded": heavy_modules_loaded()}


class Stopwatch:
    """Wall and process CPU time (all threads) of a block of work."""

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def _stream_seconds(stream: Path) -> float:
    import soundfile as sf

    return float(sf.info(str(stream)).duration)


def audio_progress(total_s: float, desc: str, enabled: bool = True):
    """Progress in seconds of audio: a bar on a terminal, else a log line now and then."""
    return progress_bar(total=total_s, desc=desc, unit="s", enabled=enabled, mininterval=PROGRESS_INTERVAL_S,
                        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}, {rate_fmt}]")


def _with_progress(blocks: Iterable, total_s: float, desc: str, limit_s: float | None = None,
                   show_progress: bool = True) -> Iterator:
    """Blocks with their progress on stderr; stops at ``limit_s`` of audio when given."""
    with audio_progress(min(total_s, limit_s or total_s), desc, enabled=show_progress) as bar:
        for block in blocks:
            if limit_s is not None and block.start_seconds >= limit_s:
                return
            yield block
            bar.update(min(block.samples.size / SAMPLE_RATE, bar.total - bar.n))  # the last block may overrun


def _single_threaded(cfg: Config) -> Config:
    cfg.models.threads = 1
    cfg.mqtt.enabled = False
    return cfg


@dataclass
class _Replay:
    pipeline: object
    events: EventLog
    source: Iterator
    load_seconds: float


def _wire_replay(cfg: Config, stream: Path, limit_s: float | None = None,
                 record: WindowRecord | None = None, show_progress: bool = True) -> _Replay:
    """Models and replay wired as `nursery-monitor replay` wires them (plus the event log and window record)."""
    from monitor.capture import FileReplaySource
    from monitor.classify import load_classifiers
    from monitor.pipeline import Pipeline

    t0 = time.perf_counter()
    classifiers = load_classifiers(cfg)
    load_seconds = time.perf_counter() - t0
    capture = None
    if record is not None:
        capture = AudiosetCapture(classifiers.yamnet)
        classifiers.yamnet = capture
    events = EventLog()

    def on_window(outcome) -> None:
        events.stamp(outcome.window.end_seconds)
        if record is not None:
            record.add(outcome, capture.last_audioset)

    pipeline = Pipeline(cfg, classifiers, events, stream_start_wall=STREAM_EPOCH, on_window=on_window)
    source = _with_progress(FileReplaySource([stream], cfg.audio, cfg.preprocess), _stream_seconds(stream),
                            "replay (ours)", limit_s, show_progress)
    return _Replay(pipeline, events, source, load_seconds)


def _write_json(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")


# --- workers ---------------------------------------------------------------------------------------

def worker_ours(cfg: Config, stream: Path, result: Path, windows: Path, show_progress: bool = True) -> None:
    """The pipeline as configured (``models.wav2vec2_cascade`` included): its events, costs and window record."""
    record = WindowRecord()
    replay = _wire_replay(cfg, stream, record=record, show_progress=show_progress)
    with Stopwatch() as clock:
        stats = replay.pipeline.run(replay.source)
    detected = replay.events.finish(stats.audio_seconds)
    _write_json(result, {
        "system": "ours", "events": [e.to_dict() for e in detected], "event_messages": replay.events.messages,
        **measurements(clock.wall, clock.cpu, stats.audio_seconds),
        "model_load_seconds": round(replay.load_seconds, 3),
        "windows": stats.windows, "gated_windows": stats.gated_windows,
        "gate_pass_fraction": round(stats.gate_pass_fraction, 4),
        "wav2vec2_skipped_windows": stats.wav2vec2_skipped, "wav2vec2_cascade": cfg.models.wav2vec2_cascade,
        "carried_windows": stats.carried_windows,
        "vetoed_windows": dict(stats.vetoed),
        "inference_ms_per_window": {k: round(v, 3) for k, v in stats.mean_inference_ms().items()},
        "model_versions": dict(replay.pipeline.classifiers.versions), "threads": cfg.models.threads,
        "use_wav2vec2": cfg.models.use_wav2vec2, "wav2vec2_variant": cfg.models.wav2vec2_variant,
        "fusion": replay.pipeline.fusion.operating_point(),
    })
    record.save(windows)


def worker_baseline(cfg: Config, stream: Path, result: Path, show_progress: bool = True) -> None:
    from monitor.classify import load_classifiers

    from .baseline import iter_pcm16_chunks, run_baseline

    cfg.models.use_wav2vec2 = False
    t0 = time.perf_counter()
    yamnet = load_classifiers(cfg).yamnet
    load_seconds = time.perf_counter() - t0
    spec = BaselineSpec()
    with audio_progress(_stream_seconds(stream), "replay (baseline)", show_progress) as bar, Stopwatch() as clock:
        run = run_baseline(iter_pcm16_chunks(stream), lambda w: yamnet.predict(w)[1], spec, on_chunk=bar.update)
    inference = {"yamnet_audioset": round(float(np.mean(run.inference_ms)), 3) if run.inference_ms else None}
    _write_json(result, {
        "system": "baseline", "events": [e.to_dict() for e in run.events],
        **measurements(clock.wall, clock.cpu, run.windows * WINDOW_SECONDS),
        "model_load_seconds": round(load_seconds, 3),
        "windows": run.windows, "gated_windows": run.gated_windows,
        "gate_pass_fraction": round(run.gate_pass_fraction, 4), "inference_ms_per_window": inference,
        "model_versions": {"yamnet": yamnet.version}, "threads": cfg.models.threads, "spec": spec.to_dict(),
    })


def worker_profile(cfg: Config, stream: Path, result: Path, text: Path, seconds: float,
                   show_progress: bool = True) -> None:
    from .profile import profile_call

    replay = _wire_replay(cfg, stream, limit_s=seconds, show_progress=show_progress)
    report = profile_call(lambda: replay.pipeline.run(replay.source))
    text.write_text(report.text, encoding="utf-8")
    _write_json(result, {"seconds_profiled": seconds, **report.to_dict()})


@dataclass(frozen=True)
class WorkerPaths:
    stream: Path
    result: Path
    windows: Path | None = None
    """ours: the per-window record for the sweep."""
    profile_text: Path | None = None
    """profile: the pyinstrument text rendering."""


def _child_env() -> dict[str, str]:
    return {**os.environ, **SINGLE_THREAD_ENV,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}


def run_worker(kind: str, paths: WorkerPaths, config: str | None, profile_seconds: float = 0.0,
               show_progress: bool = True, cascade: bool = True, carry: bool = True) -> dict:
    """One worker in a fresh single-threaded process; returns its result JSON (RuntimeError if it failed).
    ``cascade=False`` runs Wav2Vec2 on every gated window, whatever the config says; ``carry=False`` runs the models
    on every gated window (no ``monitor.carry``), so the recorded scores are the models' own."""
    command = [sys.executable, "-m", "bench.replay", kind, "--stream", str(paths.stream), "--result", str(paths.result),
               "--profile-seconds", str(profile_seconds)]
    if not cascade:
        command.append("--no-cascade")
    if not carry:
        command.append("--no-carry")
    if paths.windows:
        command += ["--windows", str(paths.windows)]
    if paths.profile_text:
        command += ["--profile-text", str(paths.profile_text)]
    if config:
        command += ["--config", str(config)]
    if not show_progress:
        command.append("--quiet")
    paths.result.unlink(missing_ok=True)
    completed = subprocess.run(command, env=_child_env(), cwd=str(REPO_ROOT), check=False)
    if completed.returncode != 0 or not paths.result.is_file():
        raise RuntimeError(f"the {kind} replay failed (exit {completed.returncode}); see the messages above")
    return json.loads(paths.result.read_text(encoding="utf-8"))


def run_monitor(stream: Path, events_jsonl: Path, config: str | None) -> dict:
    """The monitor itself (`nursery-monitor replay`, no MQTT) over the stream, alone in its process: its peak RSS
    and CPU are what a device would see, without the benchmark's window record or stream building."""
    command = [sys.executable, "-m", "monitor.cli", "replay", str(stream), "--no-mqtt", "--quiet", "--events-jsonl",
               str(events_jsonl)]
    if config:
        command += ["--config", str(config)]
    peak_mb = 0.0
    events_jsonl.unlink(missing_ok=True)  # the monitor appends to an existing file
    with open(os.devnull, "wb") as quiet, Stopwatch() as clock:
        process = subprocess.Popen(command, env=_child_env(), cwd=str(REPO_ROOT), stdout=quiet)
        while True:  # VmHWM only grows: the last reading before the exit is the peak, to within one poll
            kb = proc_status_kb("VmHWM", process.pid)
            peak_mb = max(peak_mb, kb / KB_PER_MB if kb is not None else 0.0)
            waited, status, usage = os.wait4(process.pid, os.WNOHANG)
            if waited:
                break
            time.sleep(MEMORY_POLL_SECONDS)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"`nursery-monitor replay` failed (exit {process.returncode}); see the messages above")
    messages = [json.loads(line) for line in events_jsonl.read_text(encoding="utf-8").splitlines() if line.strip()]
    audio_seconds = _stream_seconds(stream)
    return {"peak_rss_mb": round(peak_mb, 1), "wall_seconds": round(clock.wall, 3),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
            "cpu_seconds_per_audio_hour": round((usage.ru_utime + usage.ru_stime) / audio_seconds * SECONDS_PER_HOUR,
                                                2),
            "event_messages": len(messages), "starts": sum(m.get("phase") == PHASE_START for m in messages)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description="One measured replay (internal).")
    parser.add_argument("kind", choices=WORKERS)
    parser.add_argument("--stream", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--windows", type=Path)
    parser.add_argument("--profile-text", type=Path)
    parser.add_argument("--profile-seconds", type=float, default=0.0)
    add_config_option(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    parser.add_argument("--no-cascade", action="store_true", help="Wav2Vec2 on every gated window")
    parser.add_argument("--no-carry", action="store_true", help="the models on every gated window (no carry-over)")
    args = parser.parse_args(argv)
    setup_logging("WARNING")
    progress_log.setLevel(logging.INFO)  # off a terminal, progress comes as log lines
    show = not args.quiet
    cfg = _single_threaded(load_config(args.config))
    if args.no_cascade:
        cfg.models.wav2vec2_cascade = False
    if args.no_carry:
        cfg.models.carry_below = 0.0
    if args.kind == "ours":
        worker_ours(cfg, args.stream, args.result, args.windows or args.result.with_suffix(".npz"), show)
    elif args.kind == "baseline":
        worker_baseline(cfg, args.stream, args.result, show)
    else:
        worker_profile(cfg, args.stream, args.result, args.profile_text or args.result.with_suffix(".txt"),
                       args.profile_seconds, show)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
