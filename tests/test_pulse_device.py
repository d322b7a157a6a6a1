"""The real `nursery-monitor run` on a real sound server: a private PulseAudio whose null sink's monitor is the
microphone (``audio.device: pulse``, through ALSA's pulse plugin), a real mosquitto, sounds played with ``paplay``.

- a held-out cry played into the sink gives a Crying start on MQTT (real models); how long after ``paplay``
  started the message arrived is recorded (``record_property`` and ``build/reports/live/latency.json``), not
  asserted: the bar of issue 13 is 2 s, a figure for the report;
- the sink unloaded mid-run gives ``mic_error`` in the health message while the process stays up and keeps
  feeding the systemd watchdog; the sink loaded again gives capture and events again, with the wall time the
  cry was heard (fake tone models: fast and offline).

Skipped (with the reason) only when the PulseAudio binaries are missing: `scripts/setup.sh` installs them.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from monitor.capture import MIC_ERROR, MIC_OK
from monitor.classify import load_classifiers
from monitor.config import load_config
from monitor.mqtt import Topics
from monitor.paths import build_dir, default_manifest_csv, models_dir
from tests.helpers.broker import Subscriber, wait_until
from tests.helpers.daemon import (
    DEVICE_ID,
    EVENTS_QUICKLY_OVER,
    RunningDaemon,
    stderr_problems,
    tone_scene,
    write_config,
)
from tests.helpers.pulse_server import PulseServer, missing_tools
from tests.helpers.systemd import PING

pytestmark = pytest.mark.skipif(bool(missing_tools()), reason=f"PulseAudio is not installed (missing "
                                f"{', '.join(missing_tools())}; Debian: apt-get install pulseaudio pulseaudio-utils "
                                f"libasound2-plugins)")

REPO = Path(__file__).resolve().parents[1]
TOPICS = Topics.for_device("nursery", DEVICE_ID)
LIVE_AUDIO = {"device": "pulse", "retry_min_seconds": 0.2, "retry_max_seconds": 1.0}
GENEROUS_TIMEOUT_SECONDS = 30.0
"""Only a bound so a broken set-up fails instead of hanging; the latency itself is a reported figure."""
OUTAGE_SECONDS = 6.0
LEAD_SECONDS = 0.5
"""Quiet before the tone in the played file."""
CRY_SECONDS = 3.0
WALL_TOLERANCE_SECONDS = 1.5
"""A tone's event starts with its first alerting window, which may begin up to a whole window (0.975 s) before
the tone when a sliver of tone is enough for the fake model, and the capture time PortAudio reports through
ALSA's pulse plugin moves by a few tenths of a second from run to run (ten runs: 0.33 to 1.22 s before the
tone): within this of the tone's wall time. The old audio-clock times were off by the whole outage (6 s)."""
LATENCY_REPORT = "reports/live/latency.json"


@pytest.fixture
def pulse(tmp_path_factory, monkeypatch):
    """The private sound server; this process and the daemons it starts reach it (and only it)."""
    server = PulseServer(tmp_path_factory.mktemp("pulse"))
    server.start()
    for key in ("PULSE_SERVER", "XDG_RUNTIME_DIR", "PULSE_RUNTIME_PATH"):
        monkeypatch.setenv(key, server.env[key])
    yield server
    server.stop()


def health_messages(subscriber: Subscriber) -> list[dict]:
    return [m.json() for m in subscriber.messages(TOPICS.health)]


def mic_states(subscriber: Subscriber) -> list[str]:
    return [h["mic"]["state"] for h in health_messages(subscriber)]


def starts(subscriber: Subscriber, label: str) -> list[tuple[float, dict]]:
    """(arrival time, message) of every start of ``label``."""
    return [(m.received_at, m.json()) for m in subscriber.messages(TOPICS.event)
            if m.json()["phase"] == "start" and m.json()["label"] == label]


def crying_state(subscriber: Subscriber) -> str | None:
    """The latest retained ON / OFF of the Crying state topic."""
    states = subscriber.messages(TOPICS.state["Crying"])
    return states[-1].text if states else None


def wait_for_capture(subscriber: Subscriber, after: int = 0) -> bool:
    """A health message after the first ``after`` saying the microphone captures."""
    return wait_until(lambda: MIC_OK in mic_states(subscriber)[after:], GENEROUS_TIMEOUT_SECONDS)


def iso_seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_sink_removed_and_restored_gives_mic_error_then_capture_and_events(tmp_path, fake_models, broker, pulse,
                                                                          notify_listener, record_property):
    clip = tone_scene(tmp_path / "cry.wav", [(None, LEAD_SECONDS), ("Crying", CRY_SECONDS), (None, 0.5)])
    config = write_config(tmp_path, fake_models, broker, audio=LIVE_AUDIO, fusion=EVENTS_QUICKLY_OVER)
    subscriber = Subscriber(broker, "nursery/#")
    try:
        with RunningDaemon("run", "--config", str(config)) as daemon:
            assert wait_for_capture(subscriber), daemon.text()
            pulse.play(clip).wait(GENEROUS_TIMEOUT_SECONDS)
            assert wait_until(lambda: starts(subscriber, "Crying"), GENEROUS_TIMEOUT_SECONDS), daemon.text()

            pulse.unload_sink()
            assert wait_until(lambda: MIC_ERROR in mic_states(subscriber), GENEROUS_TIMEOUT_SECONDS), daemon.text()
            outage_seen = time.monotonic()
            wait_until(lambda: time.monotonic() - outage_seen >= OUTAGE_SECONDS, OUTAGE_SECONDS + 1)
            pings_during_outage = notify_listener.count_since(outage_seen, PING)
            assert daemon.alive, daemon.text()
            assert MIC_OK not in mic_states(subscriber)[-2:], "still no microphone"

            seen = len(health_messages(subscriber))
            pulse.load_sink()
            assert wait_for_capture(subscriber, after=seen), daemon.text()
            assert wait_until(lambda: crying_state(subscriber) == "OFF", GENEROUS_TIMEOUT_SECONDS), "first event over"
            played_at = time.time()
            pulse.play(clip).wait(GENEROUS_TIMEOUT_SECONDS)
            assert wait_until(lambda: len(starts(subscriber, "Crying")) >= 2, GENEROUS_TIMEOUT_SECONDS), daemon.text()
            assert daemon.terminate() == 0
    finally:
        subscriber.close()

    errors = [h["mic"] for h in health_messages(subscriber) if h["mic"]["state"] == MIC_ERROR]
    assert errors and errors[0]["last_error"], "the health message says why"
    assert pings_during_outage >= OUTAGE_SECONDS / 1.0, "the watchdog was fed while the microphone was away"
    second = starts(subscriber, "Crying")[1][1]
    cry_heard = played_at + LEAD_SECONDS
    record_property("start_time_minus_cry_wall_s", round(iso_seconds(second["start_time"]) - cry_heard, 3))
    assert abs(iso_seconds(second["start_time"]) - cry_heard) < WALL_TOLERANCE_SECONDS, second
    ends = [m.json() for m in subscriber.messages(TOPICS.event) if m.json()["phase"] == "end"]
    assert len(ends) == 2 and all((tmp_path / "clips" / end["clip"]).is_file() for end in ends), "each alert's sound"
    assert daemon.matching("microphone error"), "the loss is logged"
    assert daemon.matching("microphone recovered"), "and the recovery"
    assert stderr_problems(daemon.text()) == []


# --- a real cry through the real models ------------------------------------------------------------------------


def event_making_cry(cfg) -> Path:
    """A held-out (test-split) cry clip that the same pipeline, replayed, turns into a Crying event."""
    from tests.helpers.replay import clip_events
    from tests.helpers.replay import starts as replay_starts
    from training.data import load_dataset, manifest_sha256
    from training.split import load_or_make_split, split_file_for

    manifest = default_manifest_csv()
    digest = manifest_sha256(manifest)
    test_split = load_or_make_split(load_dataset(manifest), split_file_for(digest), manifest_hash=digest)["test"]
    runtime = (cfg, load_classifiers(cfg))
    for clip in sorted((c for c in test_split if c.label == "Crying"), key=lambda c: c.path.name):
        if replay_starts(clip_events(clip.path, runtime)) == ["Crying"]:
            return clip.path
    pytest.fail("no test-split cry clip raises a Crying event on replay")


@pytest.mark.models
@pytest.mark.skipif(not (models_dir() / "manifest.json").is_file(), reason="models not built: run `make models`")
@pytest.mark.skipif(not default_manifest_csv().is_file(), reason="../shared/data not found")
def test_cry_played_into_the_sink_starts_a_crying_event_on_mqtt(tmp_path, broker, pulse, record_property):
    base = load_config(REPO / "config.yaml")
    clip = event_making_cry(base)
    config = write_config(tmp_path, models_dir() / "manifest.json", broker, audio=LIVE_AUDIO,
                          models={"use_wav2vec2": base.models.use_wav2vec2})
    subscriber = Subscriber(broker, "nursery/#")
    try:
        with RunningDaemon("run", "--config", str(config)) as daemon:
            assert wait_for_capture(subscriber), daemon.text()
            played_at = time.monotonic()
            player = pulse.play(clip)
            assert wait_until(lambda: starts(subscriber, "Crying"), GENEROUS_TIMEOUT_SECONDS), daemon.text()
            arrived_at, message = starts(subscriber, "Crying")[0]
            player.wait(GENEROUS_TIMEOUT_SECONDS)
            assert daemon.terminate() == 0
    finally:
        subscriber.close()

    latency = arrived_at - played_at
    figures = {"clip": str(clip.relative_to(default_manifest_csv().parent)), "start_after_paplay_s": round(latency, 3),
               "bar_s": 2.0, "confidence": message["confidence"], "models": message["model_versions"]}
    record_property("start_after_paplay_s", figures["start_after_paplay_s"])
    report = build_dir() / LATENCY_REPORT
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"live cry: Crying start on MQTT {latency:.2f} s after paplay started ({figures['clip']})")
    assert stderr_problems(daemon.text()) == []
