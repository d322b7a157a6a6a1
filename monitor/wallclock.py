"""Maps the audio clock to the wall clock the audio was heard at.

The audio clock (seconds of 16 kHz audio delivered) stops while the microphone is gone, so
``stream start + audio seconds`` falls behind the real time by every outage. Sources stamp each block
with the wall time of its first sample; the map keeps the anchors where that stamp departs from the
prediction of the previous anchor (an outage, clock drift) and converts audio seconds through the
latest anchor at or before them. Blocks without a stamp (fast replay) leave the map as it is, so a
replay stays on ``stream start + audio seconds`` and gives the same events at any speed.
"""

from __future__ import annotations

import bisect
from collections import deque
from datetime import datetime, timedelta, timezone

REANCHOR_SECONDS = 0.1
"""A stamp this far from the current mapping starts a new anchor: above callback jitter, well below the
0.5 s an event time may be off."""

ANCHORS_KEPT = 256
"""Anchors remembered, oldest dropped first: enough to map any open event back across many outages."""


def as_utc(seconds_since_epoch: float) -> datetime:
    return datetime.fromtimestamp(seconds_since_epoch, tz=timezone.utc)


class WallClockMap:
    """Audio seconds -> wall time, through the anchors the capture stamps provide."""

    def __init__(self, stream_start_wall: datetime):
        if stream_start_wall.tzinfo is None or stream_start_wall.utcoffset() is None:
            raise ValueError("stream_start_wall must be timezone-aware (e.g. datetime.now(timezone.utc))")
        self._audio: deque[float] = deque([0.0], maxlen=ANCHORS_KEPT)
        self._wall: deque[datetime] = deque([stream_start_wall], maxlen=ANCHORS_KEPT)

    def anchor(self, audio_seconds: float, wall: datetime) -> bool:
        """Record that the audio at ``audio_seconds`` was heard at ``wall``; True when it became an anchor."""
        if audio_seconds < self._audio[-1]:
            raise ValueError(f"anchors must not go back on the audio clock: {audio_seconds} after {self._audio[-1]}")
        if abs((self.wall_at(audio_seconds) - wall).total_seconds()) < REANCHOR_SECONDS:
            return False
        if audio_seconds == self._audio[-1]:
            self._wall[-1] = wall
        else:
            self._audio.append(audio_seconds)
            self._wall.append(wall)
        return True

    def wall_at(self, audio_seconds: float) -> datetime:
        index = max(0, bisect.bisect_right(self._audio, audio_seconds) - 1)
        return self._wall[index] + timedelta(seconds=audio_seconds - self._audio[index])
