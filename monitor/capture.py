"""Audio sources: file replay and the live microphone, both yielding 16 kHz mono blocks on the audio clock.

Every source passes its audio through the shared conditioning chain (``monitor.preprocess.Conditioner``),
so the models see the same input in training, replay and live. Time is the audio clock: 16 kHz samples
delivered so far / 16000 (see docs/ARCHITECTURE.md). Blocks also carry the wall time their first sample
was heard (``heard_at``), which the audio clock cannot give once the microphone has been away.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .audiofile import AudioFileError, iter_conditioned_blocks
from .config import AudioConfig, PreprocessConfig
from .constants import SAMPLE_RATE
from .preprocess import Conditioner
from .signal_helpers import SILENCE_DBFS, amplitude_to_dbfs, one_line

log = logging.getLogger(__name__)

STOP_POLL_SECONDS = 0.1
"""Longest a source waits without looking at its stop event (the stop is honoured within about this)."""

CLIP_LEVEL = 0.999
"""A raw input sample at or above this magnitude counts as clipped."""

PEAK_FLOOR_DBFS = SILENCE_DBFS
"""Peak level reported for digital silence (same floor as ``rms_dbfs``)."""

WARNING_INTERVAL_SECONDS = 60.0
"""Repeated capture warnings (overflow, dropped blocks) are logged at most this often."""

MAX_INPUT_LATENCY_SECONDS = 2.0
"""A capture latency PortAudio reports beyond this (or below 0) is taken as bogus: some ALSA devices report 0
for the ADC time. The block's own duration is used instead."""

JOIN_TIMEOUT_SECONDS = 2.0
"""How long ``MicSource.close`` waits for its supervisor thread before logging it as a straggler."""

MIC_OK = "ok"
MIC_ERROR = "mic_error"
MIC_STARTING = "starting"
MIC_STOPPED = "stopped"


@dataclass(frozen=True)
class AudioBlock:
    """Conditioned audio; ``discontinuity`` marks audio that does not continue the previous block
    (a new replay file, dropped capture blocks or a reopened microphone), so windows may be reset."""

    samples: np.ndarray
    start_seconds: float
    discontinuity: bool = False
    heard_at: float | None = None
    """Wall time (seconds since the epoch) at which the first sample was captured; None for a fast replay,
    whose wall time is derived from the audio clock."""

    @property
    def end_seconds(self) -> float:
        return self.start_seconds + self.samples.size / SAMPLE_RATE


class AudioClock:
    """Stamps blocks with the audio clock: 16 kHz samples delivered so far / 16000."""

    def __init__(self) -> None:
        self.samples_delivered = 0

    @property
    def seconds(self) -> float:
        return self.samples_delivered / SAMPLE_RATE

    def stamp(self, samples: np.ndarray, discontinuity: bool = False, heard_at: float | None = None) -> AudioBlock:
        block = AudioBlock(samples, self.seconds, discontinuity, heard_at)
        self.samples_delivered += samples.size
        return block


def peak_dbfs(samples: np.ndarray) -> float:
    """Peak sample magnitude in dBFS; silence reports the ``PEAK_FLOOR_DBFS`` floor."""
    if samples.size == 0:
        return PEAK_FLOOR_DBFS
    peak = float(np.max(np.abs(samples)))
    if not np.isfinite(peak):
        return 0.0
    return amplitude_to_dbfs(peak)


def count_clipped(samples: np.ndarray) -> int:
    """Samples at or beyond full scale (NaN/Inf included: they are broken input too)."""
    with np.errstate(invalid="ignore"):
        return int(np.count_nonzero(~(np.abs(samples) < CLIP_LEVEL)))


def _interruptible_sleep(stop: threading.Event) -> Callable[[float], None]:
    """A sleep that returns as soon as ``stop`` is set."""

    def sleep(seconds: float) -> None:
        stop.wait(max(0.0, seconds))

    return sleep


# --- file replay ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileSegment:
    """Where one replayed file sits on the audio clock; ``end_seconds`` is None while it plays."""

    index: int
    path: Path
    start_seconds: float
    end_seconds: float | None = None
    error: str | None = None


class FileReplaySource:
    """Replays files in order as one continuous stream (the audio clock runs on across files).

    Each file is decoded in blocks of ``audio_cfg.block_seconds``, so memory stays constant for
    multi-hour recordings. ``realtime=True`` paces delivery by the audio clock: a block is handed
    out when as much time has passed since the replay started as the audio it ends at, and is stamped with
    the wall time it was "heard" at (``wall_clock``), as a microphone's would be.

    Unreadable files raise ``AudioFileError`` (one line naming the file and the reason). A caller
    that wants to go on with the remaining files passes ``on_error``: it then receives the error,
    the bad file is recorded in ``segments`` with its reason, and replay continues.
    ``on_file`` is called with a ``FileSegment`` whenever a file starts, to log what is playing.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], audio_cfg: AudioConfig, preprocess_cfg: PreprocessConfig,
                 realtime: bool = False, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] | None = None, stop_event: threading.Event | None = None,
                 on_file: Callable[[FileSegment], None] | None = None,
                 on_error: Callable[[AudioFileError], None] | None = None,
                 wall_clock: Callable[[], float] = time.time):
        self.paths = [Path(p) for p in paths]
        self.audio_cfg = audio_cfg
        self.preprocess_cfg = preprocess_cfg
        self.realtime = realtime
        self.stop_event = stop_event or threading.Event()
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep or _interruptible_sleep(self.stop_event)
        self._on_file = on_file
        self._on_error = on_error
        self._audio_clock = AudioClock()
        self._started_at: float | None = None
        self.segments: list[FileSegment] = []
        """Files replayed to their end or rejected (with ``error``), with their place on the audio clock."""

    def stop(self) -> None:
        self.stop_event.set()

    @property
    def audio_seconds(self) -> float:
        return self._audio_clock.seconds

    def __iter__(self) -> Iterator[AudioBlock]:
        for index, path in enumerate(self.paths):
            if self.stop_event.is_set():
                return
            segment = FileSegment(index, path, self._audio_clock.seconds)
            if self._on_file is not None:
                self._on_file(segment)
            try:
                yield from self._replay_file(path, first_block_discontinuous=index > 0)
            except AudioFileError as exc:
                self.segments.append(replace(segment, end_seconds=self._audio_clock.seconds, error=exc.reason))
                if self._on_error is None:
                    raise
                self._on_error(exc)
                continue
            if self.stop_event.is_set():
                return  # a file cut short is not recorded as replayed
            self.segments.append(replace(segment, end_seconds=self._audio_clock.seconds))

    def _replay_file(self, path: Path, first_block_discontinuous: bool) -> Iterator[AudioBlock]:
        discontinuity = first_block_discontinuous
        for samples in iter_conditioned_blocks(path, self.preprocess_cfg, self.audio_cfg.block_seconds):
            if self.stop_event.is_set():
                return
            duration = samples.size / SAMPLE_RATE
            heard_at = None
            if self.realtime:
                if not self._wait_until_due(self._audio_clock.seconds + duration):
                    return
                heard_at = self._wall_clock() - duration
            yield self._audio_clock.stamp(samples, discontinuity, heard_at)
            discontinuity = False

    def _wait_until_due(self, audio_seconds: float) -> bool:
        """Sleep until ``audio_seconds`` of wall time have passed since replay began; False if stopped."""
        if self._started_at is None:
            self._started_at = self._clock()
        while not self.stop_event.is_set():
            remaining = self._started_at + audio_seconds - self._clock()
            if remaining <= 0:
                return True
            self._sleep(min(remaining, STOP_POLL_SECONDS))
        return False


# --- microphone ----------------------------------------------------------------------------------


class InputStreamLike(Protocol):
    """What MicSource needs of a capture stream (``sounddevice.InputStream`` has it)."""

    samplerate: float
    active: bool

    def start(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class StreamRequest:
    """Everything a stream factory needs to open the input; ``callback`` has sounddevice's signature
    ``callback(indata, frames, time_info, status)``. ``reopening`` is set on every attempt after a
    failure, so the real factory rescans the devices (PortAudio only enumerates them at start-up)."""

    device: int | str | None
    samplerate: int | None
    channels: int | None
    block_seconds: float
    callback: Callable[[np.ndarray, int, Any, Any], None]
    reopening: bool = False


StreamFactory = Callable[[StreamRequest], InputStreamLike]


class MicError(RuntimeError):
    """The input device cannot be found or opened; the message is one line."""


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    channels: int
    default_rate: float
    is_default: bool

    def __str__(self) -> str:
        default = " (default)" if self.is_default else ""
        return f"{self.index}: {self.name} - {self.channels} ch, {self.default_rate:.0f} Hz{default}"


@contextmanager
def _log_handlers_held() -> Iterator[None]:
    """PortAudio's initialisation (``import sounddevice``, each device rescan) points the whole process's stderr
    at /dev/null for a moment, to hide ALSA's chatter. The log handlers are held meanwhile, so a line another
    thread logs then (say an MQTT error that is logged only once) waits instead of vanishing."""
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.acquire()
    try:
        yield
    finally:
        for handler in reversed(handlers):
            handler.release()


def _sounddevice() -> Any:
    """The sounddevice module; its first import initialises PortAudio, so it is made with the log handlers held."""
    with _log_handlers_held():
        import sounddevice
    return sounddevice


def list_devices(query: Callable[[], Any] | None = None) -> list[InputDevice]:
    """Input-capable devices, for `nursery-monitor devices` and for resolving ``audio.device``."""
    if query is None:
        query = _sounddevice().query_devices
        default_input = _default_input_index()
    else:
        default_input = None
    return [
        InputDevice(index, str(info["name"]), int(info["max_input_channels"]), float(info["default_samplerate"]),
                    index == default_input)
        for index, info in enumerate(query())
        if int(info["max_input_channels"]) > 0
    ]


def _default_input_index() -> int | None:
    sounddevice = _sounddevice()
    try:
        index = sounddevice.default.device[0]
    except (TypeError, IndexError):
        return None
    return int(index) if index is not None and int(index) >= 0 else None


def resolve_device(device: int | str | None, devices: Sequence[InputDevice]) -> InputDevice | None:
    """Config value -> device: an index, or the first device whose name contains the string
    (case-insensitive); None means the system default. Raises ``MicError`` when nothing matches."""
    if device is None:
        return next((d for d in devices if d.is_default), None)
    if isinstance(device, int):
        match = next((d for d in devices if d.index == device), None)
    else:
        match = next((d for d in devices if device.lower() in d.name.lower()), None)
    if match is None:
        available = "; ".join(f"{d.index}: {d.name}" for d in devices) or "none"
        raise MicError(f"no input device matching {device!r} (available: {available})")
    return match


def open_sounddevice_stream(request: StreamRequest) -> InputStreamLike:
    """The real stream factory: resolves the device, its native rate and a channel count it accepts."""
    sounddevice = _sounddevice()
    if request.reopening:
        _rescan_devices(sounddevice)
    try:
        device = resolve_device(request.device, list_devices())
        index = device.index if device is not None else None
        rate = request.samplerate or (device.default_rate if device is not None else None)
        if rate is None:
            rate = sounddevice.query_devices(kind="input")["default_samplerate"]
        channels = request.channels or _mono_or_native(sounddevice, index, rate, device)
        return sounddevice.InputStream(
            device=index, samplerate=rate, channels=channels, dtype="float32",
            blocksize=max(1, round(request.block_seconds * rate)), callback=request.callback)
    except (sounddevice.PortAudioError, ValueError) as exc:
        raise MicError(" ".join(str(exc).split())) from None


def _rescan_devices(sounddevice: Any) -> None:
    """Re-initialise PortAudio so an unplugged and re-plugged USB microphone shows up again.

    Only called while no stream of ours is open; the functions are private to sounddevice, so a
    version without them just keeps its old device list.
    """
    try:
        with _log_handlers_held():
            sounddevice._terminate()
            sounddevice._initialize()
    except (AttributeError, sounddevice.PortAudioError) as exc:
        log.debug("could not rescan audio devices: %s", one_line(exc))


def _mono_or_native(sounddevice: Any, index: int | None, rate: float, device: InputDevice | None) -> int:
    """Mono when the device accepts it (ALSA plug devices do); raw hw devices need their own count."""
    try:
        sounddevice.check_input_settings(device=index, channels=1, samplerate=rate)
        return 1
    except (sounddevice.PortAudioError, ValueError):
        return device.channels if device is not None else 1


@dataclass(frozen=True)
class MicStats:
    """Counters are cumulative since the source was created; ``peak_dbfs`` is the latest block's peak."""

    state: str
    overflows: int
    dropped_blocks: int
    clipped_samples: int
    peak_dbfs: float
    last_error: str | None
    reopened: int
    capture_rate: int | None

    def to_dict(self) -> dict[str, Any]:
        """For the status message (``mic`` fields)."""
        return asdict(self)


class Backoff:
    """Exponential retry delays: min, 2*min, 4*min ... capped at max; ``reset`` after a success."""

    def __init__(self, min_seconds: float, max_seconds: float):
        self.min_seconds = min_seconds
        self.max_seconds = max_seconds
        self._next = min_seconds

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.max_seconds)
        return delay

    def reset(self) -> None:
        self._next = self.min_seconds


@dataclass(eq=False)
class _Session:
    """One opened stream: its callback stamps the raw blocks with it, so the consumer notices a reopen."""

    number: int
    rate: int = 0
    last_data: float | None = None


@dataclass(frozen=True)
class _RawBlock:
    session: _Session
    samples: np.ndarray
    after_drop: bool
    heard_at: float


@dataclass
class _CallbackCounters:
    """Written only by the audio callback thread, read by the others."""

    overflows: int = 0
    dropped_blocks: int = 0
    drop_pending: bool = False


class _RateLimitedWarning:
    def __init__(self, clock: Callable[[], float]):
        self._clock = clock
        self._last: float | None = None

    def __call__(self, message: str, *args: Any) -> None:
        now = self._clock()
        if self._last is None or now - self._last >= WARNING_INTERVAL_SECONDS:
            self._last = now
            log.warning(message, *args)


class MicSource:
    """Live microphone that survives a missing or vanishing device.

    The audio callback only copies the block into a bounded queue and never blocks; a full queue
    drops the block and counts it. A supervisor thread opens the stream, watches it (stream no
    longer active, no audio for ``no_data_seconds``), closes a failed one and reopens it with
    exponential backoff while the state is ``mic_error``. The iterator meanwhile yields nothing,
    calls ``on_idle`` about every ``STOP_POLL_SECONDS`` (so the caller can feed a watchdog and
    publish status while the microphone is away) and honours the stop event within that time.
    """

    def __init__(self, audio_cfg: AudioConfig, preprocess_cfg: PreprocessConfig,
                 stream_factory: StreamFactory | None = None, stop_event: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], Any] | None = None,
                 on_idle: Callable[[], None] | None = None, wall_clock: Callable[[], float] = time.time):
        self.audio_cfg = audio_cfg
        self.preprocess_cfg = preprocess_cfg
        self.stop_event = stop_event or threading.Event()
        self._stream_factory = stream_factory or open_sounddevice_stream
        self._clock = clock
        self._wall_clock = wall_clock
        self._closing = threading.Event()
        self._sleep = sleep
        self._on_idle = on_idle
        capacity = max(1, round(audio_cfg.queue_seconds / audio_cfg.block_seconds))
        self._queue: queue.Queue[_RawBlock] = queue.Queue(maxsize=capacity)
        self._counters = _CallbackCounters()
        self._backoff = Backoff(audio_cfg.retry_min_seconds, audio_cfg.retry_max_seconds)
        self._supervisor: threading.Thread | None = None
        self._state = MIC_STARTING
        self._last_error: str | None = None
        self._sessions_opened = 0
        self._capture_rate: int | None = None
        self._clipped = 0
        self._peak_dbfs = PEAK_FLOOR_DBFS
        self._audio_clock = AudioClock()
        self._warn = _RateLimitedWarning(clock)

    # -- consumer side --

    def __iter__(self) -> Iterator[AudioBlock]:
        self.start()
        conditioner: Conditioner | None = None
        session: _Session | None = None
        pending_discontinuity = False
        seen = (0, 0)
        try:
            while not self._should_stop():
                try:
                    raw = self._queue.get(timeout=STOP_POLL_SECONDS)
                except queue.Empty:
                    if self._on_idle is not None:
                        self._on_idle()
                    continue
                if raw.session is not session:
                    pending_discontinuity = session is not None
                    session, conditioner = raw.session, Conditioner(raw.session.rate, self.preprocess_cfg)
                pending_discontinuity = pending_discontinuity or raw.after_drop
                seen = self._report_losses(seen)
                self._clipped += count_clipped(raw.samples)
                self._peak_dbfs = peak_dbfs(raw.samples)
                samples = conditioner.process(raw.samples)
                if samples.size:
                    yield self._audio_clock.stamp(samples, pending_discontinuity, raw.heard_at)
                    pending_discontinuity = False
        finally:
            self.close()

    def _report_losses(self, seen: tuple[int, int]) -> tuple[int, int]:
        now = (self._counters.overflows, self._counters.dropped_blocks)
        if now != seen:
            self._warn("microphone lost audio: %d input overflows, %d blocks dropped (queue full: processing too "
                       "slow) so far", *now)
        return now

    # -- lifecycle --

    def start(self) -> None:
        if self._supervisor is None:
            self._supervisor = threading.Thread(target=self._supervise, name="mic-supervisor", daemon=True)
            self._supervisor.start()

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        """Stop the supervisor (closing the stream) without touching the shared stop event."""
        self._closing.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(JOIN_TIMEOUT_SECONDS)
            if self._supervisor.is_alive():
                log.warning("microphone supervisor did not stop within %.1f s", JOIN_TIMEOUT_SECONDS)
        self._state = MIC_STOPPED

    def __enter__(self) -> MicSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stats(self) -> MicStats:
        return MicStats(self._state, self._counters.overflows, self._counters.dropped_blocks, self._clipped,
                        self._peak_dbfs, self._last_error, max(0, self._sessions_opened - 1), self._capture_rate)

    def _should_stop(self) -> bool:
        return self.stop_event.is_set() or self._closing.is_set()

    # -- audio callback (PortAudio's thread: copy, enqueue, count; never block) --

    def _make_callback(self, session: _Session) -> Callable[[np.ndarray, int, Any, Any], None]:
        counters = self._counters

        def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            session.last_data = self._clock()
            heard_at = self._wall_clock() - capture_latency(time_info, frames / max(session.rate, 1))
            if status is not None and getattr(status, "input_overflow", False):
                counters.overflows += 1
            try:
                self._queue.put_nowait(_RawBlock(session, np.array(indata, dtype=np.float32), counters.drop_pending,
                                                 heard_at))
                counters.drop_pending = False
            except queue.Full:
                counters.dropped_blocks += 1
                counters.drop_pending = True

        return callback

    # -- supervisor thread: open, watch, close, back off, reopen --

    def _supervise(self) -> None:
        while not self._should_stop():
            session = _Session(self._sessions_opened + 1)
            try:
                stream = self._open(session)
            except Exception as exc:  # any failure to open means "retry later", never a crash
                self._enter_error(f"cannot open input device: {one_line(exc)}")
                self._pause(self._backoff.next_delay())
                continue
            failure = self._watch(stream, session)
            self._close_stream(stream)
            if failure is None:
                return
            self._enter_error(failure)
            self._pause(self._backoff.next_delay())

    def _open(self, session: _Session) -> InputStreamLike:
        cfg = self.audio_cfg
        request = StreamRequest(cfg.device, cfg.capture_rate, cfg.channels, cfg.block_seconds,
                                self._make_callback(session), reopening=self._state == MIC_ERROR)
        stream = self._stream_factory(request)
        try:
            session.rate = int(round(stream.samplerate))
            stream.start()
        except Exception:
            self._close_stream(stream)
            raise
        self._sessions_opened += 1
        self._capture_rate = session.rate
        log.debug("input stream %d open at %d Hz", session.number, session.rate)
        return stream

    def _watch(self, stream: InputStreamLike, session: _Session) -> str | None:
        """Poll a running stream; the reason it failed, or None when asked to stop."""
        opened_at = self._clock()
        while not self._should_stop():
            self._closing.wait(STOP_POLL_SECONDS)
            if not stream.active:
                return "input stream stopped (device unplugged or driver error)"
            last = session.last_data
            if last is not None and self._state != MIC_OK:
                self._enter_ok(session)
            silent_for = self._clock() - (last if last is not None else opened_at)
            if silent_for > self.audio_cfg.no_data_seconds:
                return f"no audio from the input device for {silent_for:.1f} s"
        return None

    def _enter_ok(self, session: _Session) -> None:
        if self._state == MIC_ERROR:
            log.info("microphone recovered (%d Hz) after: %s", session.rate, self._last_error)
        else:
            log.info("microphone capturing at %d Hz", session.rate)
        self._state = MIC_OK
        self._backoff.reset()

    def _enter_error(self, reason: str) -> None:
        if self._state != MIC_ERROR or reason != self._last_error:
            log.warning("microphone error: %s; retrying with backoff up to %.0f s", reason,
                        self.audio_cfg.retry_max_seconds)
        self._state = MIC_ERROR
        self._last_error = reason

    def _pause(self, seconds: float) -> None:
        """Backoff wait that still honours the stop event and ``close``."""
        if self._sleep is not None:
            self._sleep(seconds)
            return
        deadline = self._clock() + seconds
        while not self._should_stop() and (remaining := deadline - self._clock()) > 0:
            self._closing.wait(min(remaining, STOP_POLL_SECONDS))

    @staticmethod
    def _close_stream(stream: InputStreamLike) -> None:
        try:
            stream.close()
        except Exception as exc:  # a broken device may fail to close; it is dropped anyway
            log.debug("closing the input stream failed: %s", one_line(exc))


def capture_latency(time_info: Any, block_seconds: float) -> float:
    """How long before the callback the block's first sample was captured: PortAudio's
    ``currentTime - inputBufferAdcTime`` when it is plausible, else the block's own duration."""
    try:
        latency = float(time_info.currentTime) - float(time_info.inputBufferAdcTime)
    except (AttributeError, TypeError, ValueError):
        return block_seconds
    if not 0.0 < latency <= MAX_INPUT_LATENCY_SECONDS:
        return block_seconds
    return latency


__all__ = [
    "AudioBlock", "AudioClock", "AudioFileError", "Backoff", "FileReplaySource", "FileSegment", "InputDevice",
    "MicError", "MicSource", "MicStats", "StreamRequest", "capture_latency", "count_clipped", "list_devices",
    "open_sounddevice_stream",
    "peak_dbfs", "resolve_device", "MIC_OK", "MIC_ERROR", "MIC_STARTING", "MIC_STOPPED",
]
