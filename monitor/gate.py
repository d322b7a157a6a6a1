"""Cheap gate in front of the models: skip windows that are plainly silence or steady room noise.

A window passes when enough of its 30 ms frames are voiced (webrtcvad) and stand a little out of
the room's noise floor, or when enough frames stand clearly out of it. The floor is a low
percentile of the frame levels over a long horizon: it follows a room that gets noisier, drops
quickly with a room that gets quieter, and does not climb into a cry of several seconds. Until
the floor is known everything above ``silence_dbfs`` passes: the gate must never lose a cry,
skipping is only a CPU saving.

The gate listens through a high-pass (``highpass_hz``): loud low rumble (wind, traffic, handling
noise) would otherwise lift the floor over a cry, and webrtcvad calls such rumble voice.

Per window only ``window.new_samples`` are filtered and analysed (levels, peak, VAD); the frames
of the overlap come from a small cache, so a 0.5 s hop costs ~17 VAD calls, not ~33.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import numpy as np
import webrtcvad

from .config import GateConfig
from .constants import SAMPLE_RATE, VAD_FRAME_SAMPLES, WINDOW_SAMPLES
from .signal_helpers import power_to_dbfs, split_frames, voiced_frames
from .windows import Window

log = logging.getLogger(__name__)

HIGHPASS_TAPS = 511
"""Blackman windowed-sinc FIR: at 150 Hz, -48 dB at 80 Hz, -0.3 dB at 200 Hz; 16 ms group delay."""

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
    """The room's floor (high-passed frame level); ``silence_dbfs`` while it is not known yet."""
    voiced_fraction: float
    """Fraction of the window's frames webrtcvad calls voice (before the floor check)."""
    reason: str
    """voice | energy | warmup | hangover (passed), silence | below-floor (skipped)."""
    band_level_dbfs: float
    """The high-passed level the decisions use."""
    floor_known: bool


# --- pure signal helpers ---------------------------------------------------------------------

def frame_powers(frames: np.ndarray) -> np.ndarray:
    """Mean square per frame: the sum and division ``np.mean`` does, to the bit, without its per-call overhead."""
    return np.square(frames, dtype=np.float64).sum(axis=1) / max(1, frames.shape[1])


def frame_peaks_dbfs(frames: np.ndarray) -> np.ndarray:
    peaks = np.max(np.abs(frames), axis=1) if frames.size else np.zeros(0)
    return power_to_dbfs(np.square(peaks, dtype=np.float64))


def frame_levels_dbfs(samples: np.ndarray, frame: int = VAD_FRAME_SAMPLES) -> np.ndarray:
    """RMS level of each whole frame of ``samples`` in dBFS."""
    return power_to_dbfs(frame_powers(split_frames(samples, frame)))


def highpass_kernel(cutoff_hz: float, taps: int = HIGHPASS_TAPS) -> np.ndarray:
    """Linear-phase FIR high-pass: a unit impulse minus a Blackman windowed-sinc low-pass."""
    if taps % 2 == 0 or not 0 < cutoff_hz < SAMPLE_RATE / 2:
        raise ValueError(f"high-pass needs an odd tap count and 0 < cutoff < {SAMPLE_RATE // 2} Hz, "
                         f"got {taps} taps at {cutoff_hz} Hz")
    offsets = np.arange(taps) - (taps - 1) / 2
    lowpass = np.sinc(2 * cutoff_hz / SAMPLE_RATE * offsets) * np.blackman(taps)
    kernel = -lowpass / lowpass.sum()
    kernel[(taps - 1) // 2] += 1.0
    return kernel


@functools.lru_cache(maxsize=64)
def fast_fft_length(minimum: int) -> int:
    """The smallest length >= ``minimum`` with no prime factor above 5, which pocketfft transforms about as fast
    as a power of two: a hop of 8,000 samples plus the filter's history needs 8,640, not 16,384."""
    best = 1 << max(0, int(minimum - 1).bit_length())
    fives = 1
    while fives < best:
        threes = fives
        while threes < best:
            twos = threes
            while twos < minimum:
                twos *= 2
            best = min(best, twos)
            threes *= 3
        fives *= 5
    return best


class HighPassFilter:
    """Streaming FIR (overlap-save through the FFT); the last taps-1 input samples are carried over."""

    MAX_CACHED_SPECTRA = 8

    def __init__(self, cutoff_hz: float, taps: int = HIGHPASS_TAPS):
        self._kernel = highpass_kernel(cutoff_hz, taps) if cutoff_hz > 0 else None
        self._spectra: dict[int, np.ndarray] = {}
        self.reset()

    def reset(self) -> None:
        size = 0 if self._kernel is None else self._kernel.size - 1
        self._history = np.zeros(size, dtype=np.float64)

    def process(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.float32)
        if self._kernel is None or not samples.size:
            return samples.copy()
        buffer = np.concatenate([self._history, samples])
        size = fast_fft_length(buffer.size)
        filtered = np.fft.irfft(np.fft.rfft(buffer, size) * self._spectrum(size), size)
        self._history = buffer[buffer.size - self._history.size:]
        return filtered[self._history.size:buffer.size].astype(np.float32)

    def _spectrum(self, size: int) -> np.ndarray:
        if size not in self._spectra:
            if len(self._spectra) >= self.MAX_CACHED_SPECTRA:
                self._spectra.clear()
            self._spectra[size] = np.fft.rfft(self._kernel, size)
        return self._spectra[size]


class NoiseFloorTracker:
    """A low percentile of the recent frame levels, over a fixed-size ring (bounded memory).

    Until ``min_frames`` were heard, the percentile is taken as if they had been, the missing ones
    counting as quieter than anything: the floor stays unknown (permissive) until (100 - percentile)%
    of ``min_frames`` were heard, then starts at the quietest frame and rises to the percentile.
    """

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

    def add(self, levels_dbfs: np.ndarray) -> None:
        levels = np.asarray(levels_dbfs, dtype=np.float64).ravel()[-self.capacity:]
        slots = (self._next + np.arange(levels.size)) % self.capacity
        self._levels[slots] = levels
        self._next = (self._next + levels.size) % self.capacity
        self._count = min(self.capacity, self._count + levels.size)

    def _rank(self) -> int:
        assumed = max(self._count, self.min_frames)
        return int(self.percentile / 100 * (assumed - 1)) - (assumed - self._count)

    @property
    def known(self) -> bool:
        return self._count > 0 and self._rank() >= 0

    def floor_dbfs(self) -> float | None:
        """The floor, or None while it is not known."""
        if not self.known:
            return None
        rank = self._rank()
        return float(np.partition(self._levels[:self._count], rank)[rank])


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


def _mean_level_dbfs(powers: np.ndarray) -> float:
    return float(power_to_dbfs(np.mean(powers) if powers.size else 0.0))


class Gate:
    """Decides per window whether the models need to run. Stateful: feed windows in stream order."""

    def __init__(self, cfg: GateConfig):
        self.cfg = cfg
        self._vad = webrtcvad.Vad(cfg.vad_aggressiveness)
        self._highpass = HighPassFilter(cfg.highpass_hz)
        self.floor = NoiseFloorTracker.from_config(cfg)
        self.reset()

    def reset(self) -> None:
        """Forget the room (noise floor), the frame cache and the hangover: a new stream starts."""
        self.floor.reset()
        self._restart_frames(origin=0)
        self._started = False
        self._hangover_left = 0

    def assess(self, window: Window) -> GateDecision:
        cache = self._analyse_new_samples(window)
        slots = cache.slots_within(window.start_sample, window.end_sample)
        band_db = cache.band_db[slots]
        voiced = cache.voiced[slots]
        floor_db = self.floor.floor_dbfs()
        reason = self._decide(band_db, voiced, floor_db)
        return GateDecision(
            passed=reason in PASS_REASONS,
            level_dbfs=_mean_level_dbfs(cache.power[slots]),
            peak_dbfs=float(np.max(cache.peak_db[slots])) if slots.size else float(power_to_dbfs(0.0)),
            noise_floor_dbfs=self.cfg.silence_dbfs if floor_db is None else floor_db,
            voiced_fraction=float(np.mean(voiced)) if slots.size else 0.0,
            reason=reason,
            band_level_dbfs=_mean_level_dbfs(np.power(10.0, band_db / 10.0)),
            floor_known=floor_db is not None,
        )

    def _decide(self, band_db: np.ndarray, voiced: np.ndarray, floor_db: float | None) -> str:
        """Frame tests -> reason; while the floor is unknown every audible frame counts as loud."""
        cfg = self.cfg
        audible = band_db >= cfg.silence_dbfs
        if floor_db is None:
            loud, voice = audible, audible & voiced
        else:
            loud = audible & (band_db >= floor_db + cfg.energy_margin_db)
            voice = audible & voiced & (band_db >= floor_db + cfg.vad_margin_db)
        if voice.any() and voice.mean() >= cfg.vad_min_fraction:
            reason = REASON_VOICE
        elif loud.any() and loud.mean() >= cfg.energy_min_fraction:
            reason = REASON_WARMUP if floor_db is None else REASON_ENERGY
        elif self._hangover_left > 0:
            self._hangover_left -= 1
            return REASON_HANGOVER
        else:
            return REASON_BELOW_FLOOR if audible.any() else REASON_SILENCE
        self._hangover_left = cfg.hangover_windows
        return reason

    def _restart_frames(self, origin: int) -> None:
        self._cache = _FrameCache(origin=origin)
        self._pending = np.zeros(0, dtype=np.float32)
        self._pending_filtered = np.zeros(0, dtype=np.float32)
        self._highpass.reset()

    def _analyse_new_samples(self, window: Window) -> _FrameCache:
        """Filter and analyse the whole frames completed by ``window.new_samples``; feed the floor."""
        new = np.asarray(window.new_samples, dtype=np.float32)
        new_start = window.end_sample - new.size
        if not self._started or new_start != self._stream_position():
            if self._started:
                log.debug("gate: audio discontinuity at sample %s (expected %s); frame analysis restarted",
                          new_start, self._stream_position())
            self._restart_frames(origin=new_start)
            self._started = True
        audio = np.concatenate([self._pending, new])
        filtered = np.concatenate([self._pending_filtered, self._highpass.process(new)])
        frames, filtered_frames = split_frames(audio), split_frames(filtered)
        self._pending, self._pending_filtered = audio[frames.size:].copy(), filtered[frames.size:].copy()
        if len(frames):
            band_db = power_to_dbfs(frame_powers(filtered_frames))
            voiced = voiced_frames(self._vad, filtered_frames)
            self._cache.store(frame_powers(frames), band_db, frame_peaks_dbfs(frames), voiced)
            self.floor.add(band_db)
        return self._cache

    def _stream_position(self) -> int:
        """Absolute sample index just after the last sample seen (including the pending partial frame)."""
        return self._cache.origin + self._cache.next_frame * VAD_FRAME_SAMPLES + self._pending.size
