"""Synthetic audio files and a fake microphone (a sounddevice-like stream calling back from its own thread)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from monitor.capture import AudioBlock, MicError, StreamRequest
from monitor.config import AudioConfig
from monitor.constants import SAMPLE_RATE

WAIT_SECONDS = 10.0
"""How long a test waits for a fake microphone's thread."""
RESAMPLE_TOLERANCE = 2
"""Samples the streaming resampler may differ from frames * 16000 / rate (rounding in each stage)."""


def tone(frames: int, rate: int, channels: int = 1, amplitude: float = 0.5, hz: float = 440.0) -> np.ndarray:
    t = np.arange(frames) / rate
    mono = amplitude * np.sin(2 * np.pi * hz * t)
    return np.repeat(mono[:, None], channels, axis=1).astype(np.float32)


def write_audio(path: Path, seconds: float, rate: int, channels: int = 1, subtype: str = "PCM_16",
                amplitude: float = 0.5) -> int:
    """Writes a tone file; returns its frame count."""
    frames = int(round(seconds * rate))
    sf.write(str(path), tone(frames, rate, channels, amplitude), rate, subtype=subtype)
    return frames


def expected_samples(frames: int, rate: int) -> float:
    return frames * SAMPLE_RATE / rate


def assert_contiguous(blocks: list[AudioBlock]) -> None:
    for previous, block in zip(blocks, blocks[1:], strict=False):
        assert block.start_seconds == pytest.approx(previous.end_seconds, abs=1e-9)


@dataclass
class FakeStatus:
    input_overflow: bool = False


class FakeDevice:
    """A microphone that can be unplugged and re-plugged; its streams call back from their own thread."""

    def __init__(self, rate: int = 48000, channels: int = 2, amplitude: float = 0.5, period: float = 0.002,
                 hz: float = 440.0):
        self.rate = rate
        self.channels = channels
        self.amplitude = amplitude
        self.hz = hz
        """Tone frequency: a whole number of cycles per block keeps it continuous across blocks."""
        self.period = period
        self.present = True
        self.calling_back = True
        self.overflow_every: int | None = None
        self.max_blocks: int | None = None
        self.open_attempts = 0
        self.requests: list[StreamRequest] = []
        self.streams: list[FakeStream] = []
        self.frames_sent = 0
        self.overflows_sent = 0
        self.blocks_sent = 0
        self.clipped_sent = 0

    def factory(self, request: StreamRequest) -> FakeStream:
        self.open_attempts += 1
        self.requests.append(request)
        if not self.present:
            raise MicError("no input device matching 'USB' (available: none)")
        stream = FakeStream(self, request)
        self.streams.append(stream)
        return stream

    def unplug(self) -> None:
        self.present = False


class FakeStream:
    def __init__(self, device: FakeDevice, request: StreamRequest):
        self.device = device
        self.samplerate = float(device.rate)
        self.active = False
        self._callback = request.callback
        self._frames = max(1, round(request.block_seconds * device.rate))
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.active = True
        self._thread.start()

    def _run(self) -> None:
        device = self.device
        while not self._closed.wait(device.period):
            if not device.present:
                self.active = False  # PortAudio reports the stream as no longer active
                return
            if not device.calling_back or (device.max_blocks is not None and device.blocks_sent >= device.max_blocks):
                continue
            block = tone(self._frames, device.rate, device.channels, device.amplitude, device.hz)
            overflow = device.overflow_every is not None and device.blocks_sent % device.overflow_every == 0
            device.blocks_sent += 1
            device.frames_sent += self._frames
            device.overflows_sent += overflow
            device.clipped_sent += int(np.count_nonzero(np.abs(block) >= 0.999))
            self._callback(block, self._frames, None, FakeStatus(overflow))

    def close(self) -> None:
        self._closed.set()
        self.active = False
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class ManualClock:
    """A clock (``time.monotonic`` stand-in) that moves only when the test sets ``now``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingSleep:
    """Records backoff waits and returns almost at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        time.sleep(0.002)


def mic_config(**overrides) -> AudioConfig:
    settings = dict(block_seconds=0.05, queue_seconds=10.0, retry_min_seconds=1.0, retry_max_seconds=4.0,
                    no_data_seconds=60.0)
    settings.update(overrides)
    return AudioConfig(**settings)
