"""A microphone lost mid-cry: the alarm ends after ``fusion.hold_seconds`` without audio, saying why, instead of
staying on until the microphone returns (the audio clock, which ends events, stops while it is away)."""

from __future__ import annotations

import threading

import pytest

from monitor.capture import AudioClock, MicSource
from monitor.config import PreprocessConfig
from monitor.constants import SAMPLE_RATE
from monitor.pipeline import NO_AUDIO_REASON, Pipeline
from monitor.sinks import FanoutSink
from tests.helpers.audio import FakeDevice, ManualClock, RecordingSleep, mic_config, wait_for
from tests.helpers.fake_models import TONE_HZ, fake_runtime, tone_blocks

BLOCK_SECONDS = 0.1


def phases(events: list[dict]) -> list[tuple[str, str]]:
    return [(e["phase"], e["label"]) for e in events if e["phase"] != "update"]


def test_an_alarm_ends_once_no_audio_came_for_hold_seconds(fake_models):
    cfg, classifiers = fake_runtime(fake_models)
    clock, audio_clock = ManualClock(), AudioClock()
    pipeline = Pipeline(cfg, classifiers, FanoutSink([]), clock=clock)
    hold = pipeline.fusion.hold_seconds
    for block in tone_blocks("Crying", 4.0, audio_clock):
        pipeline.process_block(block)
        clock.now += BLOCK_SECONDS
    assert phases(pipeline.stats.events) == [("start", "Crying")]

    clock.now += hold - 0.2  # the microphone is away, but not yet for hold_seconds: the cry may go on
    pipeline.idle()
    assert phases(pipeline.stats.events) == [("start", "Crying")]
    clock.now += 0.3
    pipeline.idle()
    end = pipeline.stats.events[-1]
    assert (end["phase"], end["label"]) == ("end", "Crying")
    assert f"ended: {NO_AUDIO_REASON} for {hold:.0f} s" in end["reason"]
    assert end["end_audio_s"] == pytest.approx(pipeline.stats.audio_seconds, abs=1.0), "at the audio last heard"
    pipeline.idle()
    assert [e["phase"] for e in pipeline.stats.events].count("end") == 1, "ended once"

    for block in tone_blocks("Crying", 8.0, audio_clock):  # the microphone is back and the baby still cries
        pipeline.process_block(block)
        clock.now += BLOCK_SECONDS
    pipeline.finish()
    starts = [e for e in pipeline.stats.events if e["phase"] == "start"]
    assert len(starts) == 2 and starts[1]["event_id"] != starts[0]["event_id"], "a new event after the outage"
    assert pipeline.stats.events[-1]["reason"].endswith("ended: stream finished")


def test_idle_ticks_during_a_cry_do_not_end_it(fake_models):
    """``idle`` also runs after every block: while audio flows, only the audio clock ends events."""
    cfg, classifiers = fake_runtime(fake_models)
    clock, audio_clock = ManualClock(), AudioClock()
    pipeline = Pipeline(cfg, classifiers, FanoutSink([]), clock=clock)
    for block in tone_blocks("Crying", 12.0, audio_clock):
        pipeline.process_block(block)
        clock.now += BLOCK_SECONDS
        pipeline.idle()
    assert phases(pipeline.stats.events) == [("start", "Crying")]


def test_unplugged_microphone_ends_the_alarm_through_the_live_source(fake_models):
    """The real MicSource and a fake device crying at real-time pace; the device is unplugged mid-cry."""
    cfg, classifiers = fake_runtime(fake_models)
    cfg.fusion.hold_seconds = 1.0
    device = FakeDevice(rate=SAMPLE_RATE, channels=1, amplitude=0.3, period=BLOCK_SECONDS, hz=TONE_HZ["Crying"])
    stop = threading.Event()
    pipeline = Pipeline(cfg, classifiers, FanoutSink([]))
    mic = MicSource(mic_config(block_seconds=BLOCK_SECONDS, retry_min_seconds=0.2, retry_max_seconds=0.4),
                    PreprocessConfig(), stream_factory=device.factory, stop_event=stop, sleep=RecordingSleep(),
                    on_idle=pipeline.idle)
    runner = threading.Thread(target=pipeline.run, args=(mic, stop), daemon=True)
    runner.start()
    try:
        wait_for(lambda: any(e["phase"] == "start" for e in pipeline.stats.events), "the cry to raise an alarm")
        device.unplug()
        wait_for(lambda: any(e["phase"] == "end" for e in pipeline.stats.events), "the alarm to end")
    finally:
        stop.set()
        runner.join(10.0)
    end = next(e for e in pipeline.stats.events if e["phase"] == "end")
    assert NO_AUDIO_REASON in end["reason"]
    assert not runner.is_alive()
