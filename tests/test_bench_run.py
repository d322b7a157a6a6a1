"""`nursery-monitor bench` end to end on tone clips and the fake models: the cascade changes no event, the monitor's
own memory is measured alone, the negative-only and the episode streams are scored, and the sweep reproduces the live
events."""

from __future__ import annotations

import json
from pathlib import Path

from bench.misses import CAUSES
from bench.run import main
from monitor.config import FusionConfig
from monitor.model_manifest import LADDER_BUDGET
from tests.helpers.fake_models import write_fake_models, write_tone

LABELS_USED = ["Normal"] * 5 + ["Crying"] * 2 + ["Screaming"]


def test_bench_runs_end_to_end_on_fake_models(tmp_path: Path):
    rows = ["path,label,source,group"]
    for i, label in enumerate(LABELS_USED):
        rows.append(f"{write_tone(tmp_path / 'clips' / f'{i}.wav', label, seconds=3.0, seed=i)},{label},tones,g{i}")
    manifest_csv = tmp_path / "tones.csv"
    manifest_csv.write_text("\n".join(rows) + "\n")
    models = write_fake_models(tmp_path / "models")
    live = FusionConfig(require_vote=False).resolve().operating_point()
    deaf = {**live, "enter_threshold": 1.0, "enter_threshold_screaming": 1.0, "exit_threshold": 0.4}
    doc = json.loads(models.read_text())
    doc["operating_point"] = {"fusion": {}, "budget_ladder": [
        {LADDER_BUDGET: 0.1, "fusion": deaf, "false_alarms_per_hour": 0.0}, {LADDER_BUDGET: 5.0, "fusion": live}]}
    models.write_text(json.dumps(doc))
    config = tmp_path / "config.yaml"
    # the fake Wav2Vec2 always says Normal: without the vote the fake YAMNet's tones raise events; the steady tones
    # would also start sustained-cry events under the deaf row's thresholds, so that path is off here
    config.write_text(f"models:\n  manifest: {models}\nfusion:\n  require_vote: false\n  sustained_seconds: 0\n"
                      "mqtt:\n  enabled: false\n")
    out = tmp_path / "bench"
    code = main(["--manifest", str(manifest_csv), "--split", "all", "--hours", "0.06", "--negative-hours", "0.03",
                 "--episode-hours", "0.06", "--no-baseline", "--profile-seconds", "0", "--out", str(out),
                 "--config", str(config), "--quiet"])
    assert code == 0
    doc = json.loads((out / "bench.json").read_text())
    ours = doc["ours"]
    assert sum(ours["recall_10db_up"][label] is not None for label in ("Crying", "Screaming")) >= 1
    assert ours["cascade"]["events_differing"] == 0
    assert ours["cascade"]["wav2vec2_skipped_windows"] > 0
    assert ours["monitor_peak_rss_mb"] > 0 and ours["monitor"]["starts"] == sum(
        1 for line in (out / "monitor_events.jsonl").read_text().splitlines() if '"phase": "start"' in line)
    negative = ours["negative_stream"]
    assert negative["hours"] > 0.02 and negative["false_alarms_per_hour"] >= 0
    # every rate and recall carries the interval its count allows
    for figs in (ours, negative):
        low, high = figs["false_alarms_per_hour_interval"]
        assert low <= figs["false_alarms_per_hour"] < high
    for label, recall in ours["recall_10db_up"].items():
        if recall is not None:
            low, high = ours["recall_10db_up_interval"][label]
            assert low <= recall <= high and high - low > 0
    assert "false alarms per hour, 95% interval (Poisson) | [" in (out / "bench.md").read_text()
    episodes = ours["episodes"]
    truth = json.loads((out / "episode_truth.json").read_text())["truth"]
    assert episodes["episodes"] == len(truth) >= 2 and episodes["episode_seconds"] == 30.0
    assert all(t["offset_s"] - t["onset_s"] >= 25.0 and "episode of" in t["clip"] for t in truth)
    assert episodes["alert_recall_any_label"] > 0 and episodes["latency_p50_s"] is not None
    assert "episodes: recall at >= 10 dB" in (out / "bench.md").read_text()
    assert doc["tradeoff"]["reproduces_live"] is True
    # every missed cry or scream is put down to a stage, and the counts add up to the list
    missed = [m for m in doc["misses"] if m["label"] in ("Crying", "Screaming")]
    assert all(m["cause"] in CAUSES for m in missed)
    assert sum(n for per_snr in ours["miss_causes"].values() for causes in per_snr.values()
               for n in causes.values()) == len(missed)
    assert ("## Where the missed insertions were lost" in (out / "bench.md").read_text()) == bool(missed)
    # each miss says how strongly AudioSet heard it; those it did not hear are counted per label and SNR
    assert all(m["best_audioset_alert"] is None or 0 <= m["best_audioset_alert"] <= 1 for m in missed)
    unheard = [m for m in missed if m["best_audioset_alert"] is None or m["best_audioset_alert"] < 0.1]
    assert sum(n for per_snr in ours["misses_unheard_by_audioset"].values() for n in per_snr.values()) == len(unheard)
    episode_causes = [(cause, n) for per_snr in ours["episodes"]["miss_causes"].values()
                      for causes in per_snr.values() for cause, n in causes.items()]
    assert all(cause in CAUSES for cause, _ in episode_causes)
    missed_episodes = sum(n for _, n in episode_causes)
    assert missed_episodes <= ours["episodes"]["episodes"]
    if any(recall is not None and recall < 1 for recall in ours["episodes"]["recall_10db_up"].values()):
        assert missed_episodes > 0, "an episode missed at >= 10 dB is put down to a cause"
    assert {"YAMNet alone", "Wav2Vec2 alone"} <= set(doc["tradeoff"]["det_curves"])
    ceiling, swept = doc["tradeoff"]["ceiling"], json.loads((out / "tradeoff.json").read_text())
    assert ceiling["settings"] == len(swept["points"]) + swept["threshold_pairs"]
    assert ceiling["fastest_latency_p95_s"] <= min(p["latency_p95_s"] for p in swept["points"]
                                                   if p["latency_p95_s"] is not None)
    assert "Out of reach of tuning? Of the " in (out / "bench.md").read_text()
    assert (out / "bench.md").read_text().startswith("# Event-level benchmark")

    # each tuned sensitivity re-measured on both streams; the row tuned like the live config scores like it
    quiet, as_live = doc["sensitivity"]["rows"]
    assert (quiet[LADDER_BUDGET], as_live[LADDER_BUDGET]) == (0.1, 5.0) and doc["sensitivity"]["streams"] == 2
    assert as_live["recall_10db_up"] == ours["recall_10db_up"]
    assert as_live["false_alarms"] == ours["false_alarms"] + negative["false_alarms"] > 0
    assert quiet["false_alarms_per_hour"] == 0 and not any(quiet["recall_10db_up"].values())
    assert "## Sensitivity (`fusion.false_alarm_budget`)" in (out / "bench.md").read_text()

    # and on the episodes between the negative-only stream's sound: the live row scores as the episode run did
    on_episodes = doc["sensitivity"]["episodes"]
    quiet, as_live = on_episodes["rows"]
    assert on_episodes["streams"] == 2 and on_episodes["hours"] > episodes["hours"]
    assert as_live["recall_10db_up"] == episodes["recall_10db_up"]
    assert as_live["false_alarms"] == episodes["false_alarms"] + negative["false_alarms"]
    assert quiet["false_alarms_per_hour"] == 0 and not any(quiet["recall_10db_up"].values())
    assert "crying episodes and the negative-only stream" in (out / "bench.md").read_text()
