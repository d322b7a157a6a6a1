"""training.evaluate end to end on generated tone clips and the tiny fake ONNX models of tests/fake_models.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from monitor.constants import LABELS
from tests.helpers.fake_models import write_fake_models, write_tone

# label -> stored sample rates of its clips; one 8 kHz clip per alert label makes the per-rate table non-trivial
CLIP_RATES = {"Crying": [16000, 8000, 8000], "Screaming": [16000, 8000], "Normal": [16000, 16000, 16000]}
MODEL_SECTIONS = {"yamnet", "wav2vec2", "ensemble_average", "ensemble_vote", "default_fusion"}


def _folder_dataset(root: Path) -> Path:
    for label, rates in CLIP_RATES.items():
        for i, rate in enumerate(rates):
            write_tone(root / label.lower() / f"{label}-{i}.wav", label, rate=rate, seed=i)
    (root / "normal" / "broken.wav").write_bytes(b"RIFF not really a wav file")
    return root


@pytest.fixture()
def evaluated(tmp_path: Path, monkeypatch) -> tuple[Path, int]:
    monkeypatch.setenv("NURSERY_BUILD", str(tmp_path / "build"))
    from training.evaluate import main

    data = _folder_dataset(tmp_path / "data")
    manifest = write_fake_models(tmp_path / "models")
    out = tmp_path / "eval"
    code = main(["--manifest", str(data), "--out", str(out), "--models", str(manifest)])
    return out, code


def test_metrics_json_has_every_section_and_real_figures(evaluated):
    out, code = evaluated
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == MODEL_SECTIONS | {"meta"}
    n_clips = sum(len(r) for r in CLIP_RATES.values())
    n_normal = len(CLIP_RATES["Normal"])
    # the fake YAMNet hears the tones perfectly; the fake Wav2Vec2 always says Normal
    assert metrics["yamnet"]["accuracy"] == pytest.approx(1.0)
    assert metrics["wav2vec2"]["accuracy"] == pytest.approx(n_normal / n_clips)
    w2v_cm = metrics["wav2vec2"]["confusion_matrix"]
    assert [row[LABELS.index("Normal")] for row in w2v_cm] == [len(CLIP_RATES[label]) for label in LABELS]
    for section in MODEL_SECTIONS:
        figures = metrics[section]
        assert set(figures) >= {"accuracy", "macro_f1", "macro_precision", "macro_recall", "per_class",
                                "confusion_matrix", "roc"}
        assert sum(map(sum, figures["confusion_matrix"])) == n_clips
        assert [figures["per_class"][label]["support"] for label in LABELS] == [len(CLIP_RATES[x]) for x in LABELS]
        assert set(figures["roc"]) == set(LABELS)
        low, high = figures["ci95"]["macro_f1"]
        assert 0.0 <= low <= figures["macro_f1"] <= high <= 1.0
    assert all(metrics["yamnet"]["roc"][label]["auc"] == pytest.approx(1.0) for label in LABELS)


def test_meta_lists_skipped_clip_and_per_rate_accuracy(evaluated):
    out, _ = evaluated
    meta = json.loads((out / "metrics.json").read_text())["meta"]
    assert meta["clips"] == sum(len(r) for r in CLIP_RATES.values())
    assert meta["skipped_clips"] == 1 and meta["skipped"][0]["path"].endswith("broken.wav")
    assert set(meta["model_versions"]) == {"yamnet", "wav2vec2"}
    assert meta["split"] == "all" and len(meta["manifest_sha256"]) == 64
    by_rate = meta["per_sample_rate"]
    assert set(by_rate) == {"8000", "16000"}
    assert by_rate["8000"]["clips"] == 3 and by_rate["8000"]["labels"] == {"Crying": 2, "Screaming": 1}
    assert by_rate["8000"]["accuracy"]["wav2vec2"] == 0.0
    assert by_rate["16000"]["accuracy"]["wav2vec2"] == pytest.approx(3 / 5)
    assert meta["per_source"]["own-recordings"]["accuracy"]["yamnet"] == pytest.approx(1.0)


def test_report_files_are_written(evaluated):
    out, _ = evaluated
    for section in MODEL_SECTIONS:
        curves = json.loads((out / f"roc_{section}.json").read_text())
        assert set(curves) == set(LABELS) and len(curves["Crying"]["fpr"]) == len(curves["Crying"]["tpr"])
        for png in (f"confusion_{section}.png", f"roc_{section}.png"):
            assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert all(f"| {section} |" in report and f"(roc_{section}.png)" in report for section in MODEL_SECTIONS)
    with (out / "errors.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # every alert clip is wrong for the always-Normal fake Wav2Vec2, no Normal clip is wrong for anyone
    assert sorted(r["label"] for r in rows) == sorted(["Crying"] * 3 + ["Screaming"] * 2)
    assert all(r["wav2vec2"] == "Normal" and r["yamnet"] == r["label"] for r in rows)


def _csv_dataset(root: Path, clips_per_label: int) -> Path:
    rows = []
    for label, name in (("Crying", "cry"), ("Screaming", "scream"), ("Normal", "normal")):
        for i in range(clips_per_label):
            rel = f"audio/{name}-{i}.wav"
            write_tone(root / rel, label, seconds=1.0, seed=i)
            rows.append({"path": rel, "label": name, "source": f"src-{name}", "group": f"{name}-{i}"})
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "source", "group"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def test_named_split_of_a_csv_manifest_is_saved_and_reused(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("NURSERY_BUILD", str(tmp_path / "build"))
    from training.evaluate import select_clips
    from training.split import split_file_for

    manifest = _csv_dataset(tmp_path / "data", clips_per_label=7)
    first = select_clips(manifest, "test")
    assert first.split == "test" and first.split_file == split_file_for(first.manifest_sha256)
    assert first.split_file.is_file() and 0 < len(first.clips) < 21
    train = select_clips(manifest, "train")
    assert not {c.path for c in first.clips} & {c.path for c in train.clips}
    assert [c.path for c in select_clips(manifest, "test").clips] == [c.path for c in first.clips]
    assert len(select_clips(manifest, None).clips) == 21  # another manifest: all clips by default


def test_missing_model_manifest_is_one_clear_error(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("NURSERY_BUILD", str(tmp_path / "build"))
    from training.evaluate import main

    data = _folder_dataset(tmp_path / "data")
    code = main(["--manifest", str(data), "--out", str(tmp_path / "eval"), "--models", str(tmp_path / "none.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("evaluate: model manifest") and "not found" in err[-1]
    assert not (tmp_path / "eval").exists()


def test_weight_sweep_runs_from_wav2vec2_alone_to_yamnet_alone(evaluated):
    out, _ = evaluated
    metrics = json.loads((out / "metrics.json").read_text())
    sweep = metrics["meta"]["weight_sweep"]
    assert [row["weight_yamnet"] for row in sweep] == pytest.approx([i / 10 for i in range(11)])
    # the ends are the single models: the sweep re-fuses the clip scores, it does not re-classify
    assert sweep[0]["accuracy"] == pytest.approx(metrics["wav2vec2"]["accuracy"])
    assert sweep[-1]["accuracy"] == pytest.approx(metrics["yamnet"]["accuracy"])
    assert sweep[-1]["macro_f1"] == pytest.approx(metrics["yamnet"]["macro_f1"])
    assert 0.0 < metrics["meta"]["fusion_weight_yamnet"] < 1.0
    assert "Ensemble average vs. fusion weight" in (out / "report.md").read_text()


def test_single_branches_are_compared_with_the_ensemble_with_an_interval(evaluated):
    out, _ = evaluated
    metrics = json.loads((out / "metrics.json").read_text())
    comparison = metrics["meta"]["single_vs_ensemble"]
    assert set(comparison) == {"yamnet", "wav2vec2"}
    for model, figures in comparison.items():
        for key in ("accuracy", "macro_f1"):
            expected = metrics[model][key] - metrics["default_fusion"][key]
            assert figures[key]["difference"] == pytest.approx(expected, abs=1e-5)
            lo, hi = figures[key]["ci95"]
            assert lo <= hi
    # the always-Normal fake Wav2Vec2 is worse than the ensemble on every draw of groups
    assert comparison["wav2vec2"]["accuracy"]["ci95"][1] < 0
    assert "Single branch minus default_fusion" in (out / "report.md").read_text()
