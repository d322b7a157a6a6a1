"""The label audit (``training.audit``): which clips AudioSet's evidence contradicts, and the report it writes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.audit import ALERT_ROWS, AuditSettings, audit_rows, clip_evidence, contradicts, summarise, write_audit
from training.data import Clip

NAMES = [f"class {i}" for i in range(200)]
CRY_ROW, OTHER_ROW = ALERT_ROWS[0], 150


def _clip(name: str, label: str, source: str = "src") -> Clip:
    return Clip(Path(f"/data/{name}.flac"), label, group=f"{source}:{name}", source=source, duration_s=3.0,
                sample_rate=16000)


def test_evidence_is_the_strongest_alert_score_over_active_windows_or_all_of_a_silent_clip():
    scores = np.zeros((5, len(NAMES)))
    scores[:, OTHER_ROW] = 0.4
    scores[0, CRY_ROW] = 0.9  # clip 0, inactive window (a pause): does not count
    scores[1, CRY_ROW] = 0.05
    scores[2, CRY_ROW] = 0.3  # clip 1: no active window, so all its windows count
    scores[3, CRY_ROW] = 0.2
    clip_index = np.array([0, 0, 1, 1, 2])
    active = np.array([False, True, False, False, True])
    found = clip_evidence(scores, clip_index, active, NAMES)
    assert found[0].evidence == pytest.approx(0.05)
    assert found[1].evidence == pytest.approx(0.3)
    assert found[2].evidence == 0.0
    assert found[0].top_class == "class 150" and found[0].top_score == pytest.approx(0.4)


def test_a_cry_without_evidence_and_a_normal_clip_heard_as_a_cry_contradict_their_labels():
    settings = AuditSettings(min_alert_evidence=0.1, max_normal_evidence=0.5)
    assert contradicts("Crying", 0.09, settings) and contradicts("Screaming", 0.0, settings)
    assert not contradicts("Crying", 0.1, settings)
    assert contradicts("Normal", 0.5, settings) and not contradicts("Normal", 0.49, settings)


def test_the_report_lists_the_contradicted_clips_weakest_cry_first_and_counts_them(tmp_path):
    clips = [_clip("cry-ok", "Crying"), _clip("cry-silent", "Crying", "donate"), _clip("cry-faint", "Crying"),
             _clip("scream-none", "Screaming"), _clip("cat", "Normal", "cats"), _clip("tv", "Normal")]
    evidence = {i: found for i, found in enumerate(clip_evidence(
        np.array([[0.8], [0.0], [0.05], [0.02], [0.7], [0.1]]) * np.eye(1, len(NAMES), CRY_ROW),
        np.arange(6), np.ones(6, bool), NAMES).values())}
    split_of = {clips[1].path: "test"}
    rows = audit_rows(clips, evidence, AuditSettings(), split_of)
    assert [Path(r["path"]).stem for r in rows] == ["cry-silent", "cry-faint", "scream-none", "cat"]
    assert rows[0]["split"] == "test" and rows[1]["split"] is None
    summary = summarise(clips, rows)
    assert summary["listed"] == 4 and summary["clips"] == 6
    assert summary["by_label"] == {"Crying": {"listed": 2, "of": 3}, "Normal": {"listed": 1, "of": 2},
                                   "Screaming": {"listed": 1, "of": 1}}
    assert summary["by_label_and_source"]["Crying / donate"] == 1
    assert summary["by_label_and_split"] == {"Crying / test": 1}
    write_audit(tmp_path, summary, rows, AuditSettings())
    doc = json.loads((tmp_path / "audit.json").read_text())
    assert doc["clips"] == rows and doc["settings"]["min_alert_evidence"] == 0.1
    table = (tmp_path / "audit.md").read_text()
    assert "4 of 6 clips" in table and table.count("/data/") == 4 and "cry-ok" not in table


CLEAR_CRY = "549a46d8-9c84-430e-ade8-97eae2bef787-1430130772174-1.7-m-48-bp.flac"
"""A shared cry clip AudioSet hears as "Crying, sobbing" (0.997 in its loudest window)."""
HAVE_TRAIN_DEPS = all(importlib.util.find_spec(m) for m in ("torch", "tf2onnx", "tensorflow"))


@pytest.mark.train
@pytest.mark.skipif(not HAVE_TRAIN_DEPS, reason="needs the train extra (tf2onnx, tensorflow)")
def test_audit_labels_finds_misfiled_clips_in_a_folder_with_the_real_yamnet(tmp_path, monkeypatch, capsys):
    """A real cry filed as normal and a sine tone filed as a cry are listed; the cry filed as a cry is not."""
    from monitor import cli
    from monitor.paths import default_manifest_csv
    from training.data import load_dataset

    cry = next((c for c in load_dataset(default_manifest_csv()) if c.path.name == CLEAR_CRY), None)
    if cry is None:
        pytest.skip(f"{CLEAR_CRY} is not in the shared data")
    samples, rate = sf.read(cry.path, dtype="float32")
    tone = 0.3 * np.sin(2 * np.pi * 440.0 * np.arange(3 * 16000) / 16000).astype(np.float32)
    for folder, name, audio, sr in (("cry", "real_cry", samples, rate), ("normal", "misfiled_cry", samples, rate),
                                    ("cry", "tone", tone, 16000), ("normal", "tone_normal", tone, 16000)):
        (tmp_path / "data" / folder).mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / "data" / folder / f"{name}.flac", audio, sr)
    monkeypatch.setenv("NURSERY_BUILD", str(tmp_path / "build"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["audit-labels", "--manifest", str(tmp_path / "data"), "--out", str(tmp_path / "audit")]) == 0
    doc = json.loads((tmp_path / "audit" / "audit.json").read_text())
    listed = {Path(r["path"]).stem: r for r in doc["clips"]}
    assert set(listed) == {"misfiled_cry", "tone"}
    assert listed["misfiled_cry"]["cry_or_scream_evidence"] >= 0.5 > listed["tone"]["cry_or_scream_evidence"]
    assert json.loads(capsys.readouterr().out)["listed"] == 2
