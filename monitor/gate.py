"""Cheap gate in front of the models: skip windows that are plainly silence or steady room noise.

A window passes when enough of its 30 ms frames are voiced (webrtcvad) and stand a little out of
the room's noise floor, or when enough frames stand clearly out of it. The floor is a low
percentile of the frame levels over a long horizon, so it follows a room that gets noisier but
does not climb into a cry that lasts several seconds. Until the floor is known everything above
``silence_dbfs`` passes: the gate must never lose a cry, skipping is only a CPU saving.

Levels for the decisions are measured above ``band_low_hz``: loud low rumble (wind, traffic,
handling noise) would otherwise raise the floor over a cry, and webrtcvad calls such rumble voice.

Per window only the frames of ``window.new_samples`` are analysed (level, peak, VAD); the frames
of the overlap come from a small cache, so a 0.5 s hop costs ~17 VAD calls, not ~33.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

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
"""Frames a window can overlap (32 whole frames, one more when it is not frame-aligned) and a spare."""

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
    """Full-band RMS level of the window's whole 30 ms frames (the scale of ``preprocess.rms_dbfs``)."""
    peak_dbfs: float
    noise_floor_dbfs: float
    """The room's floor (band level) from the history so far; ``silence_dbfs`` before any history."""
    voiced_fraction: float
    """Fraction of the window's frames webrtcvad calls voice (before the floor check)."""
    reason: str
    """voice | energy | warmup | hangover (passed), silence | below-floor (skipped)."""
    band_level_dbfs: float = 0.0
    """The level above ``band_low_hz`` that the decisions use."""
    floor_known: bool = True


# --- pure per-frame measurements -------------------------------------------------------------

def power_to_dbfs(power: np.ndarray | float) -> np.ndarray:
    """Mean-square power -> dBFS; silence -> about -120 dBFS (EPSILON guards the log)."""
    return 10.0 * np.log10(np.asarray(power, dtype=np.float64) + EPSILON)


def split_frames(samples: np.ndarray, frame: int = VAD_FRAME_SAMPLES) -> np.ndarray:
    """Whole frames of ``samples`` as rows; a trailing partial frame is left out."""
    count = samples.size // frame
    return np.asarray(samples[:count * frame], dtype=np.float32).reshape(count, frame)


def frame_powers(frames: np.ndarray) -> np.ndarray:
    return np.mean(np.square(frames, dtype=np.float64), axis=1)


def frame_band_powers(frames: np.ndarray, low_hz: float) -> np.ndarray:
    """Mean-square power of each frame above ``low_hz`` (Hann-windowed spectrum, power-corrected)."""
    if low_hz <= 0 or not frames.size:
        return frame_powers(frames)
    size = frames.shape[1]
    taper = np.hanning(size)
    taper /= np.sqrt(np.mean(np.square(taper)))
    spectrum = np.square(np.abs(np.fft.rfft(frames * taper, axis=1)))
    one_sided = np.full(spectrum.shape[1], 2.0)
    one_sided[0] = 1.0
    if size % 2 == 0:
        one_sided[-1] = 1.0
    in_band = np.fft.rfftfreq(size, 1.0 / SAMPLE_RATE) >= low_hz
    return (spectrum[:, in_band] @ one_sided[in_band]) / (size * size)


def frame_peaks_dbfs(frames: np.ndarray) -> np.ndarray:
    peaks = np.max(np.abs(frames), axis=1) if frames.size else np.zeros(0)
    return power_to_dbfs(np.square(peaks, dtype=np.float64))


def frame_levels_dbfs(samples: np.ndarray, frame: int = VAD_FRAME_SAMPLES, low_hz: float = 0.0) -> np.ndarray:
    """RMS level of each whole frame of ``samples`` in dBFS (above ``low_hz`` when it is set)."""
    return power_to_dbfs(frame_band_powers(split_frames(samples, frame), low_hz))


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
        return cls(horizon_frames=max(1, round(cfg.noise_floor_seconds / FRAME_SECONDS)),
                   percentile=cfg.noise_floor_percentile,
                   min_frames=round(cfg.noise_floor_warmup_seconds / FRAME_SECONDS))

    def reset(self) -> None:
        self._next = 0
        self._count = 0

    @property
    def capacity(self) -> int:
        return self._levels.size

    @property
    def count(self) -> int:
        return self._count

    @property
    def known(self) -> bool:
        return self._count >= self.min_frames

    def add(self, levels_dbfs: np.ndarray) -> None:
        levels = np.asarray(levels_dbfs, dtype=np.float64).ravel()[-self.capacity:]
        slots = (self._next + np.arange(levels.size)) % self.capacity
        self._levels[slots] = levels
        self._next = (self._next + levels.size) % self.capacity
        self._count = min(self.capacity, self._count + levels.size)

    def estimate(self, default: float) -> float:
        """The floor from the history so far; ``default`` when there is none."""
        if self._count == 0:
            return float(default)
        return float(np.percentile(self._levels[:self._count], self.percentile))


# --- the gate --------------------------------------------------------------------------------

def _ring(dtype: type = np.float64) -> np.ndarray:
    return np.zeros(FRAME_CACHE_SIZE, dtype=dtype)


@dataclass
class _FrameCache:
    """Per-frame results on a grid anchored at ``origin`` (the first sample of a continuous stretch)."""

    origin: int
    power: np.ndarray = field(default_factory=_ring)
    band_db: np.ndarray = field(default_factory=_ring)
    peak_db: np.ndarray = field(default_factory=_ring)
    voiced: np.ndarray = field(default_factory=lambda: _ring(bool))
    next_frame: int = 0
    """Frames below this index have been analysed; the last FRAME_CACHE_SIZE of them are kept."""

    def store(self, power: np.ndarray, band_db: np.ndarray, peak_db: np.ndarray, voiced: np.ndarray) -> None:
        slots = (self.next_frame + np.arange(power.size)) % FRAME_CACHE_SIZE
        self.power[slots], self.band_db[slots], self.peak_db[slots], self.voiced[slots] = (
            power, band_db, peak_db, voiced)
        self.next_frame += power.size

    def slots_within(self, start_sample: int, end_sample: int) -> np.ndarray:
        """Cache slots of the whole frames inside [start_sample, end_sample) that are still cached."""
        first = -(-(start_sample - self.origin) // VAD_FRAME_SAMPLES)
        last = (end_sample - self.origin) // VAD_FRAME_SAMPLES
        first = max(first, 0, self.next_frame - FRAME_CACHE_SIZE)
        last = min(last, self.next_frame)
        return np.arange(first, max(first, last)) % FRAME_CACHE_SIZE


@dataclass(frozen=True)
class _WindowFrames:
    """The cached per-frame results of one window."""

    power: np.ndarray
    band_db: np.ndarray
    peak_db: np.ndarray
    voiced: np.ndarray

    def level_dbfs(self, values: np.ndarray) -> float:
        return float(power_to_dbfs(np.mean(values))) if values.size else float(power_to_dbfs(0.0))


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
        cache = self._analyse_new_samples(window)
        slots = cache.slots_within(window.start_sample, window.end_sample)
        frames = _WindowFrames(cache.power[slots], cache.band_db[slots], cache.peak_db[slots], cache.voiced[slots])
        floor_db = self.floor.estimate(default=self.cfg.silence_dbfs)
        reason = self._decide(frames, floor_db, self.floor.known)
        return GateDecision(
            passed=reason in PASS_REASONS,
            level_dbfs=frames.level_dbfs(frames.power),
            peak_dbfs=float(np.max(frames.peak_db)) if slots.size else float(power_to_dbfs(0.0)),
            noise_floor_dbfs=floor_db,
            voiced_fraction=float(np.mean(frames.voiced)) if slots.size else 0.0,
            reason=reason,
            band_level_dbfs=frames.level_dbfs(np.power(10.0, frames.band_db / 10.0)),
            floor_known=self.floor.known,
        )

    def _decide(self, frames: _WindowFrames, floor_db: float, floor_known: bool) -> str:
        cfg = self.cfg
        if not frames.band_db.size:
            return self._hangover_or(REASON_SILENCE)
        audible = frames.band_db >= cfg.silence_dbfs
        if floor_known:
            loud = audible & (frames.band_db >= floor_db + cfg.energy_margin_db)
            voiced = audible & frames.voiced & (frames.band_db >= floor_db + cfg.vad_margin_db)
        else:
            loud = audible
            voiced = audible & frames.voiced
        if np.any(voiced) and np.mean(voiced) >= cfg.vad_min_fraction:
            reason = REASON_VOICE
        elif np.any(loud) and np.mean(loud) >= cfg.energy_min_fraction:
            reason = REASON_ENERGY if floor_known else REASON_WARMUP
        else:
            return self._hangover_or(REASON_BELOW_FLOOR if np.any(audible) else REASON_SILENCE)
        self._hangover_left = cfg.hangover_windows
        return reason

    def _hangover_or(self, skip_reason: str) -> str:
        if self._hangover_left > 0:
            self._hangover_left -= 1
            return REASON_HANGOVER
        return skip_reason

    def _analyse_new_samples(self, window: Window) -> _FrameCache:
        """Analyse the whole frames completed by ``window.new_samples``; feed their levels to the floor."""
        new = np.asarray(window.new_samples, dtype=np.float32)
        new_start = window.end_sample - new.size
        if self._cache is None or new_start != self._stream_position(self._cache):
            if self._cache is not None:
                log.debug("gate: audio discontinuity at sample %s (expected %s); frame cache restarted",
                          new_start, self._stream_position(self._cache))
            self._cache = _FrameCache(origin=new_start)
            self._pending = np.zeros(0, dtype=np.float32)
        audio = np.concatenate([self._pending, new]) if self._pending.size else new
        frames = split_frames(audio)
        self._pending = audio[frames.size:].copy()
        if len(frames):
            band_db = power_to_dbfs(frame_band_powers(frames, self.cfg.band_low_hz))
            voiced = np.array([self._vad.is_speech(row.tobytes(), SAMPLE_RATE) for row in to_pcm16(frames)])
            self._cache.store(frame_powers(frames), band_db, frame_peaks_dbfs(frames), voiced.astype(bool))
            self.floor.add(band_db)
        return self._cache

    def _stream_position(self, cache: _FrameCache) -> int:
        """Absolute sample index just after the last sample seen (including the pending partial frame)."""
        return cache.origin + cache.next_frame * VAD_FRAME_SAMPLES + self._pending.size
