"""A bounded ring buffer of the most recent conditioned audio, addressed on the audio clock.

The pipeline pushes every block into it, so when an event is published its pre-roll (the audio before the
first window that counted) can still be read back. Memory is fixed: ``capacity_seconds`` of float32.
"""

from __future__ import annotations

import numpy as np

from .constants import SAMPLE_RATE


class AudioRing:
    """The last ``capacity_seconds`` of 16 kHz audio; sample ``n`` is audio-clock time ``n / 16000``."""

    def __init__(self, capacity_seconds: float):
        self.capacity = max(1, round(capacity_seconds * SAMPLE_RATE))
        self._buffer = np.zeros(self.capacity, np.float32)
        self.total_samples = 0
        """Samples pushed since the stream started: the audio clock, in samples."""

    @property
    def oldest_sample(self) -> int:
        return max(0, self.total_samples - self.capacity)

    def push(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, np.float32).reshape(-1)
        if samples.size >= self.capacity:
            self.total_samples += samples.size - self.capacity
            samples = samples[-self.capacity:]
        start = self.total_samples % self.capacity
        first = min(samples.size, self.capacity - start)
        self._buffer[start:start + first] = samples[:first]
        self._buffer[:samples.size - first] = samples[first:]
        self.total_samples += samples.size

    def read(self, start_sample: int, end_sample: int | None = None) -> np.ndarray:
        """A copy of samples ``[start_sample, end_sample)``, limited to what the ring still holds."""
        end = self.total_samples if end_sample is None else min(end_sample, self.total_samples)
        start = max(start_sample, self.oldest_sample)
        if end <= start:
            return np.zeros(0, np.float32)
        indices = np.arange(start, end) % self.capacity
        return self._buffer[indices].copy()
