"""Carrying a quiet window's model outputs into the next window (``monitor.carry``): the rule itself, and the
pipeline running the models less often on a steady Normal sound without hearing a cry later than one hop."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from monitor.capture import AudioBlock
from monitor.carry import CarryOver, Classified, may_carry
from monitor.classify import load_classifiers
from monitor.config import Config, ModelsConfig
from monitor.constants import SAMPLE_RATE, WINDOW_SAMPLES
from monitor.pipeline import Pipeline, WindowOutcome
from monitor.sinks import FanoutSink
from monitor.windows import Window
from tests.helpers.fake_models import TONE_HZ

HOP = 8000
BELOW = 0.02
MAX_RISE_DB = 3.0
QUIET_PREVIOUS = Classified(end_sample=WINDOW_SAMPLES, level_dbfs=-30.0, alert_probability=0.01,
                            model_probs={"yamnet": np.array([0.005, 0.005, 0.99])}, audioset=np.zeros(521))


def _may(previous=QUIET_PREVIOUS, end_sample=WINDOW_SAMPLES + HOP, level_dbfs=-29.0) -> bool:
    return may_carry(previous, end_sample, level_dbfs, HOP, BELOW, MAX_RISE_DB)


def test_a_quiet_window_carries_into_the_next_one():
    assert _may()


@pytest.mark.parametrize("why_not, kwargs", [
    ("no window before", {"previous": None}),
    ("a window between them (gated out, or a gap)", {"end_sample": WINDOW_SAMPLES + 2 * HOP}),
    ("the previous window was not quiet", {"previous": dataclasses.replace(QUIET_PREVIOUS, alert_probability=BELOW)}),
    ("this window is louder by the limit", {"level_dbfs": -30.0 + MAX_RISE_DB}),
])
def test_the_models_run_when(why_not, kwargs):
    assert not _may(**kwargs), why_not


def _window(index: int) -> Window:
    samples = np.zeros(WINDOW_SAMPLES, np.float32)
    return Window(samples, index, index * HOP, samples[-HOP:])


def test_never_two_windows_in_a_row_and_reset_forgets():
    carry = CarryOver(ModelsConfig(carry_below=BELOW, carry_max_rise_db=MAX_RISE_DB), HOP)
    probs, audioset = {"yamnet": np.array([0.0, 0.01, 0.99])}, np.arange(521.0)
    carry.remember(_window(0), -30.0, probs, audioset)
    carried = carry.outputs_for(_window(1), -30.0)
    assert carried is not None and carried[0] is probs and carried[1] is audioset
    assert carry.outputs_for(_window(2), -30.0) is None, "a carried window is never carried on"
    carry.remember(_window(2), -30.0, probs, audioset)
    carry.reset()
    assert carry.outputs_for(_window(3), -30.0) is None, "nothing is carried across a reset"


def test_zero_turns_it_off():
    carry = CarryOver(ModelsConfig(carry_below=0.0), HOP)
    carry.remember(_window(0), -30.0, {"yamnet": np.array([0.0, 0.0, 1.0])}, np.zeros(521))
    assert carry.outputs_for(_window(1), -30.0) is None


# --- in the pipeline, with the fake tone models ----------------------------------------------------

def _tone(label: str, seconds: float, amplitude: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * TONE_HZ[label] * t)).astype(np.float32)


YAMNET_DECIDES = {"weight_yamnet": 1.0, "weight_wav2vec2": 0.0, "require_vote": False}
"""The fake Wav2Vec2 always says Normal: without this no tone could ever alert."""


def _run(fake_models, audio: np.ndarray, carry_below: float) -> tuple[Pipeline, list[WindowOutcome], list[int]]:
    cfg = Config()
    cfg.fusion = dataclasses.replace(cfg.fusion, **YAMNET_DECIDES)
    cfg.models.manifest = str(fake_models)
    cfg.models.carry_below = carry_below
    cfg.mqtt.enabled = False
    classifiers = load_classifiers(cfg)
    calls: list[int] = []
    predict = classifiers.yamnet.predict

    def counted(prepared):
        calls.append(len(prepared))
        return predict(prepared)

    classifiers.yamnet.predict = counted
    outcomes: list[WindowOutcome] = []
    pipeline = Pipeline(cfg, classifiers, FanoutSink([]), on_window=outcomes.append)
    pipeline.process_block(AudioBlock(audio, 0.0))
    pipeline.finish()
    return pipeline, outcomes, calls


def test_a_steady_normal_sound_runs_the_models_every_second_window(fake_models):
    audio = _tone("Normal", 10.0, 0.1)
    _, off, calls_off = _run(fake_models, audio, carry_below=0.0)
    pipeline, on, calls_on = _run(fake_models, audio, carry_below=BELOW)
    gated = sum(o.fused is not None for o in on)
    assert gated == len(calls_off) > 10
    assert pipeline.stats.carried_windows == gated // 2 == gated - len(calls_on)
    for before, this in zip(on, on[1:]):  # a carried window has exactly its predecessor's outputs
        if this.model_probs["yamnet"] is before.model_probs["yamnet"]:
            assert this.window.index == before.window.index + 1
    assert [o.fused.probs.tolist() for o in on[::2]] == [o.fused.probs.tolist() for o in off[::2]]


def test_a_louder_cry_runs_the_models_at_once(fake_models):
    audio = np.concatenate([_tone("Normal", 6.0, 0.02), _tone("Crying", 4.0, 0.2)])
    _, outcomes, _ = _run(fake_models, audio, carry_below=BELOW)
    first_cry = next(o for o in outcomes if o.window.end_seconds > 6.0 + 0.1)
    assert first_cry.model_probs["yamnet"].argmax() == 0, "the first window into a louder cry is classified anew"


def test_a_cry_no_louder_is_heard_within_one_hop(fake_models):
    audio = np.concatenate([_tone("Normal", 6.0, 0.1), _tone("Crying", 4.0, 0.1)])
    _, outcomes, _ = _run(fake_models, audio, carry_below=BELOW)
    into_cry = [o for o in outcomes if o.window.end_seconds > 6.0 + 0.3]
    assert any(o.model_probs["yamnet"].argmax() == 0 for o in into_cry[:2])
    _, events_off, _ = _run(fake_models, audio, carry_below=0.0)
    raised = [e for o in outcomes for e in o.events if e.phase == "start"]
    raised_off = [e for o in events_off for e in o.events if e.phase == "start"]
    assert [e.label for e in raised] == [e.label for e in raised_off] == ["Crying"]
    hop_seconds = HOP / SAMPLE_RATE
    assert 0 <= raised[0].time_audio_s - raised_off[0].time_audio_s <= hop_seconds + 1e-9


# --- the tuner records the models' own scores ----------------------------------------------------

def test_the_tuning_replays_run_the_models_on_every_gated_window(monkeypatch, tmp_path):
    """The operating point is tuned on what the models say; the carry-over is a saving the bench measures at it."""
    import json
    import subprocess

    from bench import replay, tune

    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        result = Path(command[command.index("--result") + 1])
        result.write_text(json.dumps({"events": []}))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(replay.subprocess, "run", fake_run)
    stream = tmp_path / "negative_0.flac"
    tune.replay_streams([(stream, tmp_path / "negative_0.json")], tmp_path / "config.yaml", workers=1)
    assert "--no-carry" in commands[0] and "--no-cascade" in commands[0]

    seen = {}
    monkeypatch.setattr(replay, "worker_ours", lambda cfg, *args: seen.setdefault("cfg", cfg))
    replay.main(["ours", "--stream", str(stream), "--result", str(tmp_path / "r.json"), "--no-carry", "--quiet"])
    assert seen["cfg"].models.carry_below == 0.0
