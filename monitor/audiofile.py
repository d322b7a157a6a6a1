"""Reading audio files (wav / flac / ogg, any rate, channels and sample format) with one clear error type."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from .config import PreprocessConfig
from .constants import SAMPLE_RATE
from .preprocess import Conditioner


class AudioFileError(Exception):
    """The file cannot be decoded as audio; the message names the file and says why, in one line."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = " ".join(str(reason).split())
        super().__init__(f"{self.path}: {self.reason}")


def _open(path: str | os.PathLike) -> sf.SoundFile:
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(path, "no such file")
    if path.stat().st_size == 0:
        raise AudioFileError(path, "empty file")
    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioFileError(path, f"not a readable audio file ({exc})") from None
    if handle.samplerate <= 0 or handle.channels <= 0:
        handle.close()
        raise AudioFileError(path, f"invalid header (rate {handle.samplerate}, channels {handle.channels})")
    return handle


def file_info(path: str | os.PathLike) -> tuple[int, int, int]:
    """(sample rate, channels, frames) without decoding the audio."""
    with _open(path) as handle:
        return handle.samplerate, handle.channels, handle.frames


READ_SECONDS = 2.0
"""Audio decoded per read: libsndfile's per-call cost (a position query and a seek on every read) made decoding
in 0.1 s reads four times dearer than in 2 s reads, which a replay then cuts into its blocks."""


def frames_per_read(block_frames: int, sample_rate: int) -> int:
    """The whole blocks that fit in ``READ_SECONDS`` (at least one), in integer frames: ``2.0 // 0.1`` is 19."""
    return block_frames * max(1, int(READ_SECONDS * sample_rate) // block_frames)


def _iter_file_reads(path: str | os.PathLike, block_seconds: float) -> Iterator[tuple[np.ndarray, int, int]]:
    """(frames, channels) float32 reads of whole ``block_seconds`` blocks, with the rate and the block size."""
    with _open(path) as handle:
        block_frames = max(1, int(round(block_seconds * handle.samplerate)))
        read_frames = frames_per_read(block_frames, handle.samplerate)
        try:
            for chunk in handle.blocks(blocksize=read_frames, dtype="float32", always_2d=True):
                yield chunk, handle.samplerate, block_frames
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioFileError(path, f"decoding failed mid-file ({exc})") from None


def _cut(samples: np.ndarray, size: int, stop: int | None = None) -> Iterator[np.ndarray]:
    """Consecutive ``size``-long slices of ``samples[:stop]`` (the last one shorter when ``stop`` is not a multiple)."""
    stop = len(samples) if stop is None else stop
    return (samples[start:min(start + size, stop)] for start in range(0, stop, size))


def iter_file_blocks(path: str | os.PathLike, block_seconds: float) -> Iterator[tuple[np.ndarray, int]]:
    """Native-rate float32 blocks (frames, channels) of ``block_seconds`` in constant memory, for multi-hour
    files; decoded ``READ_SECONDS`` at a time."""
    for chunk, rate, block_frames in _iter_file_reads(path, block_seconds):
        for block in _cut(chunk, block_frames):
            yield block, rate


def iter_conditioned_blocks(path: str | os.PathLike, cfg: PreprocessConfig,
                            block_seconds: float) -> Iterator[np.ndarray]:
    """16 kHz mono blocks of ``block_seconds`` (the last one shorter) of a file through the shared conditioning
    chain. Each read is conditioned whole and only then cut into blocks: the streaming chain gives the same samples
    however its input is cut (a test checks), and its per-call cost then counts once per read, not once per block.
    A decoding error mid-file still delivers every sample conditioned before it."""
    block_size = max(1, int(round(block_seconds * SAMPLE_RATE)))
    conditioner: Conditioner | None = None
    pending = np.zeros(0, np.float32)
    try:
        for chunk, rate, _ in _iter_file_reads(path, block_seconds):
            if conditioner is None:
                conditioner = Conditioner(rate, cfg)
            pending = np.concatenate([pending, conditioner.process(chunk)])
            whole = pending.size - pending.size % block_size
            yield from _cut(pending, block_size, whole)
            pending = pending[whole:]
    except AudioFileError:
        if pending.size:
            yield pending
        raise
    if conditioner is not None:
        pending = np.concatenate([pending, conditioner.flush()])
    yield from _cut(pending, block_size)


def load_clip(path: str | os.PathLike, cfg: PreprocessConfig, block_seconds: float = 10.0) -> np.ndarray:
    """A whole file as 16 kHz mono float32, through the same chain as live audio."""
    blocks = list(iter_conditioned_blocks(path, cfg, block_seconds))
    if not blocks:
        raise AudioFileError(path, "contains no audio samples")
    return np.concatenate(blocks)
