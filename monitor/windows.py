"""Sliding 0.975 s analysis windows over a stream of 16 kHz samples, whatever the block sizes.

The stream is cut on a fixed grid of the audio clock (window ``i`` ends at sample
``WINDOW_SAMPLES + i * hop``), so pushing the same audio in different chunkings yields the very
same windows. Memory is one window: a ring buffer plus the position of the next window end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .constants import SAMPLE_RATE, WINDOW_SAMPLES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """One model input on the audio clock (seconds of audio since the stream started)."""

    samples: np.ndarray = field(repr=False)
    """float32, shape (WINDOW_SAMPLES,); owned by this window (never overwritten later)."""
    index: int
    start_sample: int
    """Absolute sample index of ``samples[0]`` on the audio clock."""
    new_samples: np.ndarray = field(repr=False)
    """The tail of ``samples`` that arrived since the previous window (the whole window for the first one)."""

    @property
    def end_sample(self) -> int:
        return self.start_sample + WINDOW_SAMPLES

    @property
    def start_seconds(self) -> float:
        return self.start_sample / SAMPLE_RATE

    @property
    def end_seconds(self) -> float:
        return self.end_sample / SAMPLE_RATE


def hop_samples_from_seconds(hop_seconds: float) -> int:
    """Window step in samples; a hop longer than a window would leave audio unseen, so it is refused."""
    hop = int(round(hop_seconds * SAMPLE_RATE))
    if not 1 <= hop <= WINDOW_SAMPLES:
        raise ValueError(f"hop of {hop_seconds} s must be between 1 sample and one window ({WINDOW_SAMPLES} samples)")
    return hop


def seconds_to_samples(seconds: float) -> int:
    return int(round(seconds * SAMPLE_RATE))


class SlidingWindower:
    """Cuts pushed audio into overlapping windows; leftover samples are carried to the next push."""

    def __init__(self, hop_samples: int, start_seconds: float = 0.0):
        if not 1 <= hop_samples <= WINDOW_SAMPLES:
            raise ValueError(f"hop_samples must be between 1 and {WINDOW_SAMPLES}, got {hop_samples}")
        self.hop_samples = int(hop_samples)
        self._ring = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
        self.reset(start_seconds)

    def reset(self, start_seconds: float = 0.0) -> None:
        """Forget buffered audio; the next sample pushed is at ``start_seconds`` of the audio clock (after a gap)."""
        self._ring.fill(0.0)
        self._write_pos = 0
        self._total = seconds_to_samples(start_seconds)
        self._next_end = self._total + WINDOW_SAMPLES
        self._index = 0

    @property
    def buffered_samples(self) -> int:
        """Samples held for the next window (never more than one window)."""
        return WINDOW_SAMPLES - (self._next_end - self._total)

    @property
    def position_seconds(self) -> float:
        """Audio clock at the end of everything pushed so far."""
        return self._total / SAMPLE_RATE

    def push(self, samples: np.ndarray) -> list[Window]:
        """Append mono samples; returns the windows completed by them, oldest first."""
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"expected 1-D mono samples, got an array of shape {samples.shape}")
        windows = []
        offset = 0
        while offset < samples.size:
            take = min(self._next_end - self._total, samples.size - offset)
            self._write(samples[offset:offset + take])
            offset += take
            self._total += take
            if self._total == self._next_end:
                windows.append(self._emit())
        return windows

    def _write(self, chunk: np.ndarray) -> None:
        """Copy ``chunk`` (never longer than the ring) in at the write position, wrapping once at most."""
        first = min(chunk.size, WINDOW_SAMPLES - self._write_pos)
        self._ring[self._write_pos:self._write_pos + first] = chunk[:first]
        self._ring[:chunk.size - first] = chunk[first:]
        self._write_pos = (self._write_pos + chunk.size) % WINDOW_SAMPLES

    def _emit(self) -> Window:
        samples = np.concatenate([self._ring[self._write_pos:], self._ring[:self._write_pos]])
        new_count = WINDOW_SAMPLES if self._index == 0 else self.hop_samples
        window = Window(samples=samples, index=self._index, start_sample=self._total - WINDOW_SAMPLES,
                        new_samples=samples[WINDOW_SAMPLES - new_count:])
        self._index += 1
        self._next_end += self.hop_samples
        return window
