"""One ONNX file for the YAMNet branch: the converted YAMNet with the trained head grafted on its embedding.

Input ``waveform`` [batch, 15600] (prepared windows); outputs ``logits`` [batch, 3] in ``LABELS`` order,
``audioset_scores`` [batch, 521] and ``embedding`` [batch, 1024]. The export fails unless, on windows of
real clips, the ONNX AudioSet scores match the TFLite interpreter (running the same weights in float, see
``float_weights_tflite``), the grafted logits match the head applied in numpy, and batched runs match
one-window runs. The distance to the original hybrid-quantised TFLite is reported as information.

    python -m export.yamnet_onnx [--tflite PATH] [--head DIR] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from monitor.audiofile import load_clip
from monitor.command import setup_logging
from monitor.config import PreprocessConfig
from monitor.constants import LABELS, WINDOW_SAMPLES, YAMNET_AUDIOSET_CLASSES
from monitor.paths import default_manifest_csv, default_yamnet_tflite, models_dir
from monitor.preprocess import clip_windows, prepare_batch
from training.data import load_dataset
from training.train_yamnet import AUDIOSET_LOG_FLOOR, HeadWeights, default_head_dir, load_head
from training.yamnet_features import (
    BATCH_DIM,
    EMBEDDING_NAME,
    INPUT_NAME,
    SCORES_NAME,
    convert_yamnet,
    dequantize,
    make_session,
)

log = logging.getLogger(__name__)

LOGITS_NAME = "logits"
MODEL_FILE = "yamnet_classifier.onnx"
SCORES_TOLERANCE = 1e-4
"""Max abs difference of AudioSet scores (in [0, 1]) between ONNX Runtime and the TFLite interpreter running
the same weights in float (see ``float_weights_tflite``)."""
LOGITS_TOLERANCE = 1e-4
"""Max abs difference between the grafted logits and the numpy head on the same embeddings."""
PARITY_CLIPS_PER_LABEL = 2
PARITY_WINDOWS_PER_CLIP = 4


class ExportError(RuntimeError):
    """The exported model does not reproduce its references; nothing usable was written."""


def graft_head(base: onnx.ModelProto, weights: HeadWeights) -> onnx.ModelProto:
    """Base YAMNet + MatMul/Add/Relu/MatMul/Add on ``embedding`` (and log AudioSet scores, when the head takes
    them) -> ``logits``, outputs in contract order."""
    model = onnx.ModelProto()
    model.CopyFrom(base)
    graph = model.graph
    params = {"head_w1": weights.w1, "head_b1": weights.b1, "head_w2": weights.w2, "head_b2": weights.b2}
    head_input = EMBEDDING_NAME
    if weights.audioset_inputs:
        params["head_log_floor"] = np.array(AUDIOSET_LOG_FLOOR, np.float32)
        graph.node.extend([
            helper.make_node("Add", [SCORES_NAME, "head_log_floor"], ["head_scores_floored"], name="head_floor"),
            helper.make_node("Log", ["head_scores_floored"], ["head_log_scores"], name="head_log"),
            helper.make_node("Concat", [EMBEDDING_NAME, "head_log_scores"], ["head_inputs"], axis=1,
                             name="head_concat"),
        ])
        head_input = "head_inputs"
    graph.initializer.extend(numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in params.items())
    graph.node.extend([
        helper.make_node("MatMul", [head_input, "head_w1"], ["head_hidden_linear"], name="head_fc1"),
        helper.make_node("Add", ["head_hidden_linear", "head_b1"], ["head_hidden_biased"], name="head_bias1"),
        helper.make_node("Relu", ["head_hidden_biased"], ["head_hidden"], name="head_relu"),
        helper.make_node("MatMul", ["head_hidden", "head_w2"], ["head_out_linear"], name="head_fc2"),
        helper.make_node("Add", ["head_out_linear", "head_b2"], [LOGITS_NAME], name="head_bias2"),
    ])
    batch = graph.input[0].type.tensor_type.shape.dim[0]
    batch_dim = batch.dim_param or batch.dim_value or BATCH_DIM
    outputs = list(graph.output)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(LOGITS_NAME, TensorProto.FLOAT, [batch_dim, len(LABELS)]))
    graph.output.extend(outputs)
    onnx.checker.check_model(model)
    return model


def parity_windows(manifest: Path | None = None, cfg: PreprocessConfig | None = None) -> tuple[np.ndarray, int]:
    """Prepared windows of a few real clips of every label (deterministic choice), and the clip count."""
    cfg = cfg or PreprocessConfig()
    clips = load_dataset(manifest or default_manifest_csv())
    chosen = []
    for label in LABELS:
        of_label = sorted((c for c in clips if c.label == label), key=lambda c: str(c.path))
        step = max(len(of_label) // PARITY_CLIPS_PER_LABEL, 1)
        chosen.extend(of_label[::step][:PARITY_CLIPS_PER_LABEL])
    windows = [clip_windows(load_clip(c.path, cfg), WINDOW_SAMPLES)[:PARITY_WINDOWS_PER_CLIP] for c in chosen]
    return prepare_batch(np.concatenate(windows), cfg), len(chosen)


def float_weights_tflite(tflite_path: Path) -> bytes:
    """The TFLite model with its int8 weights stored as float (scale * (q - zero_point)).

    The shared model is dynamic-range quantised: TFLite's hybrid kernels quantise activations on the
    fly, so its scores differ from the float network its weights describe (by up to ~0.5, and between
    TFLite's own kernel sets). The ONNX model is that float network; this is its TFLite reference.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(tflite_path))
    for subgraph in model.subgraphs:
        dequantised = {int(i) for op in subgraph.operators
                       if _builtin_code(model, op) == schema.BuiltinOperator.DEQUANTIZE for i in op.inputs}
        for index, tensor in enumerate(subgraph.tensors):
            buffer = model.buffers[tensor.buffer]
            if tensor.type != schema.TensorType.INT8 or index in dequantised or buffer.data is None:
                continue
            quantised = np.asarray(buffer.data, dtype=np.uint8).view(np.int8).reshape(tensor.shape)
            weights = dequantize(quantised, tensor.quantization.scale, tensor.quantization.zeroPoint,
                                 tensor.quantization.quantizedDimension)
            buffer.data = np.frombuffer(weights.tobytes(), np.uint8)
            tensor.type = schema.TensorType.FLOAT32
            tensor.quantization = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _builtin_code(model, op) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def tflite_scores(prepared: np.ndarray, tflite_path: Path | None = None, content: bytes | None = None) -> np.ndarray:
    """AudioSet scores from the TFLite interpreter, one window per call (its input is [1, 15600])."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(tflite_path) if content is None else None,
                                      model_content=content)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    scores_index = next(d["index"] for d in interpreter.get_output_details()
                        if tuple(d["shape"]) == (1, YAMNET_AUDIOSET_CLASSES))
    rows = []
    for window in prepared:
        interpreter.set_tensor(input_index, window[None, :].astype(np.float32))
        interpreter.invoke()
        rows.append(interpreter.get_tensor(scores_index)[0].copy())
    return np.stack(rows)


def check_parity(model_path: Path, tflite_path: Path, weights: HeadWeights, prepared: np.ndarray) -> dict:
    """Max abs differences of the exported model against TFLite (scores) and the numpy head (logits)."""
    session = make_session(model_path)
    logits, scores, embeddings = session.run([LOGITS_NAME, SCORES_NAME, EMBEDDING_NAME], {INPUT_NAME: prepared})
    one_at_a_time = np.concatenate([session.run([LOGITS_NAME], {INPUT_NAME: w[None, :]})[0] for w in prepared])
    hybrid = tflite_scores(prepared, tflite_path=tflite_path)
    return {
        "windows": int(len(prepared)),
        "audioset_vs_tflite_float_weights_max_abs_diff": float(np.max(np.abs(
            scores - tflite_scores(prepared, content=float_weights_tflite(tflite_path))))),
        "logits_vs_numpy_head_max_abs_diff": float(np.max(np.abs(logits - weights.logits(embeddings, scores)))),
        "logits_batch1_vs_batched_max_abs_diff": float(np.max(np.abs(one_at_a_time - logits))),
        "info_audioset_vs_tflite_hybrid_max_abs_diff": float(np.max(np.abs(scores - hybrid))),
        "info_audioset_vs_tflite_hybrid_mean_abs_diff": float(np.mean(np.abs(scores - hybrid))),
        "info_audioset_top1_agreement_with_tflite_hybrid": float(np.mean(scores.argmax(1) == hybrid.argmax(1))),
    }


def _enforce(figures: dict, key: str, tolerance: float, what: str) -> None:
    if not figures[key] <= tolerance:
        raise ExportError(f"{what} by {figures[key]:.3g} (tolerance {tolerance}); model not written")


def export_yamnet(tflite_path: Path | None = None, head_dir: Path | None = None, out_path: Path | None = None,
                  manifest: Path | None = None) -> dict:
    """Convert, graft, verify, then move the model into place; returns the measured parity figures."""
    tflite_path = Path(tflite_path or default_yamnet_tflite())
    out_path = Path(out_path or models_dir() / MODEL_FILE)
    weights, metadata = load_head(head_dir or default_head_dir())
    base = convert_yamnet(tflite_path)
    model = graft_head(onnx.load(str(base.path)), weights)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    onnx.save(model, str(tmp))
    prepared, n_clips = parity_windows(manifest)
    try:
        figures = {"clips": n_clips, **check_parity(tmp, tflite_path, weights, prepared)}
        _enforce(figures, "audioset_vs_tflite_float_weights_max_abs_diff", SCORES_TOLERANCE,
                 "ONNX AudioSet scores differ from the TFLite interpreter")
        _enforce(figures, "logits_vs_numpy_head_max_abs_diff", LOGITS_TOLERANCE,
                 "grafted logits differ from the numpy head")
        _enforce(figures, "logits_batch1_vs_batched_max_abs_diff", LOGITS_TOLERANCE,
                 "batched logits differ from one-window runs")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out_path)
    log.info("wrote %s (parity %s)", out_path, figures)
    return {**figures, "file": str(out_path), "batched": base.batched, "temperature": metadata["temperature"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tflite", type=Path, default=None, help="YAMNet TFLite (default: shared/models)")
    parser.add_argument("--head", type=Path, default=None, help="trained head folder (default: build/yamnet_head)")
    parser.add_argument("--out", type=Path, default=None, help=f"output ONNX (default: models/{MODEL_FILE})")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    print(json.dumps(export_yamnet(args.tflite, args.head, args.out), indent=1))


if __name__ == "__main__":
    main()
