"""Probability smoothing over time: the trailing mean, its live form, and what it does in the pipeline."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from monitor.capture import AudioBlock
from monitor.classify import load_classifiers
from monitor.config import Config, ConfigError, FusionConfig, parse_config
from monitor.constants import SAMPLE_RATE
from monitor.pipeline import Pipeline, WindowOutcome
from monitor.sinks import FanoutSink
from monitor.smoothing import ProbabilitySmoother, contiguous_segments, trailing_mean
from tests.helpers.fake_models import TONE_HZ

NAN = np.nan


def test_trailing_mean_averages_the_present_rows_of_the_context():
    values = np.array([[1.0, 0.0], [3.0, 2.0], [NAN, NAN], [5.0, 4.0], [7.0, 6.0]])
    out = trailing_mean(values, 3)
    np.testing.assert_allclose(out, [[1, 0], [2, 1], [2, 1], [4, 3], [6, 5]])


def test_trailing_mean_is_nan_only_without_any_present_row_and_identity_for_one_window():
    values = np.array([[NAN, NAN], [NAN, NAN], [1.0, 2.0], [NAN, NAN], [NAN, NAN]])
    out = trailing_mean(values, 2)
    assert np.isnan(out[:2]).all() and np.isnan(out[4]).all()
    np.testing.assert_allclose(out[2:4], [[1, 2], [1, 2]])
    np.testing.assert_array_equal(trailing_mean(values, 1), values)


def test_no_mean_spans_two_segments():
    values = np.array([[10.0], [20.0], [0.0], [2.0]])
    out = trailing_mean(values, 4, segment=np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(out[:, 0], [10, 15, 0, 1])


def test_segments_break_wherever_the_next_window_is_not_one_hop_later():
    end_s = np.array([1.0, 1.5, 2.0, 62.0, 62.5, 70.0])
    np.testing.assert_array_equal(contiguous_segments(end_s, 0.5), [0, 0, 0, 1, 1, 2])


@pytest.mark.parametrize("windows", [1, 2, 3, 4])
def test_the_live_smoother_equals_the_batch_mean_to_the_bit_over_gaps_and_absent_models(windows):
    """The tuner replays ``trailing_mean`` over recorded scores and the monitor runs the smoother: a score on a
    threshold must land on the same side in both."""
    rng = np.random.default_rng(3 + windows)
    count = 200
    yamnet = rng.dirichlet([1, 1, 1], count)
    wav2vec2 = rng.dirichlet([1, 1, 1], count)
    passed = rng.random(count) < 0.8
    wav2vec2[rng.random(count) < 0.3] = NAN
    smoother = ProbabilitySmoother(windows)
    live_y, live_w = [], []
    for i in range(count):
        probs = None
        if passed[i]:
            probs = {"yamnet": yamnet[i]} | ({} if np.isnan(wav2vec2[i, 0]) else {"wav2vec2": wav2vec2[i]})
        out = smoother.push(probs)
        live_y.append(out.get("yamnet", np.full(3, NAN)))
        live_w.append(out.get("wav2vec2", np.full(3, NAN)))
    batch_y = trailing_mean(np.where(passed[:, None], yamnet, NAN), windows)
    batch_w = trailing_mean(np.where(passed[:, None], wav2vec2, NAN), windows)
    np.testing.assert_array_equal(np.array(live_y), batch_y)
    np.testing.assert_array_equal(np.array(live_w), batch_w)


def test_reset_forgets_the_context():
    smoother = ProbabilitySmoother(3)
    smoother.push({"yamnet": np.array([1.0, 0.0, 0.0])})
    smoother.reset()
    out = smoother.push({"yamnet": np.array([0.0, 0.0, 1.0])})
    np.testing.assert_allclose(out["yamnet"], [0, 0, 1])
    assert "wav2vec2" not in out


@pytest.mark.parametrize("value", [0, 21, 1.5])
def test_smooth_windows_is_validated(value):
    with pytest.raises(ConfigError, match="smooth_windows"):
        parse_config(f"fusion:\n  smooth_windows: {value}\n")
    with pytest.raises(ConfigError, match="smooth_windows"):
        FusionConfig().resolve({"smooth_windows": value})


def test_smooth_windows_comes_from_the_operating_point_unless_set():
    assert FusionConfig().resolve().smooth_windows == 1
    assert FusionConfig().resolve({"smooth_windows": 3}).smooth_windows == 3
    assert FusionConfig(smooth_windows=2).resolve({"smooth_windows": 3}).smooth_windows == 2


def _tone(label: str, seconds: float, amplitude: float = 0.1) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * TONE_HZ[label] * t)).astype(np.float32)


def _alerting_windows(fake_models, smooth_windows: int, audio: np.ndarray) -> list[WindowOutcome]:
    cfg = Config()
    cfg.models.manifest = str(fake_models)
    cfg.mqtt.enabled = False
    cfg.fusion = dataclasses.replace(cfg.fusion, smooth_windows=smooth_windows, require_vote=False,
                                     enter_threshold=0.6, exit_threshold=0.4, k_windows=1, n_windows=1)
    outcomes: list[WindowOutcome] = []
    pipeline = Pipeline(cfg, load_classifiers(cfg), FanoutSink([]), on_window=outcomes.append)
    pipeline.process_block(AudioBlock(audio, 0.0))
    return [o for o in outcomes if o.fused is not None and o.fused.alert_label == "Crying"]


def test_a_lone_cry_window_is_averaged_away_and_a_sustained_cry_is_not(fake_models):
    """The fake YAMNet hears a 500 Hz tone as a cry: ~1 s of it among 'Normal' tones alerts one or two windows
    unsmoothed, none with a mean over 4 windows; 4 s of it alerts with either."""
    normal = _tone("Normal", 5.0)
    lone = np.concatenate([normal, _tone("Crying", 1.0), normal])
    sustained = np.concatenate([normal, _tone("Crying", 4.0), normal])
    assert _alerting_windows(fake_models, 1, lone)
    assert not _alerting_windows(fake_models, 4, lone)
    assert _alerting_windows(fake_models, 4, sustained)
