"""Small pure helpers shared by the runtime, training and the tools, written once: softmax, dBFS levels,
padding to one model window, 16-bit PCM / 30 ms VAD framing, and the one-line error text."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .constants import EPSILON, SAMPLE_RATE, VAD_FRAME_SAMPLES, WINDOW_SAMPLES

SILENCE_DBFS = 10 * float(np.log10(EPSILON))
"""The level of digital silence: EPSILON guards every log, so silence reads about -120 dBFS."""

PCM16_FULL_SCALE = 32767
"""webrtcvad takes 16-bit PCM: float samples in [-1, 1] scale to this."""


# --- probabilities -------------------------------------------------------------------------------

def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` in float64, stable for large logits."""
    scaled = np.asarray(logits, dtype=np.float64) / float(temperature)
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


# --- levels --------------------------------------------------------------------------------------

def power_to_dbfs(power: np.ndarray | float) -> np.ndarray:
    """Mean-square power -> dBFS; silence -> ``SILENCE_DBFS``."""
    return 10.0 * np.log10(np.asarray(power, dtype=np.float64) + EPSILON)


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level in dBFS (full-scale sine ~ -3 dBFS); silence (or no samples) -> about -120."""
    if samples.size == 0:
        return SILENCE_DBFS
    return float(power_to_dbfs(float(np.mean(np.square(samples, dtype=np.float64)))))


def amplitude_to_dbfs(peak: float) -> float:
    """A peak magnitude in dBFS; silence -> ``SILENCE_DBFS``."""
    return float(20 * np.log10(max(peak, np.sqrt(EPSILON))))


# --- framing -------------------------------------------------------------------------------------

def pad_to_window(samples: np.ndarray) -> np.ndarray:
    """``samples`` zero-padded at the end to one model window; longer input is returned as it is."""
    if samples.size >= WINDOW_SAMPLES:
        return samples
    return np.pad(samples, (0, WINDOW_SAMPLES - samples.size))


def split_frames(samples: np.ndarray, frame: int = VAD_FRAME_SAMPLES) -> np.ndarray:
    """Whole frames of ``samples`` as float32 rows; a trailing partial frame is left out."""
    count = samples.size // frame
    return np.asarray(samples[:count * frame], dtype=np.float32).reshape(count, frame)


def to_pcm16(frames: np.ndarray) -> np.ndarray:
    """Float samples -> little-endian 16-bit PCM, clipped to full scale."""
    return (np.clip(frames, -1.0, 1.0) * PCM16_FULL_SCALE).astype("<i2")


class SpeechDetector(Protocol):
    def is_speech(self, buf: bytes, sample_rate: int) -> bool: ...


def voiced_frames(vad: SpeechDetector, frames: np.ndarray) -> np.ndarray:
    """webrtcvad's speech flag for each 30 ms row of ``frames`` (float, 16 kHz)."""
    pcm = to_pcm16(frames).tobytes()  # one conversion for all rows, sliced per frame: this runs every window
    size = len(pcm) // len(frames) if len(frames) else 1
    return np.array([vad.is_speech(pcm[start:start + size], SAMPLE_RATE) for start in range(0, len(pcm), size)],
                    dtype=bool)


# --- messages ------------------------------------------------------------------------------------

def one_line(error: BaseException | str | None) -> str:
    """An error (or any text) on one line, whitespace collapsed, for logs, status and stderr; an exception
    without a message gives its type name."""
    if error is None:
        return "unknown error"
    text = " ".join(str(error).split())
    if text or not isinstance(error, BaseException):
        return text
    return type(error).__name__
