"""A long household stream with cries and screams inserted at known times and signal-to-noise ratios.

Pure numpy given decoded clips and a seed. ``plan_stream`` lays out where every clip goes and at what gain
(the truth follows from the plan); ``render`` turns any sample range of the plan into audio. So a
multi-hour stream is written chunk by chunk in constant memory, and tests can render the parts (the
inserted clip, the background under it) separately to check the SNR and the onsets.

Layout: room tone everywhere; Normal clips at random levels with random gaps ("quiet stretches");
between two stretches one inserted cry or scream. A clip inserted at a finite SNR lies on a *bed*: a
Normal clip spanning a little before and after it, whose power over the clip's energetic span is the
SNR reference. A "clean" clip lies over the room tone only. Stretches are longer than any event merge
span (hold + cooldown, the baseline's 30 s), so one insertion can only ever raise its own event.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from monitor.constants import ALERT_LABELS, SAMPLE_RATE
from monitor.gate import frame_levels_dbfs
from monitor.signal_helpers import power_to_dbfs

from .score import TruthEvent

ROLE_BACKGROUND, ROLE_BED, ROLE_ALERT = "background", "bed", "alert"
ALL_ROLES = (ROLE_BACKGROUND, ROLE_BED, ROLE_ALERT)
NORMAL_LABEL = "Normal"

ACTIVITY_FRAME_SAMPLES = SAMPLE_RATE // 100
"""10 ms frames for the energy criterion: onsets are placed to within 10 ms."""
ACTIVITY_RANGE_DB = 20.0
"""A frame is energetic when it is within this many dB of the clip's loudest frame ..."""
ACTIVITY_FLOOR_DBFS = -70.0
"""... and above this absolute level (a clip with no such frame is unusable)."""
FADE_SAMPLES = SAMPLE_RATE // 100
"""10 ms raised-cosine fades on every placed clip, so cut clips do not click (a click is an energy onset)."""
PEAK_LIMIT = 0.9
"""Placed clips (and an alert + its bed together) are scaled down to keep their peaks below this."""
MAX_GAIN_DB = 40.0
"""Never amplify a clip more than this (a near-silent clip would only become loud quantisation noise)."""
BED_ATTEMPTS = 8
"""Bed clips tried before giving up on one that has sound under the inserted clip."""
ROOM_TONE_PERIOD_SAMPLES = 7 * SAMPLE_RATE + 331
"""Room tone repeats with this period (a circular FFT noise: no seam), not a multiple of any window hop."""
MIN_BACKGROUND_PIECE_SAMPLES = SAMPLE_RATE // 2
"""A background clip cut to fit a stretch is left out when less than 0.5 s of it would remain."""
WRITE_CHUNK_SECONDS = 60.0


@dataclass(frozen=True)
class StreamSpec:
    """How the stream is laid out; all ranges are (low, high) drawn uniformly."""

    hours: float = 2.0
    seed: int = 0
    snrs_db: tuple[float | None, ...] = (None, 10.0, 0.0)
    """SNR conditions, cycled per label; None = clean (over the room tone only)."""
    label_weights: dict[str, float] = field(default_factory=lambda: {"Crying": 0.6, "Screaming": 0.4})
    """Crying is the common case and has the stricter bar (0.98: ~50 insertions at >= 10 dB resolve it in 2 h).
    Empty: a negative-only stream (household sound and nothing to alert on), for false alarms per hour."""
    lead_in_s: float = 15.0
    """Background before the first insertion (the gate learns the room)."""
    quiet_s: tuple[float, float] = (35.0, 60.0)
    """Background between the end of one insertion (with its bed) and the start of the next; longer than any
    event merge span (hold + cooldown, the baseline's 30 s), so each insertion can raise its own event."""
    gap_s: tuple[float, float] = (0.5, 12.0)
    """Room tone between two background clips."""
    background_dbfs: tuple[float, float] = (-45.0, -20.0)
    """Active level of background clips (speech, laughter, noise, silence)."""
    clean_alert_dbfs: tuple[float, float] = (-35.0, -15.0)
    """Active level of a clean inserted clip."""
    bed_dbfs: tuple[float, float] = (-35.0, -22.0)
    """Level of the bed over the inserted clip's energetic span; the clip sits at this + SNR."""
    bed_margin_s: tuple[float, float] = (1.0, 4.0)
    """The bed starts this long before the inserted clip and ends this long after it."""
    max_alert_s: float = 15.0
    """Inserted clips are cut this long after their onset."""
    room_tone_dbfs: float = -60.0
    overlap_probability: float = 0.0
    """Chance that a second background clip starts while one is sounding (TV over the dishwasher)."""
    episode_s: float = 0.0
    """0: each insertion is one clip. Else an insertion is an episode: clips of one recording (``SourceClip.group``,
    repeated when it has too few) one after another, ``episode_pause_s`` apart, until it lasts this long, the way a
    baby cries for a minute rather than for one clip; the truth spans the episode, so its first alert of the label
    is the hit and later ones are duplicates."""
    episode_pause_s: tuple[float, float] = (0.3, 2.0)
    """Pause between the clips of an episode (a breath, a sob)."""

    @property
    def negative_only(self) -> bool:
        return not self.label_weights

    def validate(self) -> None:
        if self.hours <= 0:
            raise ValueError(f"stream length must be positive, got {self.hours} h")
        if self.episode_s < 0:
            raise ValueError(f"stream spec episode_s must not be negative, got {self.episode_s}")
        for name in ("quiet_s", "gap_s", "background_dbfs", "clean_alert_dbfs", "bed_dbfs", "bed_margin_s",
                     "episode_pause_s"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"stream spec {name}: low {low} > high {high}")
        if not self.snrs_db:
            raise ValueError("stream spec snrs_db: at least one SNR condition is needed")
        if any(w < 0 for w in self.label_weights.values()) or (self.label_weights
                                                                and not any(self.label_weights.values())):
            raise ValueError(f"stream spec label_weights must be non-negative and not all zero (empty for a "
                             f"negative-only stream): {self.label_weights}")
        if not 0.0 <= self.overlap_probability <= 1.0:
            raise ValueError(f"stream spec overlap_probability must lie in [0, 1], got {self.overlap_probability}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Activity:
    """The energetic part of a clip (10 ms frames within ACTIVITY_RANGE_DB of the loudest one)."""

    start: int
    """First sample of the first energetic frame."""
    end: int
    """One past the last sample of the last energetic frame."""
    level_dbfs: float
    """Mean power over the energetic frames only (an active level: pauses do not dilute it)."""


@dataclass(frozen=True)
class SourceClip:
    name: str
    label: str
    samples: np.ndarray
    activity: Activity
    source: str = ""
    """The collection it comes from (manifest ``source``): false alarms are traced back to it."""
    group: str = ""
    """The recording (manifest ``group``): an episode (``StreamSpec.episode_s``) is made of one recording's clips."""

    @property
    def peak(self) -> float:
        return _peak(self.samples)


@dataclass(frozen=True)
class Placement:
    """Samples ``[offset, offset + length)`` of clip ``clip``, times ``gain``, land at stream sample ``start``."""

    role: str
    clip: int
    start: int
    offset: int
    length: int
    gain: float

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True)
class SoundingSpan:
    """A Normal clip sounding in the stream (background or bed), for tracing false alarms to what caused them."""

    start_s: float
    end_s: float
    clip: str
    source: str

    def to_dict(self) -> dict:
        return {"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3), "clip": self.clip,
                "source": self.source}


@dataclass
class StreamPlan:
    spec: StreamSpec
    sample_count: int
    placements: list[Placement]
    truth: list[TruthEvent]
    clip_names: list[str]
    clip_sources: list[str]

    @property
    def seconds(self) -> float:
        return self.sample_count / SAMPLE_RATE

    def summary(self) -> dict:
        counts: dict[str, dict[str, int]] = {}
        for truth in self.truth:
            per_snr = counts.setdefault(truth.label, {})
            per_snr[truth.snr_key] = per_snr.get(truth.snr_key, 0) + 1
        used = {self.clip_names[p.clip] for p in self.placements}
        background = [p.clip for p in self.placements if p.role != ROLE_ALERT]
        reuse = len(background) / len(set(background)) if background else 0.0
        return {"seconds": self.seconds, "hours": round(self.seconds / 3600, 4), "insertions": len(self.truth),
                "insertions_by_label_snr": counts, "placements": len(self.placements), "distinct_clips": len(used),
                "background_reuse": round(reuse, 1)}

    def background(self) -> list[SoundingSpan]:
        return [SoundingSpan(_seconds(p.start), _seconds(p.end), self.clip_names[p.clip], self.clip_sources[p.clip])
                for p in self.placements if p.role != ROLE_ALERT]

    def to_dict(self) -> dict:
        return {"spec": self.spec.to_dict(), "sample_rate": SAMPLE_RATE, "sample_count": self.sample_count,
                "summary": self.summary(), "truth": [t.to_dict() for t in self.truth],
                "background": [span.to_dict() for span in self.background()]}


# --- clips -----------------------------------------------------------------------------------------

def _peak(samples: np.ndarray) -> float:
    return float(np.max(np.abs(samples))) if samples.size else 0.0


def measure_activity(samples: np.ndarray) -> Activity | None:
    """Energetic span and active level of a clip; None when no frame rises above ACTIVITY_FLOOR_DBFS."""
    levels = frame_levels_dbfs(samples, ACTIVITY_FRAME_SAMPLES)
    if levels.size == 0:
        return None
    threshold = max(float(levels.max()) - ACTIVITY_RANGE_DB, ACTIVITY_FLOOR_DBFS)
    active = np.flatnonzero(levels >= threshold)
    if active.size == 0:
        return None
    power = np.mean(np.power(10.0, levels[active] / 10.0))
    return Activity(start=int(active[0]) * ACTIVITY_FRAME_SAMPLES, end=int(active[-1] + 1) * ACTIVITY_FRAME_SAMPLES,
                    level_dbfs=float(power_to_dbfs(power)))


def make_source_clip(name: str, label: str, samples: np.ndarray, source: str = "",
                     group: str = "") -> SourceClip | None:
    """A decoded 16 kHz clip ready for placing; None when it holds no usable sound."""
    samples = np.asarray(samples, dtype=np.float32)
    activity = measure_activity(samples)
    return None if activity is None else SourceClip(name, label, samples, activity, source, group)


# --- planning --------------------------------------------------------------------------------------

class _Cycler:
    """Draws items in shuffled rounds, so every clip / SNR is used about equally often."""

    def __init__(self, items: Sequence, rng: np.random.Generator):
        self.items = list(items)
        self.rng = rng
        self._queue: list[int] = []

    def next(self):
        if not self._queue:
            self._queue = [int(i) for i in self.rng.permutation(len(self.items))]
        return self.items[self._queue.pop()]


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _seconds(samples: int) -> float:
    return samples / SAMPLE_RATE


def _samples(seconds: float) -> int:
    return int(round(seconds * SAMPLE_RATE))


def _gain_for(level_dbfs: float, current_dbfs: float) -> float:
    return float(10 ** (min(level_dbfs - current_dbfs, MAX_GAIN_DB) / 20))


def _peak_limited(gain: float, peak: float) -> float:
    return min(gain, PEAK_LIMIT / peak) if peak > 0 else gain


class _Planner:
    def __init__(self, clips: Sequence[SourceClip], spec: StreamSpec):
        spec.validate()
        self.clips = list(clips)
        self.spec = spec
        self.rng = np.random.default_rng(spec.seed)
        self.sample_count = _samples(spec.hours * 3600)
        self.placements: list[Placement] = []
        self.truth: list[TruthEvent] = []
        self.background = [i for i, c in enumerate(self.clips) if c.label == NORMAL_LABEL]
        if not self.background:
            raise ValueError("no usable Normal clips for the background")
        by_label = {label: [i for i, c in enumerate(self.clips) if c.label == label] for label in ALERT_LABELS}
        self.labels = [label for label in ALERT_LABELS if by_label[label] and spec.label_weights.get(label, 0) > 0]
        if not self.labels and not spec.negative_only:
            raise ValueError("no usable Crying or Screaming clips to insert")
        weights = np.array([spec.label_weights[label] for label in self.labels], dtype=np.float64)
        self.label_p = weights / weights.sum() if weights.size else weights
        self.alert_clips = {label: _Cycler(by_label[label], self.rng) for label in self.labels}
        self.snrs = {label: _Cycler(list(spec.snrs_db), self.rng) for label in self.labels}

    def plan(self) -> StreamPlan:
        quiet_start, quiet_end = 0, _samples(self.spec.lead_in_s)
        tail = _samples(self.spec.quiet_s[0])
        while self.labels:
            self._fill_background(quiet_start, quiet_end)
            event_end = self._insert(quiet_end, limit=self.sample_count - tail)
            if event_end is None:
                break
            quiet_start, quiet_end = event_end, event_end + _samples(_uniform(self.rng, self.spec.quiet_s))
        self._fill_background(quiet_end, self.sample_count)
        self.placements.sort(key=lambda p: (p.start, p.role))
        return StreamPlan(self.spec, self.sample_count, self.placements, self.truth, [c.name for c in self.clips],
                          [c.source for c in self.clips])

    def _fill_background(self, start: int, end: int) -> None:
        """Normal clips separated by room-tone gaps over ``[start, end)``, the last clip cut to fit; at least
        the shortest gap of room tone is left at the end, so the next insertion never follows a clip directly."""
        end = min(end, self.sample_count) - _samples(self.spec.gap_s[0])
        cursor = start + _samples(_uniform(self.rng, self.spec.gap_s))
        while end - cursor >= MIN_BACKGROUND_PIECE_SAMPLES:
            index = int(self.rng.choice(self.background))
            clip = self.clips[index]
            length = min(clip.samples.size, end - cursor)
            self._place_background(index, cursor, length)
            if self.spec.overlap_probability and self.rng.random() < self.spec.overlap_probability:
                other = int(self.rng.choice(self.background))
                start = cursor + int(self.rng.integers(0, length))
                overlap = min(self.clips[other].samples.size, end - start)
                if overlap >= MIN_BACKGROUND_PIECE_SAMPLES:
                    self._place_background(other, start, overlap)
            cursor += length + _samples(_uniform(self.rng, self.spec.gap_s))

    def _place_background(self, index: int, start: int, length: int) -> None:
        clip = self.clips[index]
        gain = _gain_for(_uniform(self.rng, self.spec.background_dbfs), clip.activity.level_dbfs)
        self.placements.append(Placement(ROLE_BACKGROUND, index, start, 0, length, _peak_limited(gain, clip.peak)))

    def _insert(self, start: int, limit: int) -> int | None:
        """Place the next cry/scream (on its bed) from ``start``; returns where it ends, None when it won't fit."""
        label = self.labels[int(self.rng.choice(len(self.labels), p=self.label_p))]
        parts = self._alert_parts(self.alert_clips[label].next())
        snr = self.snrs[label].next()
        length = max(p.end for p in parts)
        sound = (self.clips[parts[0].clip].samples[:length] if len(parts) == 1
                 else _mix(parts, self.clips, 0, length))
        activity = measure_activity(sound)
        before = after = 0
        if snr is not None:
            before = _samples(_uniform(self.rng, self.spec.bed_margin_s))
            after = _samples(_uniform(self.rng, self.spec.bed_margin_s))
        alert_start = start + before
        end = alert_start + length + after
        if end > limit:
            return None
        onset, offset = alert_start + activity.start, alert_start + activity.end
        placed = [dataclasses.replace(p, start=p.start + alert_start) for p in parts]
        if snr is None:
            gain = _peak_limited(_gain_for(_uniform(self.rng, self.spec.clean_alert_dbfs), activity.level_dbfs),
                                 _peak(sound))
        else:
            gain = self._insert_bed(activity, _peak(sound), (start, end), (onset, offset), snr)
        self.placements.extend(dataclasses.replace(p, gain=gain) for p in placed)
        name = self.clips[parts[0].clip].name + (f" (episode of {len(parts)} clips)" if len(parts) > 1 else "")
        self.truth.append(TruthEvent(label, _seconds(onset), _seconds(offset), snr, name))
        return end

    def _alert_parts(self, first: int) -> list[Placement]:
        """The inserted sound at gain 1 from sample 0: one clip, or an episode of its recording's clips."""
        cut = _samples(self.spec.max_alert_s)
        parts, cursor, index, same_recording = [], 0, first, None
        while True:
            clip = self.clips[index]
            length = min(clip.samples.size, clip.activity.start + cut)
            parts.append(Placement(ROLE_ALERT, index, cursor, 0, length, 1.0))
            cursor += length
            if cursor >= _samples(self.spec.episode_s):
                return parts
            cursor += _samples(_uniform(self.rng, self.spec.episode_pause_s))
            if same_recording is None:
                same_recording = _Cycler([i for i in self.alert_clips_of(first) if i != first] or [first], self.rng)
            index = same_recording.next()

    def alert_clips_of(self, index: int) -> list[int]:
        """The clips of ``index``'s label and recording (itself alone when it names no recording)."""
        clip = self.clips[index]
        if not clip.group:
            return [index]
        return [i for i, c in enumerate(self.clips) if c.label == clip.label and c.group == clip.group]

    def _insert_bed(self, activity: Activity, peak: float, bed_span: tuple[int, int],
                    active_span: tuple[int, int], snr: float) -> float:
        """Lay a bed under the insertion; returns the insertion's gain, so its active level is the bed's + ``snr``
        (both scaled down together when their peaks would clip)."""
        bed = self._bed(bed_span, active_span)
        bed_power = _stem_power(bed, self.clips, active_span)
        alert_gain = float(np.sqrt(bed_power * 10 ** (snr / 10) / 10 ** (activity.level_dbfs / 10)))
        bed_peak = max(p.gain * _peak(self.clips[p.clip].samples[p.offset:p.offset + p.length]) for p in bed)
        together = alert_gain * peak + bed_peak
        scale = min(1.0, PEAK_LIMIT / together) if together > 0 else 1.0
        self.placements.extend(dataclasses.replace(p, gain=p.gain * scale) for p in bed)
        return alert_gain * scale

    def _bed(self, span: tuple[int, int], active_span: tuple[int, int]) -> list[Placement]:
        """A Normal clip tiled over ``span``, scaled so its power over ``active_span`` is the drawn bed level."""
        level = _uniform(self.rng, self.spec.bed_dbfs)
        for _ in range(BED_ATTEMPTS):
            index = int(self.rng.choice(self.background))
            tiles = _tile(index, self.clips[index].samples.size, span)
            power = _stem_power(tiles, self.clips, active_span)
            if power_to_dbfs(power) > ACTIVITY_FLOOR_DBFS:
                gain = _gain_for(level, 10 * np.log10(power))
                return [Placement(t.role, t.clip, t.start, t.offset, t.length, gain) for t in tiles]
        raise ValueError(f"no Normal clip with sound found for a bed after {BED_ATTEMPTS} attempts")


def _tile(index: int, clip_length: int, span: tuple[int, int]) -> list[Placement]:
    start, end = span
    return [Placement(ROLE_BED, index, s, 0, min(clip_length, end - s), 1.0) for s in range(start, end, clip_length)]


def _stem_power(placements: Sequence[Placement], clips: Sequence[SourceClip], span: tuple[int, int]) -> float:
    """Mean power of these placements alone over ``span`` (no room tone)."""
    stem = _mix(placements, clips, span[0], span[1])
    return float(np.mean(np.square(stem, dtype=np.float64))) if stem.size else 0.0


def plan_stream(clips: Sequence[SourceClip], spec: StreamSpec) -> StreamPlan:
    """Where every clip goes, at what gain; the same clips and spec (seed) always give the same plan."""
    return _Planner(clips, spec).plan()


# --- rendering -------------------------------------------------------------------------------------

def _fade(length: int) -> np.ndarray:
    envelope = np.ones(length, dtype=np.float32)
    ramp = min(FADE_SAMPLES, length // 2)
    if ramp:
        rise = (0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)).astype(np.float32)
        envelope[:ramp] = rise
        envelope[length - ramp:] = rise[::-1]
    return envelope


def _mix(placements: Sequence[Placement], clips: Sequence[SourceClip], start: int, stop: int) -> np.ndarray:
    out = np.zeros(max(0, stop - start), dtype=np.float32)
    for p in placements:
        lo, hi = max(start, p.start), min(stop, p.end)
        if lo >= hi:
            continue
        segment = clips[p.clip].samples[p.offset:p.offset + p.length] * _fade(p.length) * np.float32(p.gain)
        out[lo - start:hi - start] += segment[lo - p.start:hi - p.start]
    return out


def room_tone_table(seed: int, level_dbfs: float) -> np.ndarray:
    """One period of pink-ish room noise at ``level_dbfs`` RMS (circular, so tiling has no seam)."""
    rng = np.random.default_rng([seed, 1])
    spectrum = np.fft.rfft(rng.standard_normal(ROOM_TONE_PERIOD_SAMPLES))
    frequencies = np.arange(spectrum.size, dtype=np.float64)
    spectrum[1:] /= np.sqrt(frequencies[1:])
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, ROOM_TONE_PERIOD_SAMPLES)
    noise *= 10 ** (level_dbfs / 20) / np.sqrt(np.mean(np.square(noise)))
    return noise.astype(np.float32)


class StreamRenderer:
    """Audio of any sample range of a plan; the placements overlapping a range are found by bisection."""

    def __init__(self, plan: StreamPlan, clips: Sequence[SourceClip]):
        self.plan = plan
        self.clips = clips
        self._starts = [p.start for p in plan.placements]
        self._longest = max((p.length for p in plan.placements), default=0)
        self._room = room_tone_table(plan.spec.seed, plan.spec.room_tone_dbfs)

    def placements_in(self, start: int, stop: int, roles: Sequence[str] = ALL_ROLES) -> list[Placement]:
        first = bisect.bisect_left(self._starts, start - self._longest)
        last = bisect.bisect_left(self._starts, stop)
        return [p for p in self.plan.placements[first:last] if p.end > start and p.role in roles]

    def render(self, start: int, stop: int, roles: Sequence[str] = ALL_ROLES, room_tone: bool = True) -> np.ndarray:
        """Samples ``[start, stop)`` of the stream (or only the given roles, with or without room tone)."""
        start, stop = max(0, start), min(self.plan.sample_count, stop)
        out = _mix(self.placements_in(start, stop, roles), self.clips, start, stop)
        if room_tone:
            out += self._room[np.arange(start, stop) % self._room.size]
        return np.clip(out, -1.0, 1.0)


def write_stream(plan: StreamPlan, clips: Sequence[SourceClip], audio_path: Path, truth_path: Path,
                 progress: Callable[[int], None] | None = None) -> None:
    """The stream as a 16 kHz 16-bit FLAC (so `nursery-monitor replay` reproduces it) and its truth as JSON."""
    renderer = StreamRenderer(plan, clips)
    chunk = _samples(WRITE_CHUNK_SECONDS)
    audio_path.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(str(audio_path), "w", samplerate=SAMPLE_RATE, channels=1, format="FLAC",
                      subtype="PCM_16") as handle:
        for start in range(0, plan.sample_count, chunk):
            stop = min(start + chunk, plan.sample_count)
            handle.write(renderer.render(start, stop))
            if progress is not None:
                progress(stop - start)
    truth_path.write_text(json.dumps(plan.to_dict(), indent=1), encoding="utf-8")


def read_truth(path: Path) -> tuple[list[TruthEvent], float]:
    """Truth events and stream length (seconds) of a written stream."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    return [TruthEvent.from_dict(t) for t in doc["truth"]], doc["sample_count"] / doc["sample_rate"]


def read_background(path: Path) -> list[SoundingSpan]:
    """The Normal clips sounding in a written stream (empty for a truth file without them)."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    return [SoundingSpan(float(b["start_s"]), float(b["end_s"]), b["clip"], b["source"])
            for b in doc.get("background", [])]

