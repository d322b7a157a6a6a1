"""The sound of each alert: a pre-roll plus the event's audio, saved as 16 kHz FLAC when the event ends.

``ClipKeeper`` is fed every conditioned block (into a bounded ``AudioRing``) and every event message. A
``start`` opens a recording with the pre-roll read back from the ring; later blocks are appended up to
``clips.max_seconds`` (a longer event keeps its beginning: what woke the parents); the ``end`` trims it to
the event's end, writes ``<start>-<label>-<event_id>.flac`` with a ``.json`` sidecar (the end message), names
it in the end message (``clip``) and applies retention; once the end message has been handed on
(``after_sent``), the bytes go to the publisher when one is given, so a subscriber gets the clip after the end.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import soundfile as sf

from .audio_ring import AudioRing
from .config import ClipsConfig, Config
from .constants import SAMPLE_RATE
from .events import PHASE_END, PHASE_START
from .paths import state_dir

log = logging.getLogger(__name__)

CLIP_SUFFIX = ".flac"
SIDECAR_SUFFIX = ".json"
CLIP_SUBTYPE = "PCM_16"
BYTES_PER_MB = 1_000_000
SECONDS_PER_DAY = 86_400.0


def clips_dir(cfg: Config) -> Path:
    """``clips.directory``, else ``clips`` in the state directory ($STATE_DIRECTORY or ./state)."""
    return cfg.resolve_path(cfg.clips.directory) if cfg.clips.directory else state_dir() / "clips"


def clip_name(payload: dict) -> str:
    """``20261201T104012Z-crying-<event_id>.flac``: sorts by time, says what it is, finds its event."""
    start = datetime.fromisoformat(payload["start_time"].replace("Z", "+00:00"))
    return f"{start.strftime('%Y%m%dT%H%M%SZ')}-{payload['label'].lower()}-{payload['event_id']}{CLIP_SUFFIX}"


def flac_bytes(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(samples, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype=CLIP_SUBTYPE)
    return buffer.getvalue()


# --- recording ---------------------------------------------------------------------------------------------


@dataclass
class _Recording:
    first_sample: int
    cap_samples: int
    chunks: list[np.ndarray] = field(default_factory=list)
    samples: int = 0

    def append(self, samples: np.ndarray) -> None:
        room = self.cap_samples - self.samples
        if room > 0 and samples.size:
            self.chunks.append(samples[:room])
            self.samples += min(room, samples.size)

    def audio_until(self, end_sample: int) -> np.ndarray:
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        return audio[:max(0, end_sample - self.first_sample)]


class ClipKeeper:
    """Records each event's audio and saves it when the event ends (see the module docstring)."""

    def __init__(self, cfg: ClipsConfig, directory: Path, publish: Callable[[str, bytes], None] | None = None,
                 clock: Callable[[], float] = time.time):
        """Makes ``directory`` (OSError when it cannot); ``publish(event_id, flac_bytes)`` sends each clip."""
        self.cfg = cfg
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._publish = publish
        self._clock = clock
        self._pre_roll = round(cfg.pre_roll_seconds * SAMPLE_RATE)
        self._cap = round(cfg.max_seconds * SAMPLE_RATE)
        self.ring = AudioRing(cfg.pre_roll_seconds + cfg.max_seconds)
        self._recordings: dict[str, _Recording] = {}
        self._unpublished: dict[str, bytes] = {}
        self.saved: list[Path] = []
        """Clips written by this keeper, oldest first (retention may have deleted some since)."""

    def publish_with(self, publish: Callable[[str, bytes], None]) -> None:
        self._publish = publish

    def hear(self, samples: np.ndarray) -> None:
        """Every conditioned block, in stream order."""
        self.ring.push(samples)
        for recording in self._recordings.values():
            recording.append(samples)

    def on_event(self, payload: dict) -> None:
        """Every event message, before it is sent: a ``start`` opens a recording, an ``end`` saves it and
        names the file in ``payload['clip']``. A clip that cannot be written is logged, never fatal."""
        if payload["phase"] == PHASE_START:
            self._open(payload)
        elif payload["phase"] == PHASE_END and payload["event_id"] in self._recordings:
            recording = self._recordings.pop(payload["event_id"])
            try:
                payload["clip"] = self._save(payload, recording)
            except (OSError, sf.LibsndfileError) as exc:
                log.error("could not save the clip of event %s in %s: %s", payload["event_id"], self.directory, exc)

    def _open(self, payload: dict) -> None:
        first = max(0, round(payload["start_audio_s"] * SAMPLE_RATE) - self._pre_roll)
        recording = _Recording(first, self._cap)
        recording.append(self.ring.read(first))
        if first < self.ring.oldest_sample:
            log.warning("event %s: the ring no longer held its first %.1f s", payload["event_id"],
                        (self.ring.oldest_sample - first) / SAMPLE_RATE)
            recording.first_sample = self.ring.oldest_sample
        self._recordings[payload["event_id"]] = recording

    def _save(self, payload: dict, recording: _Recording) -> str:
        audio = recording.audio_until(round(payload["end_audio_s"] * SAMPLE_RATE))
        data = flac_bytes(audio)
        name = clip_name(payload)
        path = self.directory / name
        _write_atomically(path, data)
        sidecar = {**payload, "clip": name, "clip_seconds": round(audio.size / SAMPLE_RATE, 3),
                   "pre_roll_seconds": round((round(payload["start_audio_s"] * SAMPLE_RATE) - recording.first_sample)
                                             / SAMPLE_RATE, 3)}
        _write_atomically(path.with_suffix(SIDECAR_SUFFIX), (json.dumps(sidecar, indent=1) + "\n").encode())
        self.saved.append(path)
        log.info("clip of event %s saved: %s (%.1f s)", payload["event_id"], path, audio.size / SAMPLE_RATE)
        apply_retention(self.directory, self.cfg, now=self._clock(), keep=path)
        if self._publish is not None:
            self._unpublished[payload["event_id"]] = data
        return name

    def after_sent(self, payload: dict) -> None:
        """Every event message, after it was handed to the sinks: publishes the clip its end message named."""
        data = self._unpublished.pop(payload["event_id"], None)
        if data is not None:
            self._publish(payload["event_id"], data)


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    os.replace(partial, path)


# --- retention and listing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipFile:
    path: Path
    size_bytes: int
    modified: float


def clip_files(directory: Path) -> list[ClipFile]:
    """The FLAC clips in ``directory``, oldest first (by modification time, then name)."""
    if not directory.is_dir():
        return []
    files = []
    for path in directory.glob(f"*{CLIP_SUFFIX}"):
        try:
            stat = path.stat()
        except FileNotFoundError:  # deleted meanwhile
            continue
        files.append(ClipFile(path, stat.st_size, stat.st_mtime))
    return sorted(files, key=lambda f: (f.modified, f.path.name))


def expired(files: list[ClipFile], max_total_bytes: float, max_age_seconds: float, now: float,
            keep: Path | None = None) -> list[ClipFile]:
    """Pure retention rule: every clip older than ``max_age_seconds``, then the oldest while the rest take more
    than ``max_total_bytes``; ``keep`` (the clip just written) is never chosen. ``files`` oldest first."""
    doomed = [f for f in files if now - f.modified > max_age_seconds and f.path != keep]
    remaining = [f for f in files if f not in doomed]
    total = sum(f.size_bytes for f in remaining)
    for candidate in remaining:
        if total <= max_total_bytes:
            break
        if candidate.path == keep:
            continue
        doomed.append(candidate)
        total -= candidate.size_bytes
    return doomed


def apply_retention(directory: Path, cfg: ClipsConfig, now: float, keep: Path | None = None) -> list[Path]:
    """Delete the expired clips (and their sidecars); the deleted clip paths."""
    doomed = expired(clip_files(directory), cfg.max_total_mb * BYTES_PER_MB, cfg.max_age_days * SECONDS_PER_DAY,
                     now, keep)
    for clip in doomed:
        for path in (clip.path, clip.path.with_suffix(SIDECAR_SUFFIX)):
            path.unlink(missing_ok=True)
        log.info("retention: deleted clip %s", clip.path.name)
    return [clip.path for clip in doomed]


@dataclass(frozen=True)
class ClipInfo:
    """What `nursery-monitor clips` lists and `feedback` files: the clip and its end message."""

    path: Path
    event: dict

    @property
    def event_id(self) -> str:
        return self.event["event_id"]

    def line(self) -> str:
        return (f"{self.event['start_time']}  {self.event['label']:<9}  conf {self.event['confidence']:.2f}  "
                f"{self.event['duration_s']:6.1f} s  {self.event_id}  {self.path.name}")


def read_clips(directory: Path) -> list[ClipInfo]:
    """Clips with a readable sidecar, newest first; a clip without one is skipped with a warning."""
    infos = []
    for clip in reversed(clip_files(directory)):
        try:
            event = json.loads(clip.path.with_suffix(SIDECAR_SUFFIX).read_text())
        except (OSError, ValueError) as exc:
            log.warning("clip %s has no readable description (%s): skipped", clip.path.name, exc)
            continue
        infos.append(ClipInfo(clip.path, event))
    return infos


def find_clip(directory: Path, event_id: str) -> ClipInfo | None:
    return next((info for info in read_clips(directory) if info.event_id == event_id), None)
