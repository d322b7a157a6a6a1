"""The pipeline across a discontinuity (a new replay file, a reopened microphone, dropped blocks): no
window joins audio that was never contiguous, and the gate's noise floor starts again."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf

from monitor.capture import AudioBlock, FileReplaySource
from monitor.classify import load_classifiers
from monitor.config import Config
from monitor.constants import SAMPLE_RATE, WINDOW_SAMPLES
from monitor.gate import PASS_REASONS
from monitor.pipeline import Pipeline, WindowOutcome
from monitor.sinks import FanoutSink
from tests.helpers.fake_models import TONE_HZ

LOUD_NOISE_RMS = 0.1
"""The first recording's room: steady noise about -20 dBFS, so its noise floor sits there."""
QUIET_CRY_AMPLITUDE = 0.01
"""The second recording: a cry tone about -43 dBFS, far under the first room's floor + margin."""
ROOM_SECONDS = 20.0
CRY_SECONDS = 3.0


def _pipeline(fake_models, **fusion) -> tuple[Pipeline, list[WindowOutcome]]:
    cfg = Config()
    cfg.fusion = dataclasses.replace(cfg.fusion, **fusion)
    cfg.models.manifest = str(fake_models)
    cfg.mqtt.enabled = False
    outcomes: list[WindowOutcome] = []
    return Pipeline(cfg, load_classifiers(cfg), FanoutSink([]), on_window=outcomes.append), outcomes


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (LOUD_NOISE_RMS * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)


def _cry(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (QUIET_CRY_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ["Crying"] * t)).astype(np.float32)


def test_replayed_files_never_share_a_window(tmp_path, fake_models):
    lengths = [1.3, 2.2, 0.5, 1.7]  # 0.5 s is shorter than a window: it yields none of its own
    paths = []
    for i, seconds in enumerate(lengths):
        paths.append(tmp_path / f"part{i}.wav")
        sf.write(paths[-1], _noise(seconds, seed=i), SAMPLE_RATE, subtype="FLOAT")
    pipeline, outcomes = _pipeline(fake_models)
    pipeline.run(FileReplaySource(paths, pipeline.cfg.audio, pipeline.cfg.preprocess))

    bounds = np.cumsum([0] + [round(s * SAMPLE_RATE) for s in lengths])
    files_of = [set(np.searchsorted(bounds, [o.window.start_sample, o.window.end_sample - 1], side="right"))
                for o in outcomes]
    assert outcomes and all(len(files) == 1 for files in files_of), "a window joined two files"
    assert {files.pop() for files in files_of} == {1, 2, 4}, "every file of a window's length or more is heard"
    hop = round(pipeline.cfg.window.hop_seconds * SAMPLE_RATE)
    assert len(outcomes) == sum((round(s * SAMPLE_RATE) - WINDOW_SAMPLES) // hop + 1
                                for s in lengths if s * SAMPLE_RATE >= WINDOW_SAMPLES)


@pytest.mark.parametrize("discontinuity", [True, False])
def test_the_noise_floor_starts_again_after_a_discontinuity(fake_models, discontinuity):
    pipeline, outcomes = _pipeline(fake_models)
    pipeline.process_block(AudioBlock(_noise(ROOM_SECONDS), 0.0))
    assert outcomes[-1].gate.floor_known, "the loud room's floor is known before the gap"
    heard_before = len(outcomes)
    pipeline.process_block(AudioBlock(_cry(CRY_SECONDS), ROOM_SECONDS, discontinuity=discontinuity))
    after = [o for o in outcomes[heard_before:] if o.window.start_seconds >= ROOM_SECONDS]

    assert after
    if discontinuity:  # a new room: warm-up again, and the quiet cry reaches the models
        assert not any(o.gate.floor_known for o in after)
        assert all(o.gate.reason in PASS_REASONS for o in after)
        assert all(o.fused is not None and o.fused.votes["yamnet"] == "Crying" for o in after)
    else:  # contiguous audio keeps the floor: the same cry is under the loud room's floor
        assert all(o.gate.floor_known and o.gate.reason not in PASS_REASONS for o in after)


def test_the_status_message_counts_what_the_run_counts(fake_models):
    pipeline, outcomes = _pipeline(fake_models)
    pipeline.process_block(AudioBlock(_noise(4.0), 0.0))
    pipeline.process_block(AudioBlock(_cry(CRY_SECONDS), 4.0, discontinuity=True))
    status = pipeline.reporter.snapshot()

    stats = pipeline.stats
    assert status["windows_processed"] == stats.windows == len(outcomes)
    assert status["gate"]["passed"] == stats.gated_windows == sum(o.gate.passed for o in outcomes) > 0
    assert status["inference_ms"]["yamnet"]["count"] == stats.inference["yamnet"].count == stats.gated_windows
    assert status["audio_seconds"] == round(stats.audio_seconds, 1) == 4.0 + CRY_SECONDS


def test_audioset_laughter_keeps_a_cry_tone_from_alerting_and_is_counted(fake_models):
    """The heads hear the cry tone and alert; were AudioSet to hear laughter over it, no window alerts, no event is
    raised, and the run (and so the health message) counts every vetoed window."""
    from monitor.constants import YAMNET_VETO_CLASSES

    def run(laughter: float):
        pipeline, outcomes = _pipeline(fake_models, require_vote=False, weight_wav2vec2=0.0)  # fake Wav2Vec2: Normal
        classify = pipeline.classify

        def with_laughter(window, level_dbfs):
            model_probs, audioset = classify(window, level_dbfs)
            audioset = np.array(audioset, copy=True)
            audioset[..., list(YAMNET_VETO_CLASSES["laughter"])] = laughter
            return model_probs, audioset

        pipeline.classify = with_laughter
        pipeline.process_block(AudioBlock(_cry(CRY_SECONDS) * 30, 0.0))
        pipeline.finish()
        return pipeline, [o.fused for o in outcomes if o.fused is not None]

    control, heard = run(laughter=0.0)
    assert heard and all(f.votes["yamnet"] == "Crying" for f in heard)
    alerting = sum(f.alert_label == "Crying" for f in heard)
    assert alerting > 0 and control.stats.event_messages > 0 and control.stats.vetoed == {}

    vetoed_run, heard = run(laughter=0.9)
    assert all(f.alert_label is None for f in heard) and vetoed_run.stats.event_messages == 0
    assert sum(f.vetoed_by == "laughter" for f in heard) == alerting
    assert vetoed_run.stats.vetoed == {"laughter": alerting}
    assert vetoed_run.reporter.snapshot()["alerts_vetoed"] == {"laughter": alerting}
