"""The model manifest: which ONNX files the runtime may load, their hashes and input contract.

Written by ``export/`` and read here, so a swapped, corrupted or mismatched model is refused at
start-up with a message that says what to do, instead of producing wrong alerts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .constants import LABELS, MODEL_MANIFEST_SCHEMA, SAMPLE_RATE, WINDOW_SAMPLES
from .paths import models_dir

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger(__name__)

REBUILD_HINT = "rebuild the models with `nursery-monitor build-models`"
MANIFEST_NAME = "manifest.json"
"""What build-models writes into the models folder beside the model files."""
LADDER_BUDGET = "budget_false_alarms_per_hour"
"""The key of a budget-ladder row's false-alarm budget (``bench.tune.budget_ladder``)."""
MODEL_KINDS = ("yamnet", "wav2vec2")


class ModelError(Exception):
    """A model or its manifest cannot be used; the message says which file and why."""


@dataclass(frozen=True)
class ModelVariant:
    file: Path
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class ModelEntry:
    name: str
    kind: str
    version: str
    variants: dict[str, ModelVariant]
    default_variant: str
    input_name: str
    normalisation: str
    outputs: dict[str, str]
    temperature: float
    training: dict[str, Any] = field(default_factory=dict)
    test_metrics: dict[str, Any] = field(default_factory=dict)

    def variant(self, name: str = "default") -> ModelVariant:
        key = self.default_variant if name == "default" else name
        if key not in self.variants:
            raise ModelError(f"model '{self.name}' has no '{key}' variant (has: {', '.join(self.variants)})")
        return self.variants[key]


@dataclass(frozen=True)
class ModelManifest:
    path: Path
    labels: tuple[str, ...]
    models: dict[str, ModelEntry]
    raw: dict[str, Any]

    @property
    def operating_point(self) -> dict[str, Any]:
        """The fusion settings build-models tuned for these models (empty for a model set built before tuning)."""
        return dict(self.raw.get("operating_point", {}).get("fusion", {}))

    @property
    def tuned_hop_seconds(self) -> float | None:
        """The window hop the operating point was tuned at (None for models built before it was recorded)."""
        tuned_on = self.raw.get("operating_point", {}).get("tuned_on") or {}
        return tuned_on.get("hop_seconds")

    @property
    def budget_ladder(self) -> list[dict[str, Any]]:
        """The best setting build-models found within each false-alarm budget, smallest budget first."""
        rows = self.raw.get("operating_point", {}).get("budget_ladder") or []
        return sorted(rows, key=lambda row: row[LADDER_BUDGET])

    def operating_point_for(self, budget: float | None) -> dict[str, Any]:
        """The fusion settings for a false-alarm budget (``fusion.false_alarm_budget``): the ladder's row with the
        largest budget up to ``budget``, or its quietest row when ``budget`` is below them all; None = the default
        ``operating_point``."""
        if budget is None:
            return self.operating_point
        ladder = self.budget_ladder
        if not ladder:
            raise ModelError(f"model manifest {self.path}: fusion.false_alarm_budget needs the budget ladder that "
                             f"build-models tunes; these models have none; {REBUILD_HINT}")
        within = [row for row in ladder if row[LADDER_BUDGET] <= budget]
        if not within:
            log.warning("fusion.false_alarm_budget %g is below the quietest tuned budget (%g per hour): using that",
                        budget, ladder[0][LADDER_BUDGET])
        row = within[-1] if within else ladder[0]
        log.info("operating point for %g false alarms per hour: %s (tuning streams: %.3g per hour, recall >= 10 dB "
                 "%s)", row[LADDER_BUDGET], row.get("setting"), row.get("false_alarms_per_hour", float("nan")),
                 describe_recall(row.get("recall_10db_up") or {}))
        return dict(row["fusion"])


def describe_recall(recall_by_label: Mapping[str, float | None]) -> str:
    """Recall per label for a log line a person reads ("Crying 0.68, Screaming 0.77"), not a repr of floats;
    a label the stream never inserted has no recall."""
    return ", ".join(f"{label} {'n/a' if value is None else f'{value:.2f}'}"
                     for label, value in recall_by_label.items()) or "none"


def configured_manifest_path(cfg: Config) -> Path:
    """The manifest ``models.manifest`` names, else the one build-models installed."""
    return cfg.resolve_path(cfg.models.manifest) or models_dir() / MANIFEST_NAME


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _require(data: dict, key: str, where: str) -> Any:
    if key not in data:
        raise ModelError(f"{where}: missing '{key}'; {REBUILD_HINT}")
    return data[key]


def _parse_entry(name: str, data: dict, base: Path, where: str) -> ModelEntry:
    variants = {
        variant_name: ModelVariant(base / _require(v, "file", f"{where}.{variant_name}"),
                                   _require(v, "sha256", f"{where}.{variant_name}"), int(v.get("size_bytes", 0)))
        for variant_name, v in _require(data, "variants", where).items()
    }
    model_input = _require(data, "input", where)
    if model_input.get("sample_rate") != SAMPLE_RATE or model_input.get("window_samples") != WINDOW_SAMPLES:
        raise ModelError(f"{where}: input contract {model_input} does not match {SAMPLE_RATE} Hz / "
                         f"{WINDOW_SAMPLES} samples; {REBUILD_HINT}")
    temperature = float(data.get("temperature", 1.0))
    if not temperature > 0:
        raise ModelError(f"{where}: temperature must be positive, got {temperature}")
    default_variant = data.get("default_variant", next(iter(variants)))
    if default_variant not in variants:
        raise ModelError(f"{where}: default_variant '{default_variant}' is not among its variants")
    return ModelEntry(
        name=name, kind=_require(data, "kind", where), version=_require(data, "version", where),
        variants=variants, default_variant=default_variant, input_name=_require(model_input, "name", where),
        normalisation=model_input.get("normalisation", "none"), outputs=_require(data, "outputs", where),
        temperature=temperature, training=data.get("training", {}), test_metrics=data.get("test_metrics", {}),
    )


def read_manifest(path: str | os.PathLike) -> ModelManifest:
    """Parse and check the manifest's contract (not the file hashes: ``verify_variant`` does that)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model manifest {path} not found; {REBUILD_HINT}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"model manifest {path} is unreadable ({exc}); {REBUILD_HINT}") from None
    if raw.get("schema") != MODEL_MANIFEST_SCHEMA:
        raise ModelError(f"model manifest {path} has schema {raw.get('schema')!r}, expected "
                         f"{MODEL_MANIFEST_SCHEMA}; {REBUILD_HINT}")
    labels = tuple(raw.get("labels", ()))
    if labels != LABELS:
        raise ModelError(f"model manifest {path} label order {labels} differs from {LABELS}; {REBUILD_HINT}")
    models = {
        name: _parse_entry(name, entry, path.parent, f"{path}: models.{name}")
        for name, entry in _require(raw, "models", str(path)).items()
    }
    manifest = ModelManifest(path=path, labels=labels, models=models, raw=raw)
    _check_operating_point(manifest)
    return manifest


def _check_operating_point(manifest: ModelManifest) -> None:
    from .config import ConfigError, FusionConfig

    try:
        FusionConfig().resolve(manifest.operating_point)
        for row in manifest.budget_ladder:
            FusionConfig().resolve(row["fusion"])
    except (ConfigError, AttributeError, KeyError, TypeError) as exc:
        raise ModelError(f"model manifest {manifest.path}: bad operating_point ({exc}); {REBUILD_HINT}") from None


def verify_variant(entry: ModelEntry, variant: str = "default") -> Path:
    """The file to load, after checking it exists and its sha256 matches the manifest."""
    chosen = entry.variant(variant)
    if not chosen.file.is_file():
        raise ModelError(f"model file {chosen.file} ({entry.name}) is missing; {REBUILD_HINT}")
    actual = sha256_file(chosen.file)
    if actual != chosen.sha256:
        raise ModelError(f"model file {chosen.file} ({entry.name}) does not match the manifest "
                         f"(sha256 {actual[:12]}... != {chosen.sha256[:12]}...): corrupted or swapped; {REBUILD_HINT}")
    return chosen.file


def variant_record(path: str | os.PathLike, base: str | os.PathLike) -> dict[str, Any]:
    """What the export writes for one model file: relative name, sha256 and size."""
    path = Path(path)
    return {"file": os.path.relpath(path, base), "sha256": sha256_file(path), "size_bytes": path.stat().st_size}


def write_manifest(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Atomic write, so a crash mid-export never leaves a half manifest for the runtime."""
    path = Path(path)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
