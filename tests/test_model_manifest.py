"""The model manifest written by export/manifest.py and checked by monitor.model_manifest / load_classifiers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from export.manifest import (
    YAMNET_CONTRACT,
    check_onnx_contract,
    manifest_document,
    model_entry,
    with_test_metrics,
)
from monitor.config import Config
from monitor.constants import LABELS
from monitor.model_manifest import ModelError, read_manifest, sha256_file, verify_variant, write_manifest
from tests.helpers.fake_models import make_fake_yamnet, write_fake_models


@pytest.fixture()
def models(tmp_path: Path) -> Path:
    return write_fake_models(tmp_path / "models")


def _edit(manifest: Path, change) -> None:
    raw = json.loads(manifest.read_text())
    change(raw)
    manifest.write_text(json.dumps(raw))


def _config_for(manifest: Path) -> Config:
    cfg = Config()
    cfg.models.manifest = str(manifest)
    return cfg


def test_round_trip_keeps_hashes_versions_and_contract(models: Path):
    manifest = read_manifest(models)
    assert manifest.labels == LABELS
    assert set(manifest.models) == {"yamnet", "wav2vec2"}
    for entry in manifest.models.values():
        for name, variant in entry.variants.items():
            assert variant.file.parent == models.parent
            assert variant.sha256 == sha256_file(variant.file)
            assert variant.size_bytes == variant.file.stat().st_size
            assert verify_variant(entry, name) == variant.file
        assert entry.version == f"{entry.kind}-{entry.variant().sha256[:8]}"
    assert manifest.models["wav2vec2"].default_variant == "int8"
    assert manifest.models["wav2vec2"].normalisation == "zero_mean_unit_var"
    assert manifest.models["yamnet"].outputs["audioset"] == "audioset_scores"


def test_loader_accepts_the_written_manifest(models: Path):
    from monitor.classify import load_classifiers

    classifiers = load_classifiers(_config_for(models))
    assert classifiers.versions == {k: e.version for k, e in read_manifest(models).models.items()}


def _flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupted_model_file_is_refused(models: Path):
    entry = read_manifest(models).models["yamnet"]
    _flip_one_byte(entry.variant().file)
    with pytest.raises(ModelError, match="does not match the manifest.*corrupted or swapped"):
        verify_variant(entry)
    from monitor.classify import load_classifiers

    with pytest.raises(ModelError, match="yamnet_classifier.onnx"):
        load_classifiers(_config_for(models))


def test_swapped_model_file_is_refused(models: Path):
    """A valid ONNX file of another model under the expected name."""
    entry = read_manifest(models).models["wav2vec2"]
    shutil.copyfile(models.parent / "wav2vec2_classifier.onnx", entry.variant().file)  # float copied over int8
    with pytest.raises(ModelError, match="does not match the manifest"):
        verify_variant(entry)
    from monitor.classify import load_classifiers

    with pytest.raises(ModelError, match="wav2vec2_classifier.int8.onnx"):
        load_classifiers(_config_for(models))


def test_missing_model_file_is_refused(models: Path):
    entry = read_manifest(models).models["yamnet"]
    entry.variant().file.unlink()
    with pytest.raises(ModelError, match="missing"):
        verify_variant(entry)


def test_wrong_label_order_is_refused(models: Path):
    _edit(models, lambda raw: raw.__setitem__("labels", ["Screaming", "Crying", "Normal"]))
    with pytest.raises(ModelError, match="label order"):
        read_manifest(models)


@pytest.mark.parametrize("key, value", [("window_samples", 16000), ("sample_rate", 8000)])
def test_wrong_window_contract_is_refused(models: Path, key: str, value: int):
    _edit(models, lambda raw: raw["models"]["wav2vec2"]["input"].__setitem__(key, value))
    with pytest.raises(ModelError, match="input contract"):
        read_manifest(models)


def test_export_refuses_a_model_without_the_promised_outputs(tmp_path: Path):
    path = make_fake_yamnet(tmp_path / "yamnet_classifier.onnx", with_audioset=False)
    with pytest.raises(ModelError, match="audioset_scores"):
        check_onnx_contract(path, YAMNET_CONTRACT)
    with pytest.raises(ModelError, match="audioset_scores"):
        model_entry(YAMNET_CONTRACT, {"float": path}, tmp_path, "float")


def test_entry_rejects_unknown_default_variant(tmp_path: Path):
    path = make_fake_yamnet(tmp_path / "yamnet_classifier.onnx")
    with pytest.raises(ValueError, match="default variant 'int8'"):
        model_entry(YAMNET_CONTRACT, {"float": path}, tmp_path, "int8")


def _section(accuracy: float) -> dict:
    per_class = {label: {"precision": accuracy, "recall": accuracy, "f1": accuracy, "support": 1} for label in LABELS}
    return {"accuracy": accuracy, "macro_f1": accuracy, "macro_precision": accuracy, "macro_recall": accuracy,
            "per_class": per_class, "confusion_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
            "roc": {label: {"auc": accuracy} for label in LABELS}}


def test_test_metrics_are_stored_per_model_and_survive_reading(models: Path):
    document = json.loads(models.read_text())
    decision = {**_section(0.97), "ci95": {"accuracy": [0.9, 1.0], "macro_f1": [0.88, 1.0]}}
    metrics = {"yamnet": _section(0.9), "wav2vec2": _section(0.8), "ensemble_average": _section(0.95),
               "ensemble_vote": _section(0.85), "default_fusion": decision,
               "meta": {"split": "test", "clips": 3, "per_source": {}, "decision_model": "default_fusion"}}
    updated = with_test_metrics(document, metrics, report_dir=Path("build/reports/eval"))
    assert document["models"]["yamnet"]["test_metrics"] == {}  # the input is not modified
    write_manifest(models, updated)
    manifest = read_manifest(models)
    assert manifest.models["yamnet"].test_metrics["accuracy"] == 0.9
    assert manifest.models["wav2vec2"].test_metrics["macro_f1"] == 0.8
    assert manifest.models["wav2vec2"].test_metrics["auc"] == dict.fromkeys(LABELS, 0.8)
    assert manifest.raw["evaluation"]["ensembles"]["ensemble_average"]["accuracy"] == 0.95
    assert set(manifest.raw["evaluation"]["ensembles"]) == {"ensemble_average", "ensemble_vote", "default_fusion"}
    assert manifest.raw["evaluation"]["decision_model"] == "default_fusion"
    assert manifest.raw["evaluation"]["ensembles"]["default_fusion"]["ci95"] == decision["ci95"]
    assert "ci95" not in manifest.raw["evaluation"]["ensembles"]["ensemble_vote"], "only what the evaluation gave"


def test_document_carries_contract_constants(tmp_path: Path):
    path = make_fake_yamnet(tmp_path / "y.onnx")
    entry = model_entry(YAMNET_CONTRACT, {"float": path}, tmp_path, "float", temperature=1.5)
    document = manifest_document({"yamnet": entry}, {"manifest_sha256": "ab" * 32})
    write_manifest(tmp_path / "manifest.json", document)
    parsed = read_manifest(tmp_path / "manifest.json").models["yamnet"]
    assert parsed.temperature == 1.5
    assert parsed.variant().file == path
