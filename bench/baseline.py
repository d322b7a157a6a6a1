"""The simple approach users would otherwise pick: YAMNet's own AudioSet scores, the way Frigate listens.

Frigate's audio detector (``frigate/events/audio.py``) reads non-overlapping 0.975 s chunks of 16-bit audio,
skips a chunk whose RMS on the int16 scale is below ``min_volume`` (default 500, about -36 dBFS), runs
YAMNet on the chunk scaled to [-1, 1], and starts an event for a label whose score clears the threshold;
the event ends once the label has not been heard for ``max_not_heard`` (default 30 s). Here the labels
are AudioSet rows 19/20 (crying) and 11 (screaming), ``constants.YAMNET_VOTER_CLASSES``, at 0.5.

The chunks are the stream file as stored (16 kHz, 16-bit), without our conditioning or loudness
normalisation: that is what Frigate feeds its model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from monitor.constants import SAMPLE_RATE, WINDOW_SAMPLES, YAMNET_VOTER_CLASSES

from .score import DetectedEvent

PCM16_SCALE = 32768.0
"""Frigate divides int16 samples by this before YAMNet."""


@dataclass(frozen=True)
class BaselineSpec:
    threshold: float = 0.5
    """A label is heard in a chunk when one of its AudioSet rows scores above this."""
    min_volume_int16: float = 500.0
    """Frigate's default RMS floor on the int16 scale: 500 / 32768 = about -36.3 dBFS. Quieter chunks are skipped."""
    max_not_heard_s: float = 30.0
    """Frigate's default: an event ends once its label was not heard for this long."""
    classes: dict[str, tuple[int, ...]] = field(default_factory=lambda: dict(YAMNET_VOTER_CLASSES))

    @property
    def min_volume_dbfs(self) -> float:
        return float(20 * np.log10(self.min_volume_int16 / PCM16_SCALE))

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "min_volume_int16": self.min_volume_int16,
                "min_volume_dbfs": round(self.min_volume_dbfs, 2), "max_not_heard_s": self.max_not_heard_s,
                "classes": {label: list(rows) for label, rows in self.classes.items()},
                "window_seconds": WINDOW_SAMPLES / SAMPLE_RATE, "hop_seconds": WINDOW_SAMPLES / SAMPLE_RATE}


def chunk_rms_int16(chunk: np.ndarray) -> float:
    """RMS on the int16 scale, as Frigate computes it before deciding whether to run the model."""
    values = np.asarray(chunk, dtype=np.float64)
    return float(np.sqrt(np.mean(np.square(values)))) if values.size else 0.0


def heard_labels(audioset_scores: np.ndarray, spec: BaselineSpec) -> list[str]:
    """Labels with an AudioSet row scoring above the threshold in one chunk."""
    return [label for label, rows in spec.classes.items()
            if float(np.max(audioset_scores[list(rows)])) > spec.threshold]


@dataclass
class _OpenEvent:
    start_s: float
    raised_s: float
    last_heard_s: float


class FrigateStyleTracker:
    """One open event per label, ended once the label was not heard for ``max_not_heard_s``."""

    def __init__(self, spec: BaselineSpec):
        self.spec = spec
        self._open: dict[str, _OpenEvent] = {}

    def update(self, chunk_start_s: float, chunk_end_s: float, labels: Iterable[str]) -> list[DetectedEvent]:
        """Feed one chunk (its heard labels); returns the events that ended."""
        for label in labels:
            event = self._open.get(label)
            if event is None:
                self._open[label] = _OpenEvent(start_s=chunk_start_s, raised_s=chunk_end_s, last_heard_s=chunk_end_s)
            else:
                event.last_heard_s = chunk_end_s
        expired = [label for label, e in self._open.items() if chunk_end_s - e.last_heard_s > self.spec.max_not_heard_s]
        return [self._close(label) for label in expired]

    def finish(self) -> list[DetectedEvent]:
        return [self._close(label) for label in list(self._open)]

    def _close(self, label: str) -> DetectedEvent:
        event = self._open.pop(label)
        return DetectedEvent(label, start_s=event.start_s, end_s=event.last_heard_s, raised_s=event.raised_s)


def iter_pcm16_chunks(path: str | Path) -> Iterator[np.ndarray]:
    """Non-overlapping int16 chunks of one window; a trailing partial chunk is dropped (Frigate waits for it)."""
    with sf.SoundFile(str(path)) as handle:
        if handle.samplerate != SAMPLE_RATE or handle.channels != 1:
            raise ValueError(f"{path}: the baseline reads 16 kHz mono, got {handle.samplerate} Hz x {handle.channels}")
        for chunk in handle.blocks(blocksize=WINDOW_SAMPLES, dtype="int16"):
            if chunk.size == WINDOW_SAMPLES:
                yield chunk


@dataclass
class BaselineRun:
    events: list[DetectedEvent] = field(default_factory=list)
    windows: int = 0
    gated_windows: int = 0
    inference_ms: list[float] = field(default_factory=list)

    @property
    def gate_pass_fraction(self) -> float:
        return self.gated_windows / self.windows if self.windows else 0.0


AudiosetModel = Callable[[np.ndarray], np.ndarray]
"""Waveforms (B, 15600) in [-1, 1] -> AudioSet scores (B, 521)."""


def run_baseline(chunks: Iterable[np.ndarray], audioset: AudiosetModel, spec: BaselineSpec = BaselineSpec(),
                 on_chunk: Callable[[float], None] | None = None) -> BaselineRun:
    """Frigate's loop over int16 chunks: RMS floor, YAMNet, threshold, per-label events."""
    run = BaselineRun()
    tracker = FrigateStyleTracker(spec)
    chunk_seconds = WINDOW_SAMPLES / SAMPLE_RATE
    for index, chunk in enumerate(chunks):
        start_s = index * chunk_seconds
        run.windows += 1
        labels: list[str] = []
        if chunk_rms_int16(chunk) >= spec.min_volume_int16:
            run.gated_windows += 1
            waveform = (np.asarray(chunk, dtype=np.float32) / PCM16_SCALE)[None]
            t0 = time.perf_counter()
            scores = audioset(waveform)[0]
            run.inference_ms.append((time.perf_counter() - t0) * 1000.0)
            labels = heard_labels(scores, spec)
        run.events.extend(tracker.update(start_s, start_s + chunk_seconds, labels))
        if on_chunk is not None:
            on_chunk(chunk_seconds)
    run.events.extend(tracker.finish())
    run.events.sort(key=lambda e: e.raised_s)
    return run
