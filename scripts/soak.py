"""Soak: hours of household audio through the real ``Pipeline``, as fast as the CPU goes, watching the process.

The audio is rendered on the fly by ``bench.stream`` (room tone, household sounds, a cry or a scream every
35-60 s), a block at a time, never held whole. Every ``--sample-minutes`` of audio the soak records the
resident memory (VmRSS), the threads, the MQTT outbox and the pipeline's own buffers. The verdict compares
the rest of the run with the state after ``--warmup-minutes``: memory may grow by less than
``--max-growth-mb``, threads and the outbox may not grow, and every buffer stays within its declared bound.

    .venv/bin/python scripts/soak.py                      # 4 h; the real models if models/manifest.json exists
    .venv/bin/python scripts/soak.py --models fake        # the tone models of tests/helpers/fake_models.py
    .venv/bin/python scripts/soak.py --mqtt 127.0.0.1:1883  # also publish, and watch the outbox

Prints one JSON document; exit 0 passed, 1 something grew, 2 unusable models or config.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.replay import proc_status_kb
from bench.stream import SourceClip, StreamRenderer, StreamSpec, make_source_clip, plan_stream
from monitor.capture import AudioClock
from monitor.classify import load_classifiers
from monitor.command import add_config_option, setup_logging
from monitor.config import Config, ConfigError, MqttConfig, load_config
from monitor.constants import SAMPLE_RATE, WINDOW_SAMPLES
from monitor.counters import RECENT_EVENT_MESSAGES, RECENT_TIMES_KEPT
from monitor.events import PHASE_START
from monitor.model_manifest import MANIFEST_NAME, ModelError
from monitor.mqtt import MqttPublisher
from monitor.outbox import Outbox
from monitor.paths import REPO_ROOT, models_dir
from monitor.pipeline import Pipeline
from monitor.sinks import EventSink, FanoutSink, MqttSink

log = logging.getLogger("soak")

EXIT_PASSED, EXIT_GREW, EXIT_UNUSABLE = 0, 1, 2
SECONDS_PER_MINUTE = 60.0
SECONDS_PER_HOUR = 3600.0
KB_PER_MB = 1024.0
DEFAULT_HOURS = 4.0
DEFAULT_SAMPLE_MINUTES = 10.0
DEFAULT_WARMUP_MINUTES = 30.0
DEFAULT_MAX_GROWTH_MB = 10.0
OUTBOX_SLACK = 4
"""Messages the outbox may hold at a sample without counting as growth (a start and its state change in flight)."""
STREAM_EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
CLOSE_SECONDS = 5.0

# Synthetic sounds: the fake models hear 500 Hz as Crying, 1000 Hz as Screaming, 2000 Hz as Normal.
CRY_HZ, SCREAM_HZ, WHISTLE_HZ = 500.0, 1000.0, 2000.0
HUM_HZ = 100.0
CHORD_HZ = (262.0, 330.0, 392.0)
SPEECH_BAND_HZ = (300.0, 3000.0)
SYLLABLE_HZ = 4.0
CRY_BOUT_SECONDS = (0.8, 0.3)
"""On / off of a crying bout."""


# --- the household --------------------------------------------------------------------------------------


def _time(seconds: float) -> np.ndarray:
    return np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE


def _tone(seconds: float, hz: float, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * hz * _time(seconds))


def _bouts(seconds: float, on_off: tuple[float, float]) -> np.ndarray:
    """1 during each bout, 0 between them."""
    on, off = on_off
    return (np.mod(_time(seconds), on + off) < on).astype(np.float64)


def _band_noise(seconds: float, band: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(int(seconds * SAMPLE_RATE)))
    freqs = np.fft.rfftfreq(int(seconds * SAMPLE_RATE), 1 / SAMPLE_RATE)
    spectrum[(freqs < band[0]) | (freqs > band[1])] = 0
    noise = np.fft.irfft(spectrum, int(seconds * SAMPLE_RATE))
    return 0.3 * noise / (np.max(np.abs(noise)) + 1e-9)


def _knocks(seconds: float, count: int, hz: float, rng: np.random.Generator) -> np.ndarray:
    """Short decaying bursts at random moments (knocks, clatter)."""
    out = np.zeros(int(seconds * SAMPLE_RATE))
    burst = _tone(0.15, hz, 0.8) * np.exp(-_time(0.15) * 30) + 0.2 * rng.standard_normal(int(0.15 * SAMPLE_RATE))
    for start in rng.integers(0, out.size - burst.size, size=count):
        out[start:start + burst.size] += burst
    return out


def household_clips(seed: int = 0) -> list[SourceClip]:
    """Normal household sounds, crying bouts and screams, synthesised (no data set needed)."""
    rng = np.random.default_rng(seed)
    sounds = {
        ("kettle-whistle", "Normal"): _tone(4.0, WHISTLE_HZ, 0.4),
        ("fridge-hum", "Normal"): sum(_tone(8.0, HUM_HZ * k, 0.3 / k) for k in (1, 2, 3)),
        ("speech-babble", "Normal"): _band_noise(6.0, SPEECH_BAND_HZ, rng) * (0.6 + 0.4 * np.sin(
            2 * np.pi * SYLLABLE_HZ * _time(6.0))),
        ("dishes", "Normal"): _knocks(3.0, 12, 3000.0, rng),
        ("door-knock", "Normal"): _knocks(2.0, 3, 150.0, rng),
        ("music", "Normal"): sum(_tone(6.0, hz * k, 0.15 / k) for hz in CHORD_HZ for k in (1, 2)),
        ("cry-short-bouts", "Crying"): _tone(4.4, CRY_HZ) * _bouts(4.4, CRY_BOUT_SECONDS),
        ("cry-long", "Crying"): _tone(6.0, CRY_HZ, 0.4),
        ("scream", "Screaming"): _tone(2.5, SCREAM_HZ, 0.6),
    }
    clips = [make_source_clip(name, label, samples) for (name, label), samples in sounds.items()]
    return [clip for clip in clips if clip is not None]


# --- what is watched ---------------------------------------------------------------------------------------


@dataclass
class EventCounter:
    """A sink that counts what the pipeline publishes and keeps nothing."""

    messages: int = 0
    starts: Counter = field(default_factory=Counter)
    status_messages: int = 0

    def handle_event(self, payload: dict) -> None:
        self.messages += 1
        if payload["phase"] == PHASE_START:
            self.starts[payload["label"]] += 1

    def publish_status(self, payload: dict) -> None:
        self.status_messages += 1

    def close(self, timeout: float | None = None) -> None:
        """Nothing to release."""


def _proc_status(field_name: str) -> int:
    value = proc_status_kb(field_name)
    if value is None:
        raise RuntimeError(f"/proc/self/status has no {field_name}")
    return value


@dataclass(frozen=True)
class Sample:
    audio_minutes: float
    wall_seconds: float
    rss_mb: float
    python_threads: int
    os_threads: int
    outbox: int | None
    buffers: dict[str, int]
    gc_objects: int


def buffer_sizes(pipeline: Pipeline) -> dict[str, int]:
    """The pipeline's growing state, each with a bound in ``buffer_bounds``."""
    return {
        "window_samples": pipeline.windower.buffered_samples,
        "noise_floor_frames": pipeline.gate.floor.count,
        "recent_event_messages": len(pipeline.stats.events),
        "inference_times": max((len(timing.recent_ms) for timing in pipeline.stats.inference.values()), default=0),
    }


def buffer_bounds(pipeline: Pipeline) -> dict[str, int]:
    return {"window_samples": WINDOW_SAMPLES, "noise_floor_frames": pipeline.gate.floor.capacity,
            "recent_event_messages": RECENT_EVENT_MESSAGES, "inference_times": RECENT_TIMES_KEPT}


def take_sample(pipeline: Pipeline, publisher: MqttPublisher | None, started: float) -> Sample:
    gc.collect()
    return Sample(
        audio_minutes=round(pipeline.stats.audio_seconds / SECONDS_PER_MINUTE, 2),
        wall_seconds=round(time.perf_counter() - started, 1),
        rss_mb=round(_proc_status("VmRSS") / KB_PER_MB, 2),
        python_threads=threading.active_count(),
        os_threads=_proc_status("Threads"),
        outbox=None if publisher is None else len(publisher.outbox),
        buffers=buffer_sizes(pipeline),
        gc_objects=len(gc.get_objects()),
    )


@dataclass(frozen=True)
class Verdict:
    warmup_rss_mb: float
    final_rss_mb: float
    max_rss_mb_after_warmup: float
    growth_mb: float
    """Largest RSS after warm-up minus RSS at warm-up."""
    max_os_threads: int
    threads_grew: bool
    outbox_grew: bool
    buffers_over_bound: list[str]
    passed: bool


def judge(samples: list[Sample], warmup_minutes: float, max_growth_mb: float, bounds: dict[str, int]) -> Verdict:
    warm_index = next((i for i, s in enumerate(samples) if s.audio_minutes >= warmup_minutes), len(samples) - 1)
    warm, after = samples[warm_index], samples[warm_index:]
    growth = max(s.rss_mb for s in after) - warm.rss_mb
    threads_grew = any(s.python_threads > warm.python_threads or s.os_threads > warm.os_threads for s in after)
    outbox_limit = max([OUTBOX_SLACK] + [s.outbox or 0 for s in samples[:warm_index + 1]])
    outbox_grew = any((s.outbox or 0) > outbox_limit for s in after)
    over = sorted({name for s in samples for name, size in s.buffers.items() if size > bounds[name]})
    return Verdict(
        warmup_rss_mb=warm.rss_mb, final_rss_mb=samples[-1].rss_mb,
        max_rss_mb_after_warmup=max(s.rss_mb for s in after), growth_mb=round(growth, 2),
        max_os_threads=max(s.os_threads for s in samples), threads_grew=threads_grew, outbox_grew=outbox_grew,
        buffers_over_bound=over,
        passed=growth < max_growth_mb and not threads_grew and not outbox_grew and not over)


# --- the run ---------------------------------------------------------------------------------------------


def write_fake_models(folder: Path) -> Path:
    """The tone models of tests/helpers/ (the helpers package the tests share), outside the installed packages."""
    sys.path.insert(0, str(REPO_ROOT))
    from tests.helpers.fake_models import write_fake_models as write

    return write(folder)


def configure(args: argparse.Namespace, workdir: Path) -> tuple[Config, str]:
    """The config (found as every command finds it) and which models it uses."""
    cfg = load_config(args.config)
    use_real = args.models == "real" or (args.models == "auto" and (models_dir() / MANIFEST_NAME).is_file())
    if not use_real:
        cfg.models.manifest = str(write_fake_models(workdir / "models"))
        cfg.models.use_wav2vec2 = False  # the fake Wav2Vec2 always says Normal and would veto every event
    return cfg, "real" if use_real else "fake"


def outbox_file(workdir: Path) -> Path:
    return workdir / "outbox.sqlite"


def undelivered(workdir: Path) -> int:
    """Messages left in the outbox once the publisher has closed it."""
    outbox = Outbox(outbox_file(workdir))
    try:
        return len(outbox)
    finally:
        outbox.close()


def start_publisher(address: str, cfg: Config, workdir: Path) -> MqttPublisher:
    host, _, port = address.rpartition(":")
    publisher = MqttPublisher(MqttConfig(host=host, port=int(port)), f"{cfg.device_id}-soak",
                              Outbox(outbox_file(workdir), cfg.mqtt.outbox_max_rows))
    publisher.start()
    return publisher


def soak(args: argparse.Namespace, workdir: Path) -> dict:
    cfg, models = configure(args, workdir)
    classifiers = load_classifiers(cfg)
    counter = EventCounter()
    publisher = start_publisher(args.mqtt, cfg, workdir) if args.mqtt else None
    sinks: list[EventSink] = [counter] + ([MqttSink(publisher)] if publisher else [])
    sink = FanoutSink(sinks)
    pipeline = Pipeline(cfg, classifiers, sink, stream_start_wall=STREAM_EPOCH)
    clips = household_clips(args.seed)
    plan = plan_stream(clips, StreamSpec(hours=args.hours, seed=args.seed))
    renderer = StreamRenderer(plan, clips)
    clock = AudioClock()
    block = max(1, round(cfg.audio.block_seconds * SAMPLE_RATE))
    every = round(args.sample_minutes * SECONDS_PER_MINUTE * SAMPLE_RATE)
    started = time.perf_counter()
    samples = [take_sample(pipeline, publisher, started)]
    try:
        for start in range(0, plan.sample_count, block):
            pipeline.process_block(clock.stamp(renderer.render(start, start + block)))
            if (start + block) // every > start // every:
                samples.append(take_sample(pipeline, publisher, started))
                log.info("soak: %.0f min of audio, RSS %.1f MB", samples[-1].audio_minutes, samples[-1].rss_mb)
        pipeline.finish()
    finally:
        sink.close(CLOSE_SECONDS)
    verdict = judge(samples, args.warmup_minutes, args.max_growth_mb, buffer_bounds(pipeline))
    return {
        "models": models, "model_versions": classifiers.versions, "use_wav2vec2": cfg.models.use_wav2vec2,
        "audio_hours": round(pipeline.stats.audio_seconds / SECONDS_PER_HOUR, 3),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "speed_x_realtime": round(pipeline.stats.audio_seconds / max(time.perf_counter() - started, 1e-9), 1),
        "windows": pipeline.stats.windows, "gated_windows": pipeline.stats.gated_windows,
        "inference_ms_per_window": {model: round(ms, 2) for model, ms in pipeline.stats.mean_inference_ms().items()},
        "insertions": len(plan.truth), "event_messages": counter.messages, "event_starts": dict(counter.starts),
        "mqtt": args.mqtt, "outbox_left": None if publisher is None else undelivered(workdir),
        "limits": {"max_growth_mb": args.max_growth_mb, "warmup_minutes": args.warmup_minutes,
                   "buffer_bounds": buffer_bounds(pipeline)},
        "verdict": asdict(verdict),
        "samples": [asdict(s) for s in samples],
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=DEFAULT_HOURS, help="audio to replay (default 4)")
    parser.add_argument("--models", choices=("auto", "real", "fake"), default="auto",
                        help="auto: the real models when models/manifest.json exists, else the fake tone models")
    add_config_option(parser)
    parser.add_argument("--mqtt", metavar="HOST:PORT", help="also publish to this broker (the outbox is watched)")
    parser.add_argument("--sample-minutes", type=float, default=DEFAULT_SAMPLE_MINUTES,
                        help="audio between two measurements (default 10)")
    parser.add_argument("--warmup-minutes", type=float, default=DEFAULT_WARMUP_MINUTES,
                        help="audio before the reference measurement (default 30)")
    parser.add_argument("--max-growth-mb", type=float, default=DEFAULT_MAX_GROWTH_MB,
                        help="RSS growth after warm-up that fails the soak (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.hours <= 0 or args.sample_minutes <= 0 or args.warmup_minutes < 0:
        print("soak: --hours and --sample-minutes must be positive, --warmup-minutes not negative", file=sys.stderr)
        return EXIT_UNUSABLE
    setup_logging("WARNING")
    with tempfile.TemporaryDirectory(prefix="nursery-soak-") as tmp:
        try:
            report = soak(args, Path(tmp))
        except (ConfigError, ModelError) as exc:
            print(f"soak: {exc}", file=sys.stderr)
            return EXIT_UNUSABLE
    print(json.dumps(report, indent=1))
    return EXIT_PASSED if report["verdict"]["passed"] else EXIT_GREW


if __name__ == "__main__":
    sys.exit(main())
