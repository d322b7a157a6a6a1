"""The operating point: tuned by build-models into the manifest, used by the runtime unless config.yaml sets a key;
and the Wav2Vec2 cascade, which must never change a window that can cross the bar."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.misses import CAUSES
from bench.tradeoff import Setting, SweepPoint
from bench.tune import TuneSpec, choose
from monitor.capture import FileReplaySource
from monitor.classify import load_classifiers
from monitor.config import OPERATING_POINT_KEYS, ConfigError, FusionConfig, parse_config
from monitor.constants import ALERT_LABELS
from monitor.fusion import alert_probability, fuse_window, sustained_windows, wav2vec2_decisive_from
from monitor.model_manifest import LADDER_BUDGET, ModelError, describe_recall, read_manifest
from monitor.pipeline import Pipeline
from tests.helpers.fake_models import write_fake_models, write_tone

TUNED = {"weight_yamnet": 0.85, "weight_wav2vec2": 0.15, "alert_on": "sum", "require_vote": False,
         "enter_threshold": 0.8, "enter_threshold_screaming": 0.7, "exit_threshold": 0.5, "k_windows": 3,
         "n_windows": 4, "min_duration_seconds": 0.5, "smooth_windows": 2}


def with_operating_point(manifest: Path, fusion: dict, ladder: list[dict] | None = None,
                         tuned_on: dict | None = None) -> Path:
    doc = json.loads(manifest.read_text())
    doc["operating_point"] = {"fusion": fusion, "setting": "test", "budget_ladder": ladder or [],
                              "tuned_on": tuned_on}
    manifest.write_text(json.dumps(doc))
    return manifest


def ladder_row(budget: float, enter_threshold: float) -> dict:
    return {LADDER_BUDGET: budget, "setting": f"enter {enter_threshold}", "false_alarms_per_hour": budget / 2,
            "recall_10db_up": {"Crying": enter_threshold / 3, "Screaming": 2 / 3},
            "fusion": {**TUNED, "enter_threshold": enter_threshold, "enter_threshold_screaming": enter_threshold}}


LADDER = [ladder_row(2.0, 0.6), ladder_row(0.1, 0.95), ladder_row(0.5, 0.9)]
"""Out of order on purpose: the manifest sorts it by budget."""


def config_for(manifest: Path, yaml: str = ""):
    return parse_config(f"models:\n  manifest: {manifest}\n{yaml}")


def test_null_keys_come_from_the_manifest_and_set_keys_win(tmp_path: Path):
    manifest = with_operating_point(write_fake_models(tmp_path / "models"), TUNED)
    classifiers = load_classifiers(config_for(manifest))
    assert classifiers.resolve_fusion(FusionConfig()).operating_point() == TUNED
    cfg = config_for(manifest, "fusion:\n  enter_threshold: 0.9\n  k_windows: 2\n")
    resolved = classifiers.resolve_fusion(cfg.fusion)
    assert (resolved.enter_threshold, resolved.k_windows, resolved.n_windows) == (0.9, 2, 4)
    assert resolved.enter_threshold_screaming == 0.9, "a threshold set in config.yaml holds for screams too"
    assert Pipeline(cfg, classifiers, sink=None).fusion == resolved


@pytest.mark.parametrize("budget, thresholds", [(None, (0.8, 0.7)), (0.1, (0.95, 0.95)), (0.3, (0.95, 0.95)),
                                                (0.5, (0.9, 0.9)), (1.0, (0.9, 0.9)), (50.0, (0.6, 0.6)),
                                                (0.01, (0.95, 0.95))])
def test_a_false_alarm_budget_takes_the_ladders_row_within_it(tmp_path: Path, budget, thresholds):
    manifest = with_operating_point(write_fake_models(tmp_path / "models"), TUNED, LADDER)
    yaml = "" if budget is None else f"fusion:\n  false_alarm_budget: {budget}\n"
    resolved = load_classifiers(config_for(manifest, yaml)).resolve_fusion(parse_config(yaml).fusion)
    assert (resolved.enter_threshold, resolved.enter_threshold_screaming) == thresholds
    assert (resolved.k_windows, resolved.smooth_windows) == (TUNED["k_windows"], TUNED["smooth_windows"])


def test_the_log_says_which_budgets_row_is_used_in_plain_figures(tmp_path: Path, caplog):
    manifest = read_manifest(with_operating_point(write_fake_models(tmp_path / "models"), TUNED, LADDER))
    with caplog.at_level("INFO", logger="monitor.model_manifest"):
        manifest.operating_point_for(0.7)
    assert "for 0.5 false alarms per hour: enter 0.9" in caplog.text
    assert "recall >= 10 dB Crying 0.30, Screaming 0.67)" in caplog.text
    assert describe_recall({"Crying": 0.5, "Screaming": None}) == "Crying 0.50, Screaming n/a"


def test_keys_set_in_the_config_win_over_the_budgets_row(tmp_path: Path):
    manifest = with_operating_point(write_fake_models(tmp_path / "models"), TUNED, LADDER)
    yaml = "fusion:\n  false_alarm_budget: 0.5\n  k_windows: 2\n"
    resolved = load_classifiers(config_for(manifest, yaml)).resolve_fusion(parse_config(yaml).fusion)
    assert (resolved.enter_threshold, resolved.k_windows) == (0.9, 2)


def test_a_hop_other_than_the_tuned_one_is_warned_about_and_the_tuned_one_is_not(tmp_path: Path, caplog):
    manifest = with_operating_point(write_fake_models(tmp_path / "models"), TUNED, tuned_on={"hop_seconds": 0.5})
    with caplog.at_level("WARNING", logger="monitor.classify"):
        load_classifiers(config_for(manifest, "window:\n  hop_seconds: 0.5\n"))
    assert "tuned at" not in caplog.text
    with caplog.at_level("WARNING", logger="monitor.classify"):
        load_classifiers(config_for(manifest, "window:\n  hop_seconds: 0.25\n"))
    assert "window.hop_seconds is 0.25 s but the operating point" in caplog.text
    assert "tuned at 0.5 s" in caplog.text and "re-run build-models" in caplog.text
    assert read_manifest(with_operating_point(manifest, TUNED)).tuned_hop_seconds is None, "older models: no warning"


def test_a_false_alarm_budget_without_a_tuned_ladder_is_a_clear_error(tmp_path: Path):
    manifest = with_operating_point(write_fake_models(tmp_path / "models"), TUNED)
    with pytest.raises(ModelError, match="false_alarm_budget.*budget ladder.*build-models"):
        load_classifiers(config_for(manifest, "fusion:\n  false_alarm_budget: 1\n"))
    with pytest.raises(ConfigError, match="false_alarm_budget"):
        parse_config("fusion:\n  false_alarm_budget: -1\n")


def test_a_ladder_row_with_bad_settings_is_refused(tmp_path: Path):
    bad = [ladder_row(0.1, 0.95), {**ladder_row(1.0, 0.9), "fusion": {**TUNED, "k_windows": 9}}]
    with pytest.raises(ModelError, match="operating_point"):
        read_manifest(with_operating_point(write_fake_models(tmp_path / "models"), TUNED, bad))


def test_screams_threshold_comes_from_the_manifest_else_follows_the_cries():
    tuned_alike = {k: v for k, v in TUNED.items() if k != "enter_threshold_screaming"}
    assert FusionConfig().resolve(tuned_alike).enter_threshold_screaming == 0.8
    assert FusionConfig().resolve(TUNED).enter_threshold_of("Screaming") == 0.7
    assert FusionConfig().resolve(TUNED).enter_threshold_of("Crying") == 0.8
    both = parse_config("fusion:\n  enter_threshold: 0.9\n  enter_threshold_screaming: 0.6\n").fusion.resolve(TUNED)
    assert (both.enter_threshold, both.enter_threshold_screaming) == (0.9, 0.6)
    with pytest.raises(ConfigError, match="exit_threshold.*must not exceed fusion.enter_threshold_screaming"):
        parse_config("fusion:\n  enter_threshold_screaming: 0.45\n").fusion.resolve(TUNED)


def test_models_without_an_operating_point_use_the_schema_fallbacks(tmp_path: Path):
    manifest = write_fake_models(tmp_path / "models")
    resolved = load_classifiers(config_for(manifest)).resolve_fusion(FusionConfig())
    fields = {f.name: f for f in dataclasses.fields(FusionConfig)}

    def fallback(name: str):
        meta = fields[name].metadata
        return meta["fallback"] if "fallback" in meta else fallback(meta["follows"])

    assert resolved.operating_point() == {name: fallback(name) for name in OPERATING_POINT_KEYS}


def test_an_override_that_breaks_a_rule_with_the_tuned_values_is_refused():
    cfg = parse_config("fusion:\n  enter_threshold: 0.3\n")
    with pytest.raises(ConfigError, match="exit_threshold.*must not exceed fusion.enter_threshold"):
        cfg.fusion.resolve(TUNED)
    with pytest.raises(ConfigError, match="k_windows"):
        parse_config("fusion:\n  k_windows: 5\n").fusion.resolve(TUNED)


@pytest.mark.parametrize("bad", [{"enter_threshold": 1.5}, {"k_windows": "two"}, {"surprise": 1}])
def test_a_manifest_with_a_bad_operating_point_is_refused(tmp_path: Path, bad: dict):
    manifest = with_operating_point(write_fake_models(tmp_path / "models"), {**TUNED, **bad})
    with pytest.raises(ModelError, match="operating_point"):
        read_manifest(manifest)


def test_a_decision_component_refuses_unresolved_settings():
    from monitor.events import EventTracker

    with pytest.raises(ValueError, match="unresolved"):
        EventTracker(FusionConfig(), "dev", {}, stream_start_wall=datetime.now(timezone.utc))


# --- the cascade ---------------------------------------------------------------------------------

probabilities = st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3).filter(lambda v: sum(v) > 1e-3).map(
    lambda v: np.array(v) / sum(v))


@settings(max_examples=300, deadline=None)
@given(yamnet=probabilities, wav2vec2=probabilities, weight=st.floats(0.05, 1.0), exit_=st.floats(0.05, 0.9),
       vote=st.booleans(), sustained=st.floats(0.05, 1.0), span=st.sampled_from([0.0, 30.0]))
def test_below_the_bar_wav2vec2_cannot_change_the_window(yamnet, wav2vec2, weight, exit_, vote, sustained, span):
    cfg = FusionConfig(weight_yamnet=weight, weight_wav2vec2=1 - weight, exit_threshold=exit_,
                       enter_threshold=max(exit_, 0.55), require_vote=vote, sustained_threshold=sustained,
                       sustained_seconds=span).resolve()
    if alert_probability(yamnet) >= wav2vec2_decisive_from(cfg):
        return
    audioset = np.zeros(521)
    for fused in (fuse_window(yamnet, wav2vec2, audioset, cfg), fuse_window(yamnet, None, audioset, cfg)):
        assert fused.alert_label is None
        assert all(fused.prob(label) < cfg.exit_threshold for label in ALERT_LABELS)
        assert not sustained_windows(np.array([fused.alert_mass]), None, cfg)[0], "nor counts towards a lasting cry"


def test_the_bar_is_tight():
    """Just above the bar, a certain Wav2Vec2 does lift the fused score to exit_threshold."""
    cfg = FusionConfig().resolve()
    bar = wav2vec2_decisive_from(cfg)
    yamnet = np.array([bar + 1e-6, 0.0, 1 - bar - 1e-6])
    fused = fuse_window(yamnet, np.array([1.0, 0.0, 0.0]), np.zeros(521), cfg)
    assert fused.prob("Crying") >= cfg.exit_threshold
    assert wav2vec2_decisive_from(dataclasses.replace(cfg, weight_yamnet=0.0)) == float("-inf")


def _replay(manifest: Path, clips: list[Path], cascade: bool):
    # the fake Wav2Vec2 always says Normal: without the vote the fake YAMNet's tones raise events
    cfg = config_for(manifest, f"  wav2vec2_cascade: {str(cascade).lower()}\nfusion:\n  require_vote: false\n")
    sink = _Collect()
    pipeline = Pipeline(cfg, load_classifiers(cfg), sink)
    stats = pipeline.run(FileReplaySource(clips, cfg.audio, cfg.preprocess))
    return stats, [(e["phase"], e["label"], e["start_audio_s"], e["end_audio_s"], e["models"]) for e in sink.events]


class _Collect:
    def __init__(self):
        self.events = []

    def handle_event(self, payload):
        self.events.append(payload)

    def publish_status(self, payload):
        pass

    def close(self, timeout=None):
        pass


def test_the_cascade_skips_quiet_windows_and_changes_no_event(tmp_path: Path):
    manifest = write_fake_models(tmp_path / "models")
    clips = [write_tone(tmp_path / f"{i}.wav", label, seconds=4.0, seed=i)
             for i, label in enumerate(["Normal", "Crying", "Normal", "Screaming", "Normal"])]
    with_cascade, events = _replay(manifest, clips, cascade=True)
    without, reference = _replay(manifest, clips, cascade=False)
    assert events == reference and any(phase == "start" for phase, *_ in events)
    assert with_cascade.wav2vec2_skipped > 0 and without.wav2vec2_skipped == 0
    assert with_cascade.wav2vec2_skipped < with_cascade.gated_windows


# --- choosing the operating point ------------------------------------------------------------------

def point(fa: float, cry: float, scream: float, latency: float, enter: float) -> SweepPoint:
    recall = {"Crying": cry, "Screaming": scream}
    return SweepPoint(Setting(0.7, True, enter, 2, 3), fa, recall, recall, latency)


def test_choose_takes_the_most_recall_within_both_bars():
    spec = TuneSpec(max_false_alarms_per_hour=0.1, max_latency_p95_s=1.5, min_recall=0.75)
    points = [point(0.0, 0.8, 0.76, 1.2, 0.9), point(0.08, 0.95, 0.8, 1.4, 0.7), point(0.3, 1.0, 1.0, 1.0, 0.5),
              point(0.05, 1.0, 0.9, 2.5, 0.6)]
    chosen, reason = choose(points, spec)
    assert chosen.setting.enter_threshold == 0.7
    assert "within 0.1 false alarms per hour" in reason and "within p95 latency" in reason


def test_latency_gives_way_before_cries_are_missed():
    spec = TuneSpec(max_false_alarms_per_hour=0.1, max_latency_p95_s=1.5, min_recall=0.75)
    chosen, reason = choose([point(0.0, 0.9, 0.8, 2.0, 0.9), point(0.05, 0.6, 0.6, 1.0, 0.8),
                             point(0.5, 1.0, 1.0, 1.0, 0.5)], spec)
    assert chosen.setting.enter_threshold == 0.9 and "no setting that good reaches p95 latency" in reason


def test_choose_steps_the_false_alarm_budget_up_until_cries_are_caught():
    spec = TuneSpec(max_false_alarms_per_hour=0.1, min_recall=0.75, budget_steps=(0.5, 2.0, 5.0))
    deaf = point(0.05, 0.3, 0.3, 5.0, 0.95)
    fair = point(1.5, 0.8, 0.76, 4.0, 0.7)
    noisy = point(4.0, 0.95, 0.9, 3.0, 0.5)
    chosen, reason = choose([deaf, fair, noisy], spec)
    assert chosen is fair and "smallest budget that does is 2 per hour" in reason
    chosen, reason = choose([deaf, point(8.0, 0.9, 0.9, 3.0, 0.5)], spec)
    assert chosen is deaf and "still does not reach" in reason


def test_choose_never_picks_a_setting_deaf_to_a_label():
    spec = TuneSpec(min_recall=0.5)
    chosen, _ = choose([point(0.0, 0.0, 1.0, 1.0, 0.95), point(0.05, 0.6, 0.5, 1.0, 0.8)], spec)
    assert chosen.setting.enter_threshold == 0.8


# --- the tuning streams ----------------------------------------------------------------------------

def _tone_clips(folder: Path, split: str, labels: list[str]) -> list:
    from training.data import Clip

    return [Clip(write_tone(folder / f"{split}-{i}-{label}.wav", label, seconds=3.0, seed=i), label,
                 f"{split}-{i}", "tones", 3.0, 16000) for i, label in enumerate(labels)]


def test_tuning_uses_train_and_val_only_and_writes_an_operating_point(tmp_path: Path):
    from bench.stream import read_background, read_truth
    from bench.tune import TuneFiles, tune_operating_point

    split = {"train": _tone_clips(tmp_path, "train", ["Normal"] * 4 + ["Crying"]),
             "val": _tone_clips(tmp_path, "val", ["Normal"] * 3 + ["Crying", "Screaming"]),
             "test": _tone_clips(tmp_path, "test", ["Normal", "Crying", "Screaming"])}
    manifest = write_fake_models(tmp_path / "models")
    cfg = parse_config("fusion:\n  require_vote: false\n")
    spec = TuneSpec(negative_hours=0.04, negative_parts=2, positive_hours=0.1)
    result = tune_operating_point(split, manifest, cfg, tmp_path / "tune", spec, progress=False)

    assert set(result["fusion"]) == set(OPERATING_POINT_KEYS)
    FusionConfig().resolve(result["fusion"])  # valid for the runtime
    budgets = [row[LADDER_BUDGET] for row in result["budget_ladder"]]
    assert budgets == sorted(budgets) and budgets
    for row in result["budget_ladder"]:
        assert row["false_alarms_per_hour"] <= row[LADDER_BUDGET]
        assert FusionConfig().resolve(row["fusion"]).operating_point() == row["fusion"]
    files = TuneFiles(tmp_path / "tune")
    sounded = []
    for audio, truth in [files.negative(0), files.negative(1), files.positive]:
        assert audio.is_file()
        sounded += [b.clip for b in read_background(truth)] + [t.clip for t in read_truth(truth)[0]]
    assert sounded and not any(name.startswith("test-") for name in sounded)
    negatives = [b.clip for part in (0, 1) for b in read_background(files.negative(part)[1])]
    assert all(name.startswith(("train-", "val-")) for name in negatives)
    assert all(t.clip.startswith("val-") for t in read_truth(files.positive[1])[0])
    assert sum(result["tuned_on"]["insertions"].values()) >= 3
    assert result["tuned_on"]["hop_seconds"] == cfg.window.hop_seconds
    # every val insertion the chosen point misses is put down to a cause (bench.misses)
    for label, count in result["tuned_on"]["insertions"].items():
        causes = [(cause, n) for per_snr in result["miss_causes"][label].values() for cause, n in per_snr.items()]
        assert all(cause in CAUSES for cause, _ in causes)
        assert sum(n for _, n in causes) == round(count * (1 - result["chosen"]["recall"][label]))
        unheard = result["misses_unheard_by_audioset"][label]
        assert set(unheard) == set(result["miss_causes"][label])
        assert all(0 <= unheard[snr] <= sum(result["miss_causes"][label][snr].values()) for snr in unheard)


def test_without_cries_in_val_the_fallbacks_are_kept_and_said(tmp_path: Path):
    from bench.tune import TuneFiles, tune_operating_point

    split = {"train": _tone_clips(tmp_path, "train", ["Normal", "Crying"]),
             "val": _tone_clips(tmp_path, "val", ["Normal"]), "test": []}
    result = tune_operating_point(split, write_fake_models(tmp_path / "models"), parse_config(""), tmp_path / "tune",
                                  TuneSpec(negative_hours=0.01), progress=False)
    assert result["fusion"] == {} and "no cry or scream" in result["reason"]
    assert json.loads(TuneFiles(tmp_path / "tune").result.read_text())["fusion"] == {}


@pytest.mark.parametrize("negative, positive, parts", [(12.0, 2.0, 2), (12.0, 2.0, 3), (0.2, 0.2, 2), (6.0, 1.0, 1)])
def test_negative_parts_even_out_the_replay_processes(negative: float, positive: float, parts: int):
    from bench.tune import negative_part_hours

    hours = negative_part_hours(TuneSpec(negative_hours=negative, positive_hours=positive, negative_parts=parts))
    assert len(hours) == parts and sum(hours) == pytest.approx(negative) and min(hours) > 0
    if hours[-1] < hours[0]:
        assert hours[-1] + positive == pytest.approx(hours[0]), "the last process replays the positive stream too"
