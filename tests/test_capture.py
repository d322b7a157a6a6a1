"""Audio sources: file replay on the audio clock, and the microphone with a fake stream (no hardware)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from monitor.capture import (
    MIC_ERROR,
    MIC_OK,
    MIC_STARTING,
    AudioBlock,
    Backoff,
    FileReplaySource,
    FileSegment,
    InputDevice,
    MicError,
    MicSource,
    list_devices,
    resolve_device,
)
from monitor.config import AudioConfig, PreprocessConfig
from monitor.constants import SAMPLE_RATE
from tests.helpers.audio import (
    RESAMPLE_TOLERANCE,
    WAIT_SECONDS,
    FakeDevice,
    RecordingSleep,
    assert_contiguous,
    expected_samples,
    mic_config,
    wait_for,
    write_audio,
)

CONDITIONER_LAG_SECONDS = 0.3
"""Upper bound of audio still inside the resampler while a live stream runs (it is flushed only at the end)."""



# --- helpers shared with test_bad_audio -----------------------------------------------------------


def collect(source) -> list[AudioBlock]:
    return list(source)


def total_samples(blocks: list[AudioBlock]) -> int:
    return sum(b.samples.size for b in blocks)


# --- file replay ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
@pytest.mark.parametrize("channels,subtype", [(1, "PCM_16"), (2, "PCM_24"), (3, "PCM_U8"), (6, "PCM_32"),
                                              (8, "FLOAT")])
def test_replay_yields_16k_mono_of_the_right_length(tmp_path, rate, channels, subtype):
    path = tmp_path / "clip.wav"
    frames = write_audio(path, 1.3, rate, channels, subtype)

    blocks = collect(FileReplaySource([path], AudioConfig(), PreprocessConfig()))

    assert all(b.samples.dtype == np.float32 and b.samples.ndim == 1 for b in blocks)
    assert total_samples(blocks) == pytest.approx(expected_samples(frames, rate), abs=RESAMPLE_TOLERANCE)
    assert blocks[0].start_seconds == 0.0
    assert_contiguous(blocks)


def test_replay_blocks_follow_block_seconds(tmp_path):
    path = tmp_path / "clip.wav"
    write_audio(path, 3.0, 16000)
    audio_cfg = AudioConfig(block_seconds=0.25)

    blocks = collect(FileReplaySource([path], audio_cfg, PreprocessConfig()))

    # the resampler releases output in its own chunks, so only the number of blocks follows the setting
    assert len(blocks) == pytest.approx(3.0 / audio_cfg.block_seconds, abs=2)


def test_audio_clock_runs_on_across_files(tmp_path):
    specs = [(8000, 1, 0.7), (48000, 2, 1.1), (22050, 1, 0.4)]
    paths, frames = [], []
    for i, (rate, channels, seconds) in enumerate(specs):
        path = tmp_path / f"f{i}.wav"
        frames.append(write_audio(path, seconds, rate, channels))
        paths.append(path)
    started: list[FileSegment] = []

    source = FileReplaySource(paths, AudioConfig(), PreprocessConfig(), on_file=started.append)
    blocks = collect(source)

    assert_contiguous(blocks)
    per_file = [expected_samples(n, rate) / SAMPLE_RATE for n, (rate, _, _) in zip(frames, specs, strict=True)]
    assert [s.path for s in started] == paths
    assert [s.end_seconds for s in started] == [None] * len(paths)
    boundaries = np.cumsum([0.0, *per_file])
    tolerance = len(paths) * RESAMPLE_TOLERANCE / SAMPLE_RATE
    for segment, start, end in zip(source.segments, boundaries[:-1], boundaries[1:], strict=True):
        assert segment.start_seconds == pytest.approx(start, abs=tolerance)
        assert segment.end_seconds == pytest.approx(end, abs=tolerance)
        assert segment.error is None
    assert blocks[-1].end_seconds == pytest.approx(boundaries[-1], abs=tolerance)
    first_blocks = [next(b for b in blocks if b.start_seconds >= s.start_seconds) for s in source.segments]
    assert [b.discontinuity for b in first_blocks] == [False, True, True]
    assert sum(b.discontinuity for b in blocks) == len(paths) - 1


class FakeClock:
    """Time that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_realtime_replay_is_paced_by_the_audio_clock(tmp_path):
    path = tmp_path / "clip.wav"
    write_audio(path, 2.0, 44100)
    clock = FakeClock()
    start = clock.now
    audio_cfg = AudioConfig(block_seconds=0.2)

    yielded_at = []
    for block in FileReplaySource([path], audio_cfg, PreprocessConfig(), realtime=True, clock=clock,
                                  sleep=clock.sleep):
        yielded_at.append((clock.now - start, block.end_seconds))

    for elapsed, end_seconds in yielded_at:
        assert elapsed >= end_seconds - 1e-9, "a block was handed out before its audio had 'happened'"
        assert elapsed - end_seconds < audio_cfg.block_seconds, "replay fell behind real time"
    assert sum(clock.slept) == pytest.approx(yielded_at[-1][1], abs=1e-6)


def test_fast_replay_never_sleeps(tmp_path):
    path = tmp_path / "clip.wav"
    write_audio(path, 1.0, 16000)

    def forbidden_sleep(seconds: float) -> None:
        raise AssertionError("fast replay slept")

    assert collect(FileReplaySource([path], AudioConfig(), PreprocessConfig(), sleep=forbidden_sleep))


def test_stop_event_ends_replay_between_blocks(tmp_path):
    paths = [tmp_path / "a.wav", tmp_path / "b.wav"]
    for path in paths:
        write_audio(path, 2.0, 16000)
    stop = threading.Event()
    source = FileReplaySource(paths, AudioConfig(block_seconds=0.1), PreprocessConfig(), stop_event=stop)

    blocks = []
    for block in source:
        blocks.append(block)
        if len(blocks) == 3:
            stop.set()

    assert len(blocks) == 3
    assert source.segments == []


def test_stop_event_interrupts_a_realtime_wait(tmp_path):
    path = tmp_path / "clip.wav"
    write_audio(path, 5.0, 16000)
    clock = FakeClock()
    stop = threading.Event()

    def sleep_then_stop(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.now - 1000.0 > 1.0:
            stop.set()

    source = FileReplaySource([path], AudioConfig(), PreprocessConfig(), realtime=True, clock=clock,
                              sleep=sleep_then_stop, stop_event=stop)
    blocks = collect(source)

    assert blocks and blocks[-1].end_seconds <= 1.0 + AudioConfig().block_seconds
    assert source.audio_seconds == blocks[-1].end_seconds, "the block held back by the stop must not count"


# --- microphone: a fake sounddevice stream ---------------------------------------------------------


class Consumer:
    """Iterates a MicSource in a thread, as the pipeline does."""

    def __init__(self, mic: MicSource):
        self.mic = mic
        self.blocks: list[AudioBlock] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for block in self.mic:
            self.blocks.append(block)

    def samples(self) -> int:
        return total_samples(list(self.blocks))

    def stop(self) -> None:
        self.mic.stop()
        self.thread.join(WAIT_SECONDS)
        assert not self.thread.is_alive()


def test_mic_delivers_conditioned_blocks_on_the_audio_clock():
    device = FakeDevice(rate=48000, channels=2)
    device.max_blocks = 40
    mic = MicSource(mic_config(), PreprocessConfig(), stream_factory=device.factory)

    consumer = Consumer(mic)
    wait_for(lambda: device.blocks_sent == 40 and mic._queue.empty(), "all blocks consumed")
    consumer.stop()

    blocks = consumer.blocks
    assert all(b.samples.dtype == np.float32 and b.samples.ndim == 1 for b in blocks)
    assert blocks[0].start_seconds == 0.0
    assert_contiguous(blocks)
    assert not any(b.discontinuity for b in blocks)
    sent = expected_samples(device.frames_sent, device.rate)
    assert sent - CONDITIONER_LAG_SECONDS * SAMPLE_RATE <= total_samples(blocks) <= sent + RESAMPLE_TOLERANCE
    stats = mic.stats()
    assert (stats.overflows, stats.dropped_blocks, stats.clipped_samples) == (0, 0, 0)
    assert stats.capture_rate == 48000
    assert stats.peak_dbfs == pytest.approx(20 * np.log10(device.amplitude), abs=0.1)
    assert device.requests[0].block_seconds == 0.05 and not device.requests[0].reopening


def test_mic_counts_input_overflows_and_clipping():
    device = FakeDevice(rate=16000, channels=1, amplitude=1.0)
    device.overflow_every = 3
    device.max_blocks = 30
    mic = MicSource(mic_config(), PreprocessConfig(), stream_factory=device.factory)

    consumer = Consumer(mic)
    wait_for(lambda: device.blocks_sent == 30 and mic._queue.empty(), "all blocks consumed")
    consumer.stop()

    stats = mic.stats()
    assert stats.overflows == device.overflows_sent > 0
    assert stats.clipped_samples == device.clipped_sent > 0
    assert stats.peak_dbfs == pytest.approx(0.0, abs=0.01)
    assert all(np.all(np.abs(b.samples) <= 1.0) for b in consumer.blocks)


def test_mic_full_queue_drops_blocks_and_counts_them():
    device = FakeDevice(rate=16000, channels=1)
    device.max_blocks = 35
    audio_cfg = mic_config(block_seconds=0.05, queue_seconds=1.0)
    capacity = round(audio_cfg.queue_seconds / audio_cfg.block_seconds)
    mic = MicSource(audio_cfg, PreprocessConfig(), stream_factory=device.factory)

    mic.start()  # capture runs, nobody consumes
    wait_for(lambda: device.blocks_sent == 35, "the fake stream to deliver its blocks")
    assert mic.stats().dropped_blocks == 35 - capacity

    consumer = Consumer(mic)
    wait_for(lambda: mic._queue.empty(), "the consumer to drain the queue")
    device.max_blocks = 36  # one more block, after the drops
    wait_for(lambda: device.blocks_sent == 36 and mic._queue.empty(), "the late block")
    consumer.stop()

    assert mic.stats().dropped_blocks == 35 - capacity
    flagged = [b for b in consumer.blocks if b.discontinuity]
    assert len(flagged) == 1 and flagged[0] is consumer.blocks[-1]
    assert total_samples(consumer.blocks) <= (capacity + 1) * audio_cfg.block_seconds * SAMPLE_RATE


def test_mic_missing_at_start_retries_with_backoff_then_recovers():
    device = FakeDevice()
    device.unplug()
    sleep = RecordingSleep()
    idle_calls = []
    mic = MicSource(mic_config(retry_min_seconds=1.0, retry_max_seconds=4.0), PreprocessConfig(),
                    stream_factory=device.factory, sleep=sleep, on_idle=lambda: idle_calls.append(1))

    consumer = Consumer(mic)
    wait_for(lambda: len(sleep.waits) >= 5, "five retries")
    stats = mic.stats()
    assert stats.state == MIC_ERROR
    assert "no input device matching 'USB'" in stats.last_error
    assert sleep.waits[:5] == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert consumer.blocks == []
    wait_for(lambda: idle_calls, "the consumer to report idle while the microphone is away")

    device.present = True
    wait_for(lambda: consumer.samples() > 0 and mic.stats().state == MIC_OK, "recovery")
    assert device.requests[-1].reopening

    retries_before = len(sleep.waits)
    device.unplug()
    wait_for(lambda: len(sleep.waits) >= retries_before + 2, "retries after the second loss")
    consumer.stop()
    assert sleep.waits[retries_before:retries_before + 2] == [1.0, 2.0], "backoff restarts after a recovery"


def test_mic_lost_mid_run_reopens_and_keeps_the_clock():
    device = FakeDevice()
    sleep = RecordingSleep()
    mic = MicSource(mic_config(), PreprocessConfig(), stream_factory=device.factory, sleep=sleep)

    consumer = Consumer(mic)
    wait_for(lambda: consumer.samples() > SAMPLE_RATE // 2, "audio before the loss")
    device.unplug()
    wait_for(lambda: mic.stats().state == MIC_ERROR and len(sleep.waits) >= 2, "the loss to be noticed")
    assert "stream stopped" in mic.stats().last_error or "no input device" in mic.stats().last_error
    samples_during_outage = consumer.samples()
    device.present = True
    wait_for(lambda: mic.stats().state == MIC_OK and consumer.samples() > samples_during_outage + SAMPLE_RATE // 2,
             "audio after recovery")
    consumer.stop()

    assert mic.stats().reopened >= 1
    assert len(device.streams) >= 2 and all(not s.active for s in device.streams)
    assert_contiguous(consumer.blocks)
    flagged = [i for i, b in enumerate(consumer.blocks) if b.discontinuity]
    assert len(flagged) == 1 and consumer.blocks[flagged[0]].start_seconds * SAMPLE_RATE >= samples_during_outage


def test_mic_that_goes_silent_is_reopened():
    device = FakeDevice()
    sleep = RecordingSleep()
    mic = MicSource(mic_config(no_data_seconds=0.5), PreprocessConfig(), stream_factory=device.factory, sleep=sleep)

    consumer = Consumer(mic)
    wait_for(lambda: mic.stats().state == MIC_OK, "capture to start")
    device.calling_back = False  # the stream stays "active" but delivers nothing
    wait_for(lambda: mic.stats().state == MIC_ERROR, "the silence to be noticed")
    assert "no audio" in mic.stats().last_error
    device.calling_back = True
    wait_for(lambda: mic.stats().state == MIC_OK, "the reopened stream to deliver")
    consumer.stop()

    assert len(device.streams) >= 2
    assert sleep.waits and sleep.waits[0] == 1.0


@pytest.mark.parametrize("present", [True, False])
def test_mic_iterator_honours_the_stop_event_quickly(present):
    device = FakeDevice()
    device.present = present
    stop = threading.Event()
    mic = MicSource(mic_config(), PreprocessConfig(), stream_factory=device.factory, stop_event=stop,
                    sleep=RecordingSleep())
    consumer = Consumer(mic)
    wait_for(lambda: device.open_attempts > 0, "the first open attempt")

    stop.set()
    consumer.thread.join(0.5)

    assert not consumer.thread.is_alive(), "the consumer did not stop within 0.5 s"
    assert all(not s.active for s in device.streams)


def test_closing_the_iterator_leaves_the_shared_stop_event_alone():
    device = FakeDevice()
    stop = threading.Event()
    mic = MicSource(mic_config(), PreprocessConfig(), stream_factory=device.factory, stop_event=stop)

    for _ in mic:
        break

    assert not stop.is_set()
    assert all(not s.active for s in device.streams)


# --- devices and backoff -------------------------------------------------------------------------


DEVICES = [
    InputDevice(0, "HDA Intel PCH: ALC892 Analog (hw:0,0)", 2, 44100.0, False),
    InputDevice(3, "USB PnP Sound Device: Audio (hw:1,0)", 1, 48000.0, False),
    InputDevice(7, "default", 32, 44100.0, True),
]


def test_resolve_device_by_index_name_substring_or_default():
    assert resolve_device(3, DEVICES).name.startswith("USB")
    assert resolve_device("usb pnp", DEVICES).index == 3
    assert resolve_device(None, DEVICES).index == 7


@pytest.mark.parametrize("wanted", [5, "ReSpeaker"])
def test_resolve_device_names_the_available_devices_when_missing(wanted):
    with pytest.raises(MicError) as error:
        resolve_device(wanted, DEVICES)
    message = str(error.value)
    assert repr(wanted) in message and "3: USB PnP" in message and "\n" not in message


def test_list_devices_keeps_only_inputs():
    query = [
        {"name": "speakers", "max_input_channels": 0, "default_samplerate": 48000.0},
        {"name": "mic", "max_input_channels": 2, "default_samplerate": 44100.0},
    ]
    assert list_devices(lambda: query) == [InputDevice(1, "mic", 2, 44100.0, False)]


def test_backoff_doubles_up_to_the_cap_and_resets():
    backoff = Backoff(0.5, 3.0)
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_device_lines_and_stats_are_printable():
    import json

    assert str(DEVICES[2]) == "7: default - 32 ch, 44100 Hz (default)"
    mic = MicSource(mic_config(), PreprocessConfig(), stream_factory=FakeDevice().factory)
    assert json.loads(json.dumps(mic.stats().to_dict()))["state"] == MIC_STARTING
