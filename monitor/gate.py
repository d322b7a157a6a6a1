"""Cheap gate in front of the models: skip windows that are plainly silence or steady room noise.

A window passes when webrtcvad hears voice in enough of its 30 ms frames, or when enough of
its frames stand out above the room's rolling noise floor. The floor is a low percentile of the
frame levels over a long horizon, so it follows a room that gets noisier but does not climb into
a cry that lasts several seconds. Until the floor is known everything above ``silence_dbfs``
passes: the gate must never lose a cry, skipping is only a CPU saving.

Per window only the frames of ``window.new_samples`` are analysed (level, peak, VAD); the frames
of the overlap come from a small cache, so the cost per hop is ~17 VAD calls, not ~33.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import webrtcvad

from .config import GateConfig
from .constants import EPSILON, SAMPLE_RATE, VAD_FRAME_SAMPLES, WINDOW_SAMPLES
from .windows import Window

log = logging.getLogger(__name__)

PCM16_FULL_SCALE = 32767
"""webrtcvad takes 16-bit PCM."""

FRAME_SECONDS = VAD_FRAME_SAMPLES / SAMPLE_RATE
FRAMES_PER_WINDOW = WINDOW_SAMPLES // VAD_FRAME_SAMPLES
FRAME_CACHE_SIZE = FRAMES_PER_WINDOW + 2
"""Frames a window can overlap (32 whole frames, plus one for a window that is not frame-aligned) and a spare."""

REASON_VOICE = "voice"
REASON_ENERGY = "energy"
REASON_WARMUP = "warmup"
REASON_HANGOVER = "hangover"
REASON_SILENCE = "silence"
REASON_BELOW_FLOOR = "below-floor"
PASS_REASONS = (REASON_VOICE, REASON_ENERGY, REASON_WARMUP, REASON_HANGOVER)


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    level_dbfs: float
    """RMS level of the window's whole 30 ms frames (the same scale as ``preprocess.rms_dbfs``)."""
    peak_dbfs: float
    noise_floor_dbfs: float
    """The room's floor estimate from the history so far (meaningful once ``floor_known``)."""
    voiced_fraction: float
    reason: str
    """Why: voice | energy | warmup | hangover (passed), silence | below-floor (skipped)."""
    floor_known: bool = True


def _frames(samples: np.ndarray, frame: int) -> np.ndarray:
    """Whole frames of ``samples`` as rows; a trailing partial frame is left out."""
    count = samples.size // frame
    return np.asarray(samples[:count * frame], dtype=np.float32).reshape(count, frame)


def power_to_dbfs(power: np.ndarray | float) -> np.ndarray:
    """Mean-square power -> dBFS; silence -> about -120 dBFS (EPSILON guards the log)."""
    return 10.0 * np.log10(np.asarray(power, dtype=np.float64) + EPSILON)


def _frame_powers(frames: np.ndarray) -> np.ndarray:
    return np.mean(np.square(frames, dtype=np.float64), axis=1)


def _frame_peaks_dbfs(frames: np.ndarray) -> np.ndarray:
    peaks = np.max(np.abs(frames), axis=1) if frames.size else np.zeros(0)
    return power_to_dbfs(np.square(peaks, dtype=np.float64))


def frame_levels_dbfs(samples: np.ndarray, frame: int = VAD_FRAME_SAMPLES) -> np.ndarray:
    """RMS level of each whole frame in dBFS."""
    return power_to_dbfs(_frame_powers(_frames(samples, frame)))


def frame_peaks_dbfs(samples: np.ndarray, frame: int = VAD_FRAME_SAMPLES) -> np.ndarray:
    """Sample peak of each whole frame in dBFS."""
    return _frame_peaks_dbfs(_frames(samples, frame))


def to_pcm16(frames: np.ndarray) -> np.ndarray:
    return (np.clip(frames, -1.0, 1.0) * PCM16_FULL_SCALE).astype("<i2")


class NoiseFloorTracker:
    """A low percentile of the recent frame levels, over a fixed-size ring (bounded memory)."""

    def __init__(self, horizon_frames: int, percentile: float, min_frames: int):
        if horizon_frames < 1 or not 0 <= percentile <= 100:
            raise ValueError(f"invalid noise floor horizon {horizon_frames} / percentile {percentile}")
        self.percentile = float(percentile)
        self.min_frames = max(1, min(int(min_frames), int(horizon_frames)))
        self._levels = np.zeros(int(horizon_frames), dtype=np.float64)
        self.reset()

    @classmethod
    def from_config(cls, cfg: GateConfig) -> NoiseFloorTracker:
        return cls(horizon_frames=max(1, int(round(cfg.noise_floor_seconds / FRAME_SECONDS))),
                   percentile=cfg.noise_floor_percentile,
                   min_frames=int(round(cfg.noise_floor_warmup_seconds / FRAME_SECONDS)))

    def reset(self) -> None:
        self._next = 0
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    @property
    def known(self) -> bool:
        return self._count >= self.min_frames

    def add(self, levels_dbfs: np.ndarray) -> None:
        levels = np.asarray(levels_dbfs, dtype=np.float64).ravel()
        capacity = self._levels.size
        if levels.size >= capacity:
            self._levels[:] = levels[-capacity:]
            self._next, self._count = 0, capacity
            return
        end = self._next + levels.size
        if end <= capacity:
            self._levels[self._next:end] = levels
        else:
            split = capacity - self._next
            self._levels[self._next:] = levels[:split]
            self._levels[:end - capacity] = levels[split:]
        self._next = end % capacity
        self._count = min(capacity, self._count + levels.size)

    def estimate(self, default: float) -> float:
        """The floor from the history so far; ``default`` when there is none."""
        if self._count == 0:
            return float(default)
        return float(np.percentile(self._levels[:self._count], self.percentile))


@dataclass
class _FrameCache:
    """Per-frame results on a grid anchored at ``origin`` (the first sample of a continuous stretch)."""

    origin: int
    power: np.ndarray
    peak_db: np.ndarray
    voiced: np.ndarray
    next_frame: int = 0
    """Index of the next frame to be analysed (all frames below it are cached, the last FRAME_CACHE_SIZE kept)."""

    @classmethod
    def empty(cls, origin: int) -> _FrameCache:
        return cls(origin=origin, power=np.zeros(FRAME_CACHE_SIZE), peak_db=np.zeros(FRAME_CACHE_SIZE),
                   voiced=np.zeros(FRAME_CACHE_SIZE, dtype=bool))

    def store(self, power: np.ndarray, peak_db: np.ndarray, voiced: np.ndarray) -> None:
        slots = (self.next_frame + np.arange(power.size)) % FRAME_CACHE_SIZE
        self.power[slots], self.peak_db[slots], self.voiced[slots] = power, peak_db, voiced
        self.next_frame += power.size

    def frames_within(self, start_sample: int, end_sample: int) -> np.ndarray:
        """Cache slots of the whole frames inside [start_sample, end_sample) that are still cached."""
        first = -(-(start_sample - self.origin) // VAD_FRAME_SAMPLES)
        last = (end_sample - self.origin) // VAD_FRAME_SAMPLES
        first = max(first, 0, self.next_frame - FRAME_CACHE_SIZE)
        last = min(last, self.next_frame)
        return np.arange(first, max(first, last)) % FRAME_CACHE_SIZE


class Gate:
    """Decides per window whether the models need to run. Stateful: feed windows in stream order."""

    def __init__(self, cfg: GateConfig):
        self.cfg = cfg
        self._vad = webrtcvad.Vad(cfg.vad_aggressiveness)
        self.floor = NoiseFloorTracker.from_config(cfg)
        self.reset()

    def reset(self) -> None:
        """Forget the room (noise floor), the frame cache and the hangover: a new stream starts."""
        self.floor.reset()
        self._cache: _FrameCache | None = None
        self._pending = np.zeros(0, dtype=np.float32)
        self._hangover_left = 0

    def assess(self, window: Window) -> GateDecision:
        self._analyse_new_samples(window)
        slots = self._cache.frames_within(window.start_sample, window.end_sample)
        power = self._cache.power[slots]
        level = float(power_to_dbfs(np.mean(power))) if power.size else float(power_to_dbfs(0.0))
        peak = float(np.max(self._cache.peak_db[slots])) if slots.size else float(power_to_dbfs(0.0))
        voiced_fraction = float(np.mean(self._cache.voiced[slots])) if slots.size else 0.0
        floor_db = self.floor.estimate(default=self.cfg.silence_dbfs)
        floor_known = self.floor.known
        reason = self._reason(power_to_dbfs(power), level, voiced_fraction, floor_db, floor_known)
        return GateDecision(passed=reason in PASS_REASONS, level_dbfs=level, peak_dbfs=peak,
                            noise_floor_dbfs=floor_db, voiced_fraction=voiced_fraction, reason=reason,
                            floor_known=floor_known)

    def _reason(self, frame_db: np.ndarray, level: float, voiced_fraction: float, floor_db: float,
                floor_known: bool) -> str:
        cfg = self.cfg
        threshold = max(floor_db + cfg.energy_margin_db, cfg.silence_dbfs) if floor_known else cfg.silence_dbfs
        loud_fraction = float(np.mean(frame_db >= threshold)) if frame_db.size else 0.0
        if level >= cfg.silence_dbfs and voiced_fraction >= cfg.vad_min_fraction and voiced_fraction > 0:
            reason = REASON_VOICE
        elif loud_fraction >= cfg.energy_min_fraction and loud_fraction > 0:
            reason = REASON_ENERGY if floor_known else REASON_WARMUP
        elif self._hangover_left > 0:
            self._hangover_left -= 1
            return REASON_HANGOVER
        else:
            return REASON_SILENCE if level < cfg.silence_dbfs else REASON_BELOW_FLOOR
        self._hangover_left = cfg.hangover_windows
        return reason

    def _analyse_new_samples(self, window: Window) -> None:
        """Analyse the whole frames completed by ``window.new_samples``; feed their levels to the floor."""
        new = np.asarray(window.new_samples, dtype=np.float32)
        new_start = window.end_sample - new.size
        if self._cache is None or new_start != self._stream_position():
            if self._cache is not None:
                log.debug("gate: audio discontinuity at sample %s (expected %s); frame cache restarted",
                          new_start, self._stream_position())
            self._cache = _FrameCache.empty(origin=new_start)
            self._pending = np.zeros(0, dtype=np.float32)
        audio = np.concatenate([self._pending, new]) if self._pending.size else new
        frames = _frames(audio, VAD_FRAME_SAMPLES)
        self._pending = audio[frames.size:].copy()
        if not len(frames):
            return
        power = _frame_powers(frames)
        peak_db = _frame_peaks_dbfs(frames)
        voiced = np.array([self._vad.is_speech(row.tobytes(), SAMPLE_RATE) for row in to_pcm16(frames)], dtype=bool)
        self._cache.store(power, peak_db, voiced)
        self.floor.add(power_to_dbfs(power))

    def _stream_position(self) -> int:
        """Absolute sample index just after the last sample analysed (incl. the pending partial frame)."""
        return self._cache.origin + self._cache.next_frame * VAD_FRAME_SAMPLES + self._pending.size
