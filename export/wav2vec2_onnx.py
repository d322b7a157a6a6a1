"""Trained Wav2Vec2 classifier -> ONNX (float, and dynamic int8), checked against the torch model before use.

The float export must reproduce the torch logits on real windows or the export fails: a silently wrong
model would vote in every fusion decision. The int8 file is only a candidate: it becomes the default
variant when its test macro-F1 is within ``MAX_INT8_F1_DROP`` of the float model's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("USE_TF", "0")  # transformers would otherwise import TensorFlow: seconds and GBs for nothing

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from optimum.exporters.onnx import main_export
from transformers import Wav2Vec2ForSequenceClassification

from monitor.classify import create_session
from monitor.command import add_config_option, setup_logging
from monitor.config import Config, load_config
from monitor.constants import LABELS, WINDOW_SAMPLES
from monitor.model_manifest import variant_record
from monitor.paths import build_dir, default_manifest_csv
from monitor.windows import hop_samples_from_seconds
from training.data import Clip
from training.split import dataset_split
from training.train_wav2vec2 import (
    Predictions,
    default_model_dir,
    evaluation_view,
    model_inputs,
    predict_logits,
    read_metadata,
    split_metrics,
)
from training.windows import WindowSet, build_window_set

log = logging.getLogger(__name__)

FLOAT_FILE = "wav2vec2_classifier.onnx"
INT8_FILE = "wav2vec2_classifier.int8.onnx"
STANDALONE_SUBDIR = "wav2vec2_export"
"""Output of the stand-alone command under build/: not models/, whose manifest pins every file's sha256 and
is written by build-models; not the model folder, whose contents key build-models' up-to-date check."""
REPORT_FILE = "export.json"
"""What the stand-alone command measured, beside the ONNX files."""
INPUT_NAME = "input_values"
OUTPUT_NAME = "logits"
EXPORT_TASK = "audio-classification"
ONNX_OPSET = 18
"""Pinned, so a library upgrade cannot change the graph the runtime loads; 18 is optimum's minimum for wav2vec2."""
FLOAT_TOLERANCE = 1e-3
"""Largest max-abs logit difference between torch and the float ONNX model before the export is refused."""
MAX_INT8_F1_DROP = 0.01
"""int8 becomes the default only if its test macro-F1 is less than this below the float model's."""
MIN_PARITY_CLIPS = 5
INT8_OP_TYPES = ("MatMul", "Gemm")
"""Only the matrix products (transformer, projector, head) are quantised: ONNX Runtime's dynamic quantiser fails
on the weight-normalised positional convolution, whose weight is computed in the graph, not stored."""
SPEED_WARMUP_RUNS = 5
SPEED_RUNS = 50
EVAL_BATCH = 32
EVAL_THREADS = 2
BYTES_PER_MB = 1024 * 1024
VARIANTS = ("float", "int8")


class ExportError(RuntimeError):
    """The exported model is missing, malformed or disagrees with the trained one."""


@dataclass
class Parity:
    windows: int
    clips: int
    float_max_abs_diff: float
    int8_max_abs_diff: float
    int8_argmax_agreement: float


def export_float(model_dir: Path, out_path: Path) -> Path:
    """optimum's exporter into a scratch folder, then the single .onnx file moved into place."""
    with tempfile.TemporaryDirectory(prefix="wav2vec2-onnx-") as scratch:
        main_export(str(model_dir), output=scratch, task=EXPORT_TASK, opset=ONNX_OPSET, device="cpu",
                    do_validation=False)
        produced = Path(scratch) / "model.onnx"
        if not produced.is_file():
            raise ExportError(f"optimum wrote no model.onnx for {model_dir} (got {sorted(os.listdir(scratch))})")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(produced), out_path)
    check_io(ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"]), out_path)
    return out_path


def check_io(session: ort.InferenceSession, path: Path) -> None:
    """The runtime contract: one float input ``input_values`` [batch, samples], output ``logits`` [batch, 3]."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [INPUT_NAME] or OUTPUT_NAME not in [o.name for o in outputs]:
        raise ExportError(f"{path}: inputs {[i.name for i in inputs]}, outputs {[o.name for o in outputs]}; "
                          f"expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}")
    logits_shape = next(o.shape for o in outputs if o.name == OUTPUT_NAME)
    if len(logits_shape) != 2 or logits_shape[1] != len(LABELS):
        raise ExportError(f"{path}: logits shape {logits_shape}, expected [batch, {len(LABELS)}]")


def quantize_int8(float_path: Path, out_path: Path) -> Path:
    quantize_dynamic(str(float_path), str(out_path), weight_type=QuantType.QInt8,
                     op_types_to_quantize=list(INT8_OP_TYPES))
    check_io(ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"]), out_path)
    return out_path


def onnx_logits(session: ort.InferenceSession, inputs: np.ndarray, batch_size: int = EVAL_BATCH) -> np.ndarray:
    out = [session.run([OUTPUT_NAME], {INPUT_NAME: inputs[s:s + batch_size]})[0]
           for s in range(0, len(inputs), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, len(LABELS)), np.float32)


def ms_per_window(path: Path) -> tuple[float, float]:
    """(median, best) latency of one window (batch 1) on one thread with the runtime's session settings;
    the best run is the figure least disturbed by other jobs on a shared machine."""
    session = create_session(path, threads=1)
    window = np.random.default_rng(0).standard_normal((1, WINDOW_SAMPLES)).astype(np.float32)
    for _ in range(SPEED_WARMUP_RUNS):
        session.run([OUTPUT_NAME], {INPUT_NAME: window})
    times = []
    for _ in range(SPEED_RUNS):
        start = time.perf_counter()
        session.run([OUTPUT_NAME], {INPUT_NAME: window})
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0), float(np.min(times) * 1000.0)


def _windows(clips: list[Clip], cfg: Config) -> WindowSet:
    return build_window_set(clips, cfg.preprocess, hop_samples_from_seconds(cfg.window.training_hop_seconds), cfg.gate,
                            progress=False)


def check_parity(model: Wav2Vec2ForSequenceClassification, float_path: Path, int8_path: Path,
                 parity_clips: list[Clip], cfg: Config) -> Parity:
    """torch vs ONNX logits on every window of real clips; raises ``ExportError`` when float disagrees."""
    inputs = model_inputs(_windows(parity_clips, cfg).windows, cfg.preprocess)
    reference = predict_logits(model, inputs, EVAL_BATCH)
    float_logits = onnx_logits(create_session(float_path, EVAL_THREADS), inputs)
    int8_logits = onnx_logits(create_session(int8_path, EVAL_THREADS), inputs)
    parity = Parity(
        windows=len(inputs), clips=len(parity_clips),
        float_max_abs_diff=float(np.max(np.abs(float_logits - reference))),
        int8_max_abs_diff=float(np.max(np.abs(int8_logits - reference))),
        int8_argmax_agreement=float(np.mean(int8_logits.argmax(axis=1) == reference.argmax(axis=1))))
    if not parity.float_max_abs_diff <= FLOAT_TOLERANCE:
        raise ExportError(f"{float_path}: float ONNX logits differ from torch by {parity.float_max_abs_diff:.2e} "
                          f"(tolerance {FLOAT_TOLERANCE:.0e}) on {parity.windows} windows")
    return parity


def evaluate_onnx(path: Path, window_set: WindowSet, cfg: Config, temperature: float) -> dict:
    view = evaluation_view(window_set)
    logits = onnx_logits(create_session(path, EVAL_THREADS), model_inputs(view.windows, cfg.preprocess))
    return split_metrics(Predictions(logits, view.labels.astype(np.int64), view.clip_index), temperature)


def choose_variant(float_f1: float, int8_f1: float) -> str:
    return "int8" if float_f1 - int8_f1 < MAX_INT8_F1_DROP else "float"


def _variant_report(path: Path, base: Path, metrics: dict) -> dict:
    record = variant_record(path, base)
    median_ms, best_ms = ms_per_window(path)
    return {**record, "path": str(path), "size_mb": record["size_bytes"] / BYTES_PER_MB,
            "ms_per_window": median_ms, "ms_per_window_best": best_ms, "test": metrics}


def export_wav2vec2(model_dir: Path, out_dir: Path, parity_clips: list[Clip], eval_clips: list[Clip] | None = None,
                    cfg: Config | None = None) -> dict:
    """Export float + int8 to ``out_dir``, verify parity, measure size / speed / macro-F1 and pick the default.

    ``eval_clips`` decide float vs int8 (each variant's ``test`` figures are measured on them); pass the
    validation split so the choice does not peek at the test split. Without them the parity clips are used.
    """
    if len(parity_clips) < MIN_PARITY_CLIPS:
        raise ValueError(f"parity needs at least {MIN_PARITY_CLIPS} clips, got {len(parity_clips)}")
    cfg = cfg or Config()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    temperature = float(read_metadata(model_dir).get("temperature", 1.0))
    try:
        model = Wav2Vec2ForSequenceClassification.from_pretrained(model_dir)
    except OSError as exc:
        raise ExportError(f"{model_dir}: not a saved Wav2Vec2 model ({str(exc).splitlines()[0]})") from None
    model.eval()
    float_path = export_float(model_dir, out_dir / FLOAT_FILE)
    int8_path = quantize_int8(float_path, out_dir / INT8_FILE)
    parity = check_parity(model, float_path, int8_path, parity_clips, cfg)
    eval_set = _windows(eval_clips or parity_clips, cfg)
    variants = {name: _variant_report(path, out_dir, evaluate_onnx(path, eval_set, cfg, temperature))
                for name, path in zip(VARIANTS, (float_path, int8_path), strict=True)}
    float_f1 = variants["float"]["test"]["window"]["macro_f1"]
    int8_f1 = variants["int8"]["test"]["window"]["macro_f1"]
    default = choose_variant(float_f1, int8_f1)
    report = {
        "float": variants["float"],
        "int8": variants["int8"],
        "parity": parity.__dict__,
        "float_tolerance": FLOAT_TOLERANCE,
        "opset": ONNX_OPSET,
        "int8_op_types": list(INT8_OP_TYPES),
        "temperature": temperature,
        "default_variant": default,
        "decision": (f"{default}: int8 window macro-F1 {int8_f1:.4f} vs float {float_f1:.4f} on "
                     f"{len(eval_clips or parity_clips)} clips (int8 only if the drop is < {MAX_INT8_F1_DROP})"),
    }
    log.info("wav2vec2 ONNX: float %.2f MB %.1f ms, int8 %.2f MB %.1f ms, parity %.1e / %.1e, default %s",
             variants["float"]["size_mb"], variants["float"]["ms_per_window"], variants["int8"]["size_mb"],
             variants["int8"]["ms_per_window"], parity.float_max_abs_diff, parity.int8_max_abs_diff, default)
    return report


def pick_parity_clips(clips: list[Clip], per_label: int = 2) -> list[Clip]:
    """A few clips of each label (sorted by path, so the choice is stable), at least ``MIN_PARITY_CLIPS``."""
    ordered = sorted(clips, key=lambda c: str(c.path))
    chosen = [c for label in LABELS for c in [c for c in ordered if c.label == label][:per_label]]
    extra = [c for c in ordered if c not in chosen]
    return chosen + extra[:max(0, MIN_PARITY_CLIPS - len(chosen))]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m export.wav2vec2_onnx", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="trained model (default: build/wav2vec2)")
    parser.add_argument("--manifest", type=Path, default=None, help="manifest CSV or folder (default: shared)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default: build/{STANDALONE_SUBDIR}; models/ is written by build-models "
                        "together with the manifest that pins the files' sha256)")
    add_config_option(parser)
    args = parser.parse_args(argv)
    setup_logging("WARNING")
    for name in ("export", "training", __name__):  # not root: the quantiser logs a line per tensor there
        logging.getLogger(name).setLevel(logging.INFO)
    model_dir = args.model_dir or default_model_dir()
    try:
        split = dataset_split(args.manifest or default_manifest_csv()).split
    except ValueError as exc:
        parser.error(str(exc))
    cfg = load_config(args.config)
    out_dir = args.out or build_dir() / STANDALONE_SUBDIR
    report = export_wav2vec2(model_dir, out_dir, pick_parity_clips(split["test"]), split["val"], cfg)
    test_set = _windows(split["test"], cfg)
    report["test_split"] = {name: evaluate_onnx(Path(report[name]["path"]), test_set, cfg, report["temperature"])
                            for name in VARIANTS}
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({"parity": report["parity"], "default_variant": report["default_variant"],
                      "decision": report["decision"],
                      **{name: {"size_mb": report[name]["size_mb"], "ms_per_window": report[name]["ms_per_window"],
                                "ms_per_window_best": report[name]["ms_per_window_best"],
                                "test_window": _headline(report["test_split"][name]["window"]),
                                "test_clip": _headline(report["test_split"][name]["clip"])} for name in VARIANTS}},
                     indent=1))
    return report


def _headline(report: dict) -> dict:
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
            "recall": {label: figures["recall"] for label, figures in report["per_class"].items()}}


if __name__ == "__main__":
    main()
