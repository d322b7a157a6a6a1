"""Assembling ``models/manifest.json`` (format: docs/ARCHITECTURE.md) from the exported files.

Hashing and the atomic write live in ``monitor.model_manifest`` beside the reader, so writer and
reader cannot drift apart; this module only decides what goes into each entry.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from monitor.constants import LABELS, MODEL_MANIFEST_SCHEMA, SAMPLE_RATE, WINDOW_SAMPLES
from monitor.model_manifest import ModelError, variant_record

VERSION_HASH_CHARS = 8
"""``version`` = ``<kind>-<first 8 hex of the default file's sha256>``."""
BATCH_DIM = "batch"
SUMMARY_KEYS = ("accuracy", "macro_f1", "macro_precision", "macro_recall")
"""Figures of an evaluation section copied into ``test_metrics``."""


@dataclass(frozen=True)
class ModelContract:
    """Tensor names and input normalisation that the runtime relies on for one kind of model."""

    kind: str
    input_name: str
    normalisation: str
    outputs: dict[str, str] = field(default_factory=dict)
    """Role (what ``monitor.classify`` asks for) -> ONNX output name."""


YAMNET_CONTRACT = ModelContract(
    kind="yamnet", input_name="waveform", normalisation="none",
    outputs={"logits": "logits", "audioset": "audioset_scores", "embedding": "embedding"})
WAV2VEC2_CONTRACT = ModelContract(
    kind="wav2vec2", input_name="input_values", normalisation="zero_mean_unit_var", outputs={"logits": "logits"})
CONTRACTS = {c.kind: c for c in (YAMNET_CONTRACT, WAV2VEC2_CONTRACT)}


def check_onnx_contract(path: Path, contract: ModelContract) -> None:
    """The file really has the input and outputs the manifest will promise (a clear error at build time,
    not a refusal at the user's first start)."""
    import onnx  # training/export extra only

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # onnx raises DecodeError and friends from protobuf
        raise ModelError(f"{path}: not a readable ONNX model ({exc})") from None
    inputs = [i.name for i in graph.input]
    outputs = {o.name for o in graph.output}
    if contract.input_name not in inputs:
        raise ModelError(f"{path}: input '{contract.input_name}' expected by the {contract.kind} contract, "
                         f"the model has {inputs}")
    missing = sorted(set(contract.outputs.values()) - outputs)
    if missing:
        raise ModelError(f"{path}: outputs {missing} expected by the {contract.kind} contract are missing "
                         f"(has {sorted(outputs)})")


def input_contract(contract: ModelContract) -> dict[str, Any]:
    return {"name": contract.input_name, "shape": [BATCH_DIM, WINDOW_SAMPLES], "sample_rate": SAMPLE_RATE,
            "window_samples": WINDOW_SAMPLES, "normalisation": contract.normalisation}


def model_entry(contract: ModelContract, files: Mapping[str, Path], base: Path, default_variant: str, *,
                temperature: float = 1.0, training: dict | None = None, extra: dict | None = None,
                test_metrics: dict | None = None) -> dict[str, Any]:
    """One ``models.<kind>`` entry; ``files`` maps variant name (float, int8) to its file inside ``base``."""
    if default_variant not in files:
        raise ValueError(f"default variant '{default_variant}' is not among {sorted(files)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    for path in files.values():
        check_onnx_contract(Path(path), contract)
    variants = {name: variant_record(path, base) for name, path in files.items()}
    entry = {
        "kind": contract.kind,
        "version": f"{contract.kind}-{variants[default_variant]['sha256'][:VERSION_HASH_CHARS]}",
        "variants": variants,
        "default_variant": default_variant,
        "input": input_contract(contract),
        "outputs": dict(contract.outputs),
        "temperature": float(temperature),
        "training": training or {},
    }
    entry.update(extra or {})
    entry["test_metrics"] = test_metrics or {}
    return entry


def manifest_document(models: Mapping[str, dict], training_data: dict,
                      created: datetime | None = None) -> dict[str, Any]:
    """The whole manifest; ``models`` as made by ``model_entry``."""
    created = created or datetime.now(timezone.utc)
    return {
        "schema": MODEL_MANIFEST_SCHEMA,
        "created": created.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "labels": list(LABELS),
        "sample_rate": SAMPLE_RATE,
        "window_samples": WINDOW_SAMPLES,
        "training_data": training_data,
        "models": dict(models),
    }


def summarise_metrics(section: dict, split: str, clips: int) -> dict[str, Any]:
    """The headline of one evaluation section (training.evaluate's metrics.json) for ``test_metrics``."""
    summary: dict[str, Any] = {"split": split, "clips": clips}
    summary.update({key: section[key] for key in SUMMARY_KEYS})
    summary["f1"] = {label: figures["f1"] for label, figures in section["per_class"].items()}
    summary["auc"] = {label: roc["auc"] for label, roc in section["roc"].items()}
    if "ci95" in section:
        summary["ci95"] = section["ci95"]
    return summary


def with_test_metrics(document: dict, metrics: dict, report_dir: Path | None = None) -> dict:
    """A copy of the manifest with each model's ``test_metrics`` and the ensembles under ``evaluation``."""
    document = copy.deepcopy(document)
    meta = metrics.get("meta", {})
    split, clips = meta.get("split", "test"), int(meta.get("clips", 0))
    for kind, entry in document["models"].items():
        if kind in metrics:
            entry["test_metrics"] = summarise_metrics(metrics[kind], split, clips)
    document["evaluation"] = {
        "split": split,
        "clips": clips,
        "report": str(report_dir) if report_dir is not None else None,
        "decision_model": meta.get("decision_model"),
        "ensembles": {name: summarise_metrics(section, split, clips)
                      for name, section in metrics.items() if name != "meta" and name not in document["models"]},
        "per_source": meta.get("per_source", {}),
    }
    return document
