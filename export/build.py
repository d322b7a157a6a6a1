"""One command from labelled audio to ``models/manifest.json``: ``nursery-monitor build-models``.

prepare (dataset, split) -> YAMNet head -> Wav2Vec2 -> both to ONNX with parity checks -> evaluation
on the test split -> install the ONNX files and the manifest into the models folder.

Each step is keyed by a hash of its inputs, settings and the source of the code it runs; the key and
the hashes of its outputs are kept in a stamp file under ``build/stamps/``. A step whose key and
outputs are unchanged is skipped, so re-running with nothing changed takes seconds and says "up to
date". ``--force`` re-runs every step. The models folder is only written once every step has passed,
so a failed build never leaves a half-updated model set for the runtime.

    python -m export.build [--data CSV|DIR] [--yamnet-tflite PATH] [--init PATH_OR_NAME] [--w2v-minutes M]
                           [--quick] [--out DIR] [--force] [--skip-eval] [--config config.yaml]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from monitor.command import EXIT_CONFIG, EXIT_OK, add_config_option, fail, load_command_config, setup_logging
from monitor.config import Config
from monitor.model_manifest import MANIFEST_NAME, ModelError, read_manifest, sha256_file, write_manifest
from monitor.paths import REPO_ROOT, build_dir, default_manifest_csv, default_yamnet_tflite, models_dir

from .module_graph import import_closure, module_file

log = logging.getLogger("export.build")

STAMP_SCHEMA = 1
"""Bump to invalidate every stamp (e.g. when the stamp format changes)."""
QUICK_W2V_MINUTES = 3.0
"""``--quick``: Wav2Vec2 wall-clock cap for smoke runs (it cuts the run short: a quick model is not repeatable)."""
YAMNET_FILE = "yamnet_classifier.onnx"
STAGING_DIR_NAME = "export"
STAMP_DIR_NAME = "stamps"
UNION_DIR_NAME = "data"
REPORT_DIR = Path("reports") / "eval"
QUANTIZATION_SPLIT = "val"

# The modules each step's action calls into. Its "code version" is the hash of every project module they
# import, directly or not (``export.module_graph.import_closure``), so no hand list can miss one.
YAMNET_CODE = ("training.train_yamnet", "training.yamnet_features")
WAV2VEC2_CODE = ("training.train_wav2vec2", "training.teacher_targets")
YAMNET_EXPORT_CODE = ("export.yamnet_onnx",)
WAV2VEC2_EXPORT_CODE = ("export.wav2vec2_onnx",)
TUNE_CODE = ("bench.tune",)
QUICK_TUNE_HOURS = 1.0
"""``--quick``: length of the negative tuning stream for CI and smoke runs."""
TUNE_DIR = "tune"
MANIFEST_OPERATING_POINT_FIELDS = ("fusion", "setting", "reason", "chosen", "tuned_on", "budget_ladder")
"""What the tuning step puts into the manifest's ``operating_point``."""
EVAL_CODE = ("training.evaluate", "monitor.classify")


class BuildError(Exception):
    """A step failed; the message names the step and the cause in one line."""


# --- hashing -------------------------------------------------------------------------------------

def digest_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def code_version(modules: Iterable[str], source_root: Path = REPO_ROOT) -> dict[str, str]:
    """sha256 of the source file of each module and of every project module it imports, read without
    importing anything (torch stays unloaded)."""
    modules = list(modules)
    missing = [name for name in modules if module_file(name, source_root) is None]
    if missing:
        raise BuildError(f"module {', '.join(missing)} not found: is the checkout complete?")
    return {name: sha256_file(module_file(name, source_root)) for name in import_closure(modules, source_root)}


def files_of(paths: Iterable[Path]) -> list[Path]:
    """The files named, with folders expanded to every file inside them."""
    out = []
    for path in paths:
        path = Path(path)
        out.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    return out


def hash_outputs(paths: Iterable[Path]) -> dict[str, str]:
    return {str(p): sha256_file(p) for p in files_of(paths)}


def folder_identity(path: Path) -> dict[str, str] | str:
    """A local checkpoint folder by content, a hub name by name."""
    path = Path(path)
    return hash_outputs([path]) if path.exists() else str(path)


def _key_parts(inputs: dict, versions: dict[str, str]) -> dict[str, str]:
    """One digest per input and per source file, so a re-run can say what changed."""
    parts = {f"input {k}": digest_json(v) for k, v in inputs.items()}
    parts.update({f"code {m}": h for m, h in versions.items()})
    return parts


# --- cached steps --------------------------------------------------------------------------------

@dataclass
class StepOutcome:
    name: str
    key: str
    result: dict
    cached: bool
    seconds: float
    outputs: dict[str, str] = field(default_factory=dict)
    """sha256 of each file the step made: what a later step that reads them is keyed on. The step's own key
    names its recipe, which a run cut by a time cap or a different machine can turn into other weights."""

    @property
    def made(self) -> str:
        """The outputs by file name and content, wherever the checkout lies."""
        return digest_json(sorted((Path(path).name, digest) for path, digest in self.outputs.items()))


@dataclass
class StepRunner:
    """Runs the build's steps in order, each one skipped when its stamp says it is up to date."""

    stamp_dir: Path
    total: int
    force: bool = False
    source_root: Path = REPO_ROOT
    outcomes: list[StepOutcome] = field(default_factory=list)

    def _stamp_path(self, name: str) -> Path:
        return self.stamp_dir / f"{name}.json"

    def _reusable(self, name: str, key: str, parts: dict[str, str]) -> dict | None:
        path = self._stamp_path(name)
        if self.force or not path.is_file():
            return None
        try:
            stamp = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if stamp.get("key") != key:
            old = stamp.get("parts")
            changed = sorted(k for k in set(old) | set(parts) if old.get(k) != parts.get(k)) if old else []
            log.info("      changed since the last build: %s", ", ".join(changed) or "inputs or code")
            return None
        outputs = stamp.get("outputs", {})
        for file, digest in outputs.items():
            if not Path(file).is_file() or sha256_file(file) != digest:
                log.info("      %s changed since the last build: re-running", file)
                return None
        return stamp

    def run(self, name: str, title: str, inputs: dict, code: Iterable[str],
            outputs: list[Path] | Callable[[dict], list[Path]], action: Callable[[], dict]) -> StepOutcome:
        """``action`` does the work and returns a JSON-able result; ``code`` names the modules it calls into
        (their imports count too); ``outputs`` are the files / folders it makes (or a function of the result
        that names them), checked by hash before a cached result is reused."""
        versions = code_version(code, self.source_root)
        key = digest_json({"schema": STAMP_SCHEMA, "inputs": inputs, "code": versions})
        parts = _key_parts(inputs, versions)
        log.info("[%d/%d] %s", len(self.outcomes) + 1, self.total, title)
        stamp = self._reusable(name, key, parts)
        if stamp is not None:
            outcome = StepOutcome(name, key, stamp["result"], True, 0.0, stamp.get("outputs", {}))
            log.info("      up to date (built %s in %.1f s)", stamp.get("finished", "?"), stamp.get("seconds", 0))
        else:
            self._stamp_path(name).unlink(missing_ok=True)
            started = time.perf_counter()
            try:
                result = action()
            except Exception as exc:  # any failure of a step ends the build with its one-line cause
                log.debug("step %s failed", name, exc_info=True)
                raise BuildError(f"step '{name}' ({title}) failed: {type(exc).__name__}: "
                                 f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc
            seconds = time.perf_counter() - started
            made = self._write_stamp(name, key, parts, result, outputs(result) if callable(outputs) else outputs,
                                     seconds)
            outcome = StepOutcome(name, key, result, False, seconds, made)
            log.info("      done in %.1f s", seconds)
        self.outcomes.append(outcome)
        return outcome

    def _write_stamp(self, name: str, key: str, parts: dict[str, str], result: dict, outputs: list[Path],
                     seconds: float) -> dict[str, str]:
        missing = [str(p) for p in outputs if not Path(p).exists()]
        if missing:
            raise BuildError(f"step '{name}' did not produce {', '.join(missing)}")
        stamp = {"key": key, "parts": parts, "result": result, "outputs": hash_outputs(outputs),
                 "seconds": round(seconds, 1), "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")}
        self.stamp_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._stamp_path(name).with_suffix(".tmp")
        tmp.write_text(json.dumps(stamp, indent=1, default=str) + "\n", encoding="utf-8")
        tmp.replace(self._stamp_path(name))
        return stamp["outputs"]


# --- options -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BuildOptions:
    data: Path
    yamnet_tflite: Path
    init: str | None
    w2v_minutes: float | None
    """Wall-clock cap of the Wav2Vec2 run; None = the trainer's default cap."""
    tune_hours: float | None
    """Negative tuning stream length; None = ``TuneSpec``'s default."""
    out: Path
    force: bool
    skip_eval: bool
    seed: int
    cfg: Config

    @property
    def staging(self) -> Path:
        return build_dir() / STAGING_DIR_NAME

    @property
    def report_dir(self) -> Path:
        return build_dir() / REPORT_DIR


def _settings(cfg: Config, *sections: str) -> dict:
    return {name: dataclasses.asdict(getattr(cfg, name)) for name in sections}


# --- the steps -----------------------------------------------------------------------------------

@dataclass
class Prepared:
    clips: list
    split: dict
    manifest_sha256: str
    split_file: Path
    split_sha256: str


def prepare(opts: BuildOptions) -> Prepared:
    from training.split import dataset_split

    data = dataset_split(opts.data, opts.seed)
    return Prepared(data.clips, data.split, data.manifest_sha256, data.split_file, sha256_file(data.split_file))


def _yamnet_head(opts: BuildOptions, head_dir: Path) -> dict:
    from training.train_yamnet import HeadConfig, load_head, run_training
    from training.yamnet_features import convert_yamnet

    base = convert_yamnet(opts.yamnet_tflite)
    run_training(opts.data, opts.seed, opts.cfg, HeadConfig(), out_dir=head_dir, base=base)
    _, metadata = load_head(head_dir)
    return {key: metadata.get(key) for key in ("temperature", "best_epoch", "hidden", "head_config", "metrics",
                                               "timing")}


def _wav2vec2(opts: BuildOptions, data: Prepared, model_dir: Path) -> dict:
    from training.train_wav2vec2 import DEFAULT_MAX_MINUTES, train_wav2vec2

    minutes = opts.w2v_minutes if opts.w2v_minutes is not None else DEFAULT_MAX_MINUTES
    metadata = train_wav2vec2(data.split, model_dir, init=opts.init, max_minutes=minutes, cfg=opts.cfg,
                              yamnet_tflite=opts.yamnet_tflite,
                              extra_metadata={"training_data": {"manifest_sha256": data.manifest_sha256,
                                                                "split_file": str(data.split_file)}})
    pretraining = metadata.get("pretraining") or {}
    return {**{key: metadata.get(key) for key in ("init", "checkpoint", "config", "temperature", "epochs",
                                                  "best_epoch", "stopped_by", "minutes", "val_metrics",
                                                  "test_metrics", "ece_before", "ece_after")},
            "pretraining": {key: pretraining[key] for key in ("objective", "teacher", "windows", "steps",
                                                                 "stopped_by", "seconds")
                            if key in pretraining} or None}


def _read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


W2V_VARIANTS = ("float", "int8")


def _wav2vec2_files(export_result: dict) -> dict[str, Path]:
    """Variant name -> file, from what ``export_wav2vec2`` reports."""
    missing = [v for v in W2V_VARIANTS if "path" not in export_result.get(v, {})]
    if missing:
        raise BuildError(f"export_wav2vec2 reported no file for {missing} (keys: {sorted(export_result)})")
    return {variant: Path(export_result[variant]["path"]) for variant in W2V_VARIANTS}


def _quantization(export_result: dict) -> dict:
    """float vs int8 on the split the export compared them on, and which one the runtime loads by default."""
    figures = {"split": QUANTIZATION_SPLIT, "decision": export_result.get("decision"),
               "int8_op_types": export_result.get("int8_op_types")}
    for variant in W2V_VARIANTS:
        report = export_result[variant]
        figures[f"{variant}_macro_f1"] = report["test"]["window"]["macro_f1"]
        figures[f"{variant}_ms_per_window"] = report.get("ms_per_window")
        figures[f"{variant}_size_bytes"] = report.get("size_bytes")
    return figures


def headline_metrics(split_metrics: dict | None) -> dict:
    """Accuracy and macro-F1 per level (window, clip) of a trainer's split metrics, for the manifest."""
    split_metrics = split_metrics or {}
    return {level: {key: figures[key] for key in ("accuracy", "macro_f1") if key in figures}
            for level, figures in split_metrics.items() if isinstance(figures, dict) and "accuracy" in figures}


def staged_manifest(opts: BuildOptions, data: Prepared, head: StepOutcome, w2v: StepOutcome,
                    yamnet_export: StepOutcome, w2v_export: StepOutcome) -> dict:
    """The manifest document for the staged files (``test_metrics`` empty until the evaluation)."""
    from .manifest import WAV2VEC2_CONTRACT, YAMNET_CONTRACT, manifest_document, model_entry

    staging = opts.staging
    head_result, w2v_result, w2v_files = head.result, w2v.result, _wav2vec2_files(w2v_export.result)
    yamnet_entry = model_entry(
        YAMNET_CONTRACT, {"float": staging / YAMNET_FILE}, staging, "float",
        temperature=float(head_result.get("temperature") or 1.0),
        training={"init": "pretrained", "checkpoint": f"{opts.yamnet_tflite.name} (AudioSet)",
                  "checkpoint_sha256": sha256_file(opts.yamnet_tflite),
                  "head": head_result.get("head_config"), "best_epoch": head_result.get("best_epoch"),
                  "timing": head_result.get("timing"),
                  "val_metrics": headline_metrics((head_result.get("metrics") or {}).get("val"))},
        extra={"parity": yamnet_export.result})
    w2v_training = {key: w2v_result.get(key) for key in ("init", "checkpoint", "pretraining", "config", "epochs",
                                                        "best_epoch", "stopped_by", "minutes")}
    w2v_training["val_metrics"] = headline_metrics(w2v_result.get("val_metrics"))
    w2v_entry = model_entry(
        WAV2VEC2_CONTRACT, w2v_files, staging, w2v_export.result["default_variant"],
        temperature=float(w2v_result.get("temperature") or 1.0), training=w2v_training,
        extra={"parity": {**w2v_export.result["parity"], "tolerance": w2v_export.result.get("float_tolerance")},
               "quantization": _quantization(w2v_export.result), "opset": w2v_export.result.get("opset")})
    training_data = {"source": str(opts.data), "manifest_sha256": data.manifest_sha256, "clips": len(data.clips),
                     "split_file": str(data.split_file), "split_seed": opts.seed,
                     "split": {name: len(members) for name, members in data.split.items()}}
    return manifest_document({"yamnet": yamnet_entry, "wav2vec2": w2v_entry}, training_data)


def _tune_spec(opts: BuildOptions):
    from bench.tune import TuneSpec

    if opts.tune_hours is None:
        return TuneSpec()
    return TuneSpec(negative_hours=opts.tune_hours, positive_hours=min(TuneSpec.positive_hours, opts.tune_hours))


def _tune(opts: BuildOptions, data: Prepared, staged: Path) -> dict:
    from bench.tune import tune_operating_point

    return tune_operating_point(data.split, staged, opts.cfg, build_dir() / TUNE_DIR, _tune_spec(opts),
                                progress=sys.stderr.isatty())


def _evaluate(opts: BuildOptions, staged: Path) -> dict:
    from monitor.classify import load_classifiers
    from training.evaluate import evaluate, evaluate_feedback, select_clips

    cfg = dataclasses.replace(opts.cfg, models=dataclasses.replace(
        opts.cfg.models, manifest=str(staged), use_wav2vec2=True, wav2vec2_variant="default"))
    selection = select_clips(opts.data, "test", opts.seed)
    classifiers = load_classifiers(cfg)
    metrics = evaluate(selection, classifiers, cfg, opts.report_dir)
    feedback = evaluate_feedback(opts.data, classifiers, cfg, opts.report_dir, opts.seed)
    return {"report": str(opts.report_dir), "clips": metrics["meta"]["clips"],
            "feedback": None if feedback is None else {k: feedback[k] for k in ("clips", "correct", "report")}}


def install(document: dict, staging: Path, out: Path) -> bool:
    """Copy the model files and write the manifest into ``out``; False when it already held exactly this."""
    out.mkdir(parents=True, exist_ok=True)
    changed = False
    for entry in document["models"].values():
        for variant in entry["variants"].values():
            source, target = staging / variant["file"], out / variant["file"]
            if not target.is_file() or sha256_file(target) != variant["sha256"]:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
                changed = True
    manifest_path = out / MANIFEST_NAME
    if not changed and manifest_path.is_file() and _same_content(_read_json(manifest_path), document):
        return False
    write_manifest(manifest_path, document)
    read_manifest(manifest_path)  # the runtime must accept what was just written
    return True


def _same_content(a: dict, b: dict) -> bool:
    """Equal apart from the creation time."""
    return {**a, "created": None} == {**b, "created": None}


def run_build(opts: BuildOptions) -> dict:
    """All steps; returns the installed manifest document. Raises BuildError on the first failure."""
    from .manifest import with_test_metrics

    started = time.perf_counter()
    runner = StepRunner(build_dir() / STAMP_DIR_NAME, total=7 if opts.skip_eval else 8, force=opts.force)
    if not opts.yamnet_tflite.is_file():
        raise BuildError(f"YAMNet base model not found: {opts.yamnet_tflite} (use --yamnet-tflite PATH)")
    log.info("[1/%d] prepare: dataset %s", runner.total, opts.data)
    data_started = time.perf_counter()
    try:
        data = prepare(opts)
    except (ValueError, OSError) as exc:
        raise BuildError(f"step 'prepare' failed: {exc}") from exc
    runner.outcomes.append(StepOutcome("prepare", data.split_sha256, {}, False, time.perf_counter() - data_started))
    log.info("      %d clips, split %s (%s)", len(data.clips),
             "/".join(str(len(data.split[s])) for s in ("train", "val", "test")), data.split_file)
    data_inputs = {"manifest_sha256": data.manifest_sha256, "split_sha256": data.split_sha256, "seed": opts.seed,
                   "settings": _settings(opts.cfg, "preprocess", "gate", "window")}

    head_dir = build_dir() / "yamnet_head"
    head = runner.run("yamnet_head", "train the YAMNet head on frozen embeddings",
                      {**data_inputs, "tflite_sha256": sha256_file(opts.yamnet_tflite)}, YAMNET_CODE, [head_dir],
                      lambda: _yamnet_head(opts, head_dir))
    w2v_dir = build_dir() / "wav2vec2"
    budget = "default cap" if opts.w2v_minutes is None else f"{opts.w2v_minutes:g} min cap"
    start = f"from {opts.init}" if opts.init else "distilled from YAMNet, then fine-tuned"
    w2v = runner.run("wav2vec2", f"train Wav2Vec2 ({start}, {budget})",
                     {**data_inputs, "init": folder_identity(Path(opts.init)) if opts.init else None,
                      "teacher_sha256": None if opts.init else sha256_file(opts.yamnet_tflite),
                      "minutes": opts.w2v_minutes}, WAV2VEC2_CODE, [w2v_dir], lambda: _wav2vec2(opts, data, w2v_dir))

    staging = opts.staging
    staging.mkdir(parents=True, exist_ok=True)
    yamnet_export = runner.run(
        "export_yamnet", "export YAMNet + head to ONNX (parity against TFLite)",
        {"head": head.made, "tflite_sha256": sha256_file(opts.yamnet_tflite)}, YAMNET_EXPORT_CODE,
        [staging / YAMNET_FILE], lambda: _export_yamnet(opts, head_dir))
    w2v_export = runner.run(
        "export_wav2vec2", "export Wav2Vec2 to ONNX, float + int8 (parity against torch)",
        {"model": w2v.made, "split_sha256": data.split_sha256}, WAV2VEC2_EXPORT_CODE,
        lambda result: list(_wav2vec2_files(result).values()), lambda: _export_wav2vec2(opts, data, w2v_dir))
    document = staged_manifest(opts, data, head, w2v, yamnet_export, w2v_export)
    staged_path = staging / MANIFEST_NAME
    write_manifest(staged_path, document)

    versions = {kind: entry["version"] for kind, entry in document["models"].items()}
    temperatures = {kind: entry["temperature"] for kind, entry in document["models"].items()}
    models_inputs = {"versions": versions, "temperatures": temperatures, "split_sha256": data.split_sha256,
                     "settings": _settings(opts.cfg, "preprocess", "gate", "window", "fusion")}
    tune = runner.run("tune", "choose the operating point by false alarms per hour on long train/val streams",
                      {**models_inputs, "spec": _tune_spec(opts).to_dict()}, TUNE_CODE,
                      [build_dir() / TUNE_DIR / "tune.json"], lambda: _tune(opts, data, staged_path))
    document["operating_point"] = {key: tune.result[key] for key in MANIFEST_OPERATING_POINT_FIELDS}
    write_manifest(staged_path, document)

    if not opts.skip_eval:
        runner.run("evaluate", "evaluate both models and the ensembles on the test split",
                   {**models_inputs, "operating_point": document["operating_point"]["fusion"]}, EVAL_CODE,
                   lambda result: [opts.report_dir / "metrics.json"] + ([Path(result["feedback"]["report"])]
                                                                        if result.get("feedback") else []),
                   lambda: _evaluate(opts, staged_path))
        document = with_test_metrics(document, _read_json(opts.report_dir / "metrics.json"), opts.report_dir)

    log.info("[%d/%d] install into %s", runner.total, runner.total, opts.out)
    changed = install(document, staging, opts.out)
    _log_summary(runner.outcomes, time.perf_counter() - started, opts.out, document, changed)
    return document


def _export_yamnet(opts: BuildOptions, head_dir: Path) -> dict:
    from .yamnet_onnx import export_yamnet

    result = export_yamnet(opts.yamnet_tflite, head_dir, opts.staging / YAMNET_FILE, manifest=opts.data)
    return {key: value for key, value in result.items() if key not in ("file", "temperature")}


def _export_wav2vec2(opts: BuildOptions, data: Prepared, model_dir: Path) -> dict:
    from .wav2vec2_onnx import export_wav2vec2, pick_parity_clips

    # float vs int8 is decided on val: choosing on test would leak the test split into the model set
    chosen = data.split[QUANTIZATION_SPLIT]
    return export_wav2vec2(model_dir, opts.staging, pick_parity_clips(chosen), chosen, opts.cfg)


def _log_summary(outcomes: list[StepOutcome], seconds: float, out: Path, document: dict, changed: bool) -> None:
    from monitor.classify import ENSEMBLE_AVERAGE

    steps = ", ".join(f"{o.name} {'cached' if o.cached else f'{o.seconds:.1f} s'}" for o in outcomes)
    log.info("steps: %s", steps)
    versions = ", ".join(entry["version"] for entry in document["models"].values())
    evaluation = document.get("evaluation", {})
    decision = evaluation.get("decision_model") or ENSEMBLE_AVERAGE
    headline = evaluation.get("ensembles", {}).get(decision)
    score = f"; test {decision} accuracy {headline['accuracy']:.3f}, macro-F1 {headline['macro_f1']:.3f}" \
        if headline else ""
    if changed:
        log.info("models written to %s in %.1f s (%s)%s", out / MANIFEST_NAME, seconds, versions, score)
    else:
        log.info("up to date: %s already holds %s (checked in %.1f s)%s", out / MANIFEST_NAME, versions, seconds,
                 score)


# --- CLI -----------------------------------------------------------------------------------------

def _quiet_anonymous_info(record: logging.LogRecord) -> bool:
    """Drop INFO lines logged on the root logger (onnxruntime's quantiser prints one per tensor)."""
    return record.name != "root" or record.levelno >= logging.WARNING


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nursery-monitor build-models",
        description="Train both classifiers from labelled audio, export them to ONNX with parity checks, evaluate "
                    "them on the test split and write the model manifest. Unchanged steps are reused from build/.")
    parser.add_argument("--data", type=Path, metavar="CSV|DIR", action="append",
                        help="labelled clips: a manifest CSV or a <label>/*.wav folder (default: the shared data); "
                             "repeat it to train on the union, each source keeping its own groups (feedback "
                             "clips of a folder's feedback.csv always go to the train split)")
    parser.add_argument("--yamnet-tflite", type=Path, metavar="PATH",
                        help="YAMNet base model (default: the shared yamnet.tflite)")
    parser.add_argument("--init", metavar="PATH_OR_NAME",
                        help="pretrained Wav2Vec2 checkpoint to fine-tune (default: a compact Wav2Vec2 distilled from "
                             "YAMNet, then fine-tuned)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--w2v-minutes", type=float, metavar="M",
                        help="wall-clock cap of the Wav2Vec2 training in minutes (its steps set its length; the cap "
                             "cuts a slow run short)")
    budget.add_argument("--quick", action="store_true",
                        help=f"short Wav2Vec2 cap ({QUICK_W2V_MINUTES:g} min) and tuning stream "
                             f"({QUICK_TUNE_HOURS:g} h) for smoke runs")
    parser.add_argument("--tune-hours", type=float, metavar="H",
                        help="negative stream the operating point is tuned on (default: 12 h of train/val sound)")
    parser.add_argument("--out", type=Path, help="models folder (default: models/ or $NURSERY_MODELS)")
    parser.add_argument("--force", action="store_true", help="re-run every step, ignoring cached results")
    parser.add_argument("--skip-eval", action="store_true", help="no test-split evaluation (test_metrics stay empty)")
    add_config_option(parser)
    parser.add_argument("--seed", type=int, default=None, help="split seed (default: the split module's)")
    parser.add_argument("--verbose", action="store_true", help="debug logging, with the traceback of a failure")
    return parser


def training_data(sources: list[Path]) -> Path:
    """One source as it is; several joined into one union manifest in the build folder (training.data)."""
    from training.data import write_union_manifest

    sources = [Path(source).resolve() for source in sources]
    return sources[0] if len(sources) == 1 else write_union_manifest(sources, build_dir() / UNION_DIR_NAME)


def options_from_args(args: argparse.Namespace, cfg: Config) -> BuildOptions:
    from training.split import DEFAULT_SPLIT_SEED

    minutes = QUICK_W2V_MINUTES if args.quick else args.w2v_minutes
    return BuildOptions(
        data=training_data(args.data or [default_manifest_csv()]),
        yamnet_tflite=(args.yamnet_tflite or default_yamnet_tflite()).resolve(),
        init=args.init, w2v_minutes=minutes, tune_hours=QUICK_TUNE_HOURS if args.quick else args.tune_hours,
        out=(args.out or models_dir()).resolve(), force=args.force,
        skip_eval=args.skip_eval, seed=DEFAULT_SPLIT_SEED if args.seed is None else args.seed, cfg=cfg)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.w2v_minutes is not None and args.w2v_minutes <= 0:
        parser.error(f"--w2v-minutes must be positive, got {args.w2v_minutes:g}")
    cfg = load_command_config("build-models", args.config)
    if cfg is None:
        return EXIT_CONFIG
    setup_logging("DEBUG" if args.verbose else cfg.log_level)
    if not args.verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_quiet_anonymous_info)
    try:
        opts = options_from_args(args, cfg)
    except (ValueError, OSError) as exc:  # a bad --data: a usage error, like a bad config
        return fail("build-models", exc, EXIT_CONFIG)
    try:
        run_build(opts)
    except (BuildError, ModelError) as exc:
        return fail("build-models", exc)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
