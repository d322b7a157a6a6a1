"""YAMNet as an ONNX feature extractor: convert the TFLite model once, then embed windows with ONNX Runtime.

The converted base model (``build/yamnet_base.onnx``) has the runtime's contract already: input
``waveform`` [batch, 15600] (windows passed through ``prepare_window``), outputs ``audioset_scores``
[batch, 521] and ``embedding`` [batch, 1024]. The TFLite graph is built for one waveform, so the
conversion rewrites its small front end (framing, STFT, mel) to carry a leading batch axis; if that
rewrite ever fails to reproduce the single-window outputs, the model keeps batch 1 and says so. The
int8 weights of the (dynamic-range quantised) TFLite file are folded into float constants, so the ONNX
model is the float network they describe, with the same numbers at every ORT optimisation level.

CLI: ``python -m training.yamnet_features [--tflite PATH] [--bench]`` converts (cached) and prints
batch-1 vs batch-8 timings as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from monitor.command import setup_logging
from monitor.constants import (
    WINDOW_SAMPLES,
    YAMNET_AUDIOSET_CLASSES,
    YAMNET_EMBEDDING_SIZE,
    YAMNET_EMBEDDING_TENSOR,
)
from monitor.model_manifest import sha256_file
from monitor.paths import build_dir, default_yamnet_tflite
from monitor.progress import progress_bar

from .cache import save_npz_atomic

log = logging.getLogger(__name__)

ONNX_OPSET = 17
INPUT_NAME = "waveform"
SCORES_NAME = "audioset_scores"
EMBEDDING_NAME = "embedding"
BATCH_DIM = "batch"
BATCH_CHECK_SIZE = 8
"""Batch size used to verify the batched rewrite and for the timing comparison."""
PARITY_TOLERANCE = 1e-4
"""Max abs difference allowed between batched and one-at-a-time outputs."""
DEFAULT_BATCH = 8
BASE_MODEL_NAME = "yamnet_base.onnx"
CONVERSION_VERSION = 3
"""Part of the cache key: bump when the conversion / rewrite changes."""


class NotBatchable(Exception):
    """The front end holds an op the batch rewrite does not know; the model stays batch 1."""


@dataclass(frozen=True)
class BaseModel:
    path: Path
    batched: bool
    """True when the batch axis is dynamic; False = feed one window per run."""


# --- conversion ----------------------------------------------------------------------------------

def _embedding_tensor(graph: onnx.GraphProto) -> str:
    """The pooled 1024-d tensor: by the documented name if present, else the Squeeze after GlobalAveragePool.

    tf2onnx's numeric suffix (``..._Squeeze__273:0``) changes between versions, hence the fallback.
    """
    produced = {out for node in graph.node for out in node.output}
    if YAMNET_EMBEDDING_TENSOR in produced:
        return YAMNET_EMBEDDING_TENSOR
    pools = {node.output[0] for node in graph.node if node.op_type == "GlobalAveragePool"}
    squeezes = [node.output[0] for node in graph.node if node.op_type == "Squeeze" and node.input[0] in pools]
    if len(squeezes) != 1:
        raise RuntimeError(f"cannot find YAMNet's embedding tensor ({YAMNET_EMBEDDING_TENSOR} or a "
                           f"GlobalAveragePool->Squeeze) in the converted graph")
    log.info("embedding tensor is %s", squeezes[0])
    return squeezes[0]


def dequantize(quantised: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | float, axis: int) -> np.ndarray:
    """``scale * (q - zero_point)`` as float32; a per-channel scale and zero point apply along ``axis``."""
    quantised = np.asarray(quantised, dtype=np.float32)
    scale = np.asarray(scale, dtype=np.float32)
    zero_point = np.broadcast_to(np.asarray(zero_point, dtype=np.float32), scale.shape)
    if scale.size > 1:
        shape = [1] * quantised.ndim
        shape[axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return ((quantised - zero_point) * scale).astype(np.float32)


def _fold_dequantize(graph: onnx.GraphProto) -> int:
    """Replace DequantizeLinear of constant int8 weights by float constants; returns how many were folded.

    The shared TFLite file stores most weights as int8 (dynamic-range quantisation). Left as
    DequantizeLinear nodes, ONNX Runtime's extended graph optimisations fuse them into integer kernels
    that also quantise the activations, which moves AudioSet scores by up to ~0.5 and makes the output
    depend on the session's optimisation level. Folded, the model is the plain float network those
    weights describe, identical at every optimisation level.
    """
    constants = {init.name: init for init in graph.initializer}
    kept, folded = [], []
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or not all(name in constants for name in node.input):
            kept.append(node)
            continue
        values = [numpy_helper.to_array(constants[name]) for name in node.input]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        weights = dequantize(values[0], values[1], values[2] if len(values) > 2 else 0.0, axis)
        folded.append(numpy_helper.from_array(weights, node.output[0]))
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(folded)
    return len(folded)


def _tflite_to_onnx(tflite_path: Path) -> onnx.ModelProto:
    import tf2onnx.convert

    model, _ = tf2onnx.convert.from_tflite(str(tflite_path), opset=ONNX_OPSET)
    log.info("folded %d int8 weight tensors into float", _fold_dequantize(model.graph))
    return model


class _FrontEndRewriter:
    """Adds a leading batch axis to every op between the waveform input and the first Conv."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        self.new_initializers: list[onnx.TensorProto] = []

    def _const(self, name: str) -> np.ndarray:
        if name not in self.constants:
            raise NotBatchable(f"input {name} is not a constant")
        return self.constants[name]

    def _new_const(self, base: str, value: np.ndarray) -> str:
        name = f"{base}__batched"
        self.new_initializers.append(numpy_helper.from_array(np.asarray(value, dtype=np.int64), name))
        return name

    def _reshape(self, node: onnx.NodeProto) -> None:
        shape = [int(v) for v in self._const(node.input[1])]
        batched = [-1] + (shape[1:] if shape[0] == 1 else shape)
        node.input[1] = self._new_const(node.input[1] + "_" + node.output[0], batched)

    def _slice(self, node: onnx.NodeProto) -> None:
        starts = self._const(node.input[1])
        axes = self._const(node.input[3]) if len(node.input) > 3 and node.input[3] else np.arange(len(starts))
        new_axes = self._new_const(node.output[0] + "_axes", np.asarray(axes) + 1)
        while len(node.input) < 4:
            node.input.append("")
        node.input[3] = new_axes

    def _gather(self, node: onnx.NodeProto) -> None:
        for attr in node.attribute:
            if attr.name == "axis":
                attr.i += 1
                return
        node.attribute.append(helper.make_attribute("axis", 1))

    def _pad(self, node: onnx.NodeProto) -> None:
        pads = [int(v) for v in self._const(node.input[1])]
        rank = len(pads) // 2
        node.input[1] = self._new_const(node.output[0] + "_pads", [0, *pads[:rank], 0, *pads[rank:]])

    def _gemm_to_matmul(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0) or attrs.get("transB", 0) or attrs.get("alpha", 1.0) != 1.0 \
                or attrs.get("beta", 1.0) != 1.0:
            raise NotBatchable("Gemm with transposes or scaling")
        product = node.output[0] + "__matmul"
        nodes = [helper.make_node("MatMul", [node.input[0], node.input[1]], [product])]
        if len(node.input) > 2 and node.input[2]:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]]))
        else:
            nodes[0].output[0] = node.output[0]
        return nodes

    ELEMENTWISE = {"Mul", "Add", "Sub", "Div", "Sqrt", "Log", "MatMul", "Abs", "Cast", "DequantizeLinear", "Max"}

    def rewrite(self) -> None:
        nodes: list[onnx.NodeProto] = []
        in_front_end = True
        for node in self.graph.node:
            if node.op_type == "Conv":
                in_front_end = False
            if not in_front_end or node.op_type in self.ELEMENTWISE:
                nodes.append(node)
            elif node.op_type == "Reshape":
                self._reshape(node)
                nodes.append(node)
            elif node.op_type == "Slice":
                self._slice(node)
                nodes.append(node)
            elif node.op_type == "Gather":
                self._gather(node)
                nodes.append(node)
            elif node.op_type == "Pad":
                self._pad(node)
                nodes.append(node)
            elif node.op_type == "Gemm":
                nodes.extend(self._gemm_to_matmul(node))
            else:
                raise NotBatchable(f"front-end op {node.op_type} ({node.name})")
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        self.graph.initializer.extend(self.new_initializers)


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


GENERATED_NAME = re.compile(r"__\d+")
"""tf2onnx numbers the constants it folds (``const_fold_opt__259``) in an order that changes from run to run."""


def canonical_names(graph: onnx.GraphProto) -> None:
    """Names free of tf2onnx's run-dependent counters, so converting the same TFLite twice writes the same bytes: the
    model's hash, and the version the runtime and MQTT report, then change only when the model does (two clean builds
    of identical weights used to ship two YAMNet versions). Initializers are named after their content and sorted;
    nodes and the tensors they make lose the counter (a clash, in graph order, gets ``~1``, ``~2``, ...)."""
    renamed = {}
    for init in graph.initializer:
        if GENERATED_NAME.search(init.name):
            content = onnx.TensorProto()
            content.CopyFrom(init)
            content.name = ""
            renamed[init.name] = f"const_{hashlib.sha256(content.SerializeToString()).hexdigest()[:16]}"
    taken = {*(renamed.values()), *(init.name for init in graph.initializer if init.name not in renamed),
             *(value.name for value in (*graph.input, *graph.output))}
    node_names = {node.name for node in graph.node if not GENERATED_NAME.search(node.name)}
    for node in graph.node:
        for name in node.output:
            if GENERATED_NAME.search(name) and name not in taken:
                renamed[name] = _unclaimed(GENERATED_NAME.sub("", name), taken)
        if GENERATED_NAME.search(node.name):
            node.name = _unclaimed(GENERATED_NAME.sub("", node.name), node_names)
    for node in graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        node.output[:] = [renamed.get(name, name) for name in node.output]
    by_name: dict[str, onnx.TensorProto] = {}
    for init in graph.initializer:
        init.name = renamed.get(init.name, init.name)
        by_name.setdefault(init.name, init)  # equal content, equal name: one copy is enough
    del graph.initializer[:]
    graph.initializer.extend(by_name[name] for name in sorted(by_name))


def _unclaimed(name: str, taken: set[str]) -> str:
    candidate, clash = name, 0
    while candidate in taken:
        clash += 1
        candidate = f"{name}~{clash}"
    taken.add(candidate)
    return candidate


def _set_io(model: onnx.ModelProto, embedding_tensor: str, batch_dim: str | int) -> None:
    """Input ``waveform`` and outputs ``audioset_scores`` / ``embedding``, all with ``batch_dim`` first."""
    graph = model.graph
    old_input = graph.input[0].name
    scores_tensor = graph.output[0].name
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old_input:
                node.input[i] = INPUT_NAME
    graph.node.extend([helper.make_node("Identity", [scores_tensor], [SCORES_NAME]),
                       helper.make_node("Identity", [embedding_tensor], [EMBEDDING_NAME])])
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [batch_dim, WINDOW_SAMPLES]))
    del graph.output[:]
    graph.output.extend([
        helper.make_tensor_value_info(SCORES_NAME, TensorProto.FLOAT, [batch_dim, YAMNET_AUDIOSET_CLASSES]),
        helper.make_tensor_value_info(EMBEDDING_NAME, TensorProto.FLOAT, [batch_dim, YAMNET_EMBEDDING_SIZE]),
    ])
    del graph.value_info[:]
    _drop_unused_initializers(graph)
    canonical_names(graph)


def make_session(model: onnx.ModelProto | Path, threads: int = 1) -> ort.InferenceSession:
    """CPU session with a fixed thread count (the device has few cores and other work to do)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _probe_windows(n: int, seed: int = 0) -> np.ndarray:
    """Noise windows at a typical prepared level, for structural checks of the converted graph."""
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((n, WINDOW_SAMPLES))).astype(np.float32)


def _outputs_one_at_a_time(session: ort.InferenceSession, windows: np.ndarray) -> list[np.ndarray]:
    outs = [session.run(None, {INPUT_NAME: w[None, :]}) for w in windows]
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def _batched_model(single: onnx.ModelProto, embedding: str) -> onnx.ModelProto | None:
    """The dynamic-batch rewrite, or None when it does not reproduce the single-window model."""
    batched = onnx.ModelProto()
    batched.CopyFrom(single)
    try:
        _FrontEndRewriter(batched.graph).rewrite()
        _set_io(batched, embedding, BATCH_DIM)
        onnx.checker.check_model(batched)
        probe = _probe_windows(BATCH_CHECK_SIZE)
        reference = _outputs_one_at_a_time(make_session(_finished(single, embedding)), probe)
        got = make_session(batched).run(None, {INPUT_NAME: probe})
    except (NotBatchable, onnx.checker.ValidationError, ort_errors.Fail, ort_errors.InvalidArgument,
            ort_errors.InvalidGraph, ort_errors.RuntimeException) as exc:
        log.warning("YAMNet stays batch 1: batch rewrite failed (%s)", exc)
        return None
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(reference, got, strict=True))
    if diff > PARITY_TOLERANCE:
        log.warning("YAMNet stays batch 1: batched outputs differ by %.2g", diff)
        return None
    log.info("dynamic batch verified (max diff %.2g at batch %d)", diff, BATCH_CHECK_SIZE)
    return batched


def _finished(single: onnx.ModelProto, embedding: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.CopyFrom(single)
    _set_io(model, embedding, 1)
    return model


def convert_yamnet(tflite_path: Path | None = None, out_path: Path | None = None) -> BaseModel:
    """TFLite -> ONNX base model (cached by the TFLite hash); dynamic batch when the rewrite verifies."""
    tflite_path = Path(tflite_path or default_yamnet_tflite())
    if not tflite_path.is_file():
        raise FileNotFoundError(f"YAMNet TFLite model not found: {tflite_path}")
    out_path = Path(out_path or build_dir() / BASE_MODEL_NAME)
    stamp_path = out_path.with_suffix(".json")
    stamp = {"tflite_sha256": sha256_file(tflite_path), "version": CONVERSION_VERSION, "opset": ONNX_OPSET}
    if out_path.is_file() and stamp_path.is_file():
        saved = json.loads(stamp_path.read_text())
        if {k: saved.get(k) for k in stamp} == stamp:
            return BaseModel(out_path, bool(saved.get("batched")))
    log.info("converting %s to ONNX (opset %d)", tflite_path, ONNX_OPSET)
    single = _tflite_to_onnx(tflite_path)
    embedding = _embedding_tensor(single.graph)
    model = _batched_model(single, embedding) or _finished(single, embedding)
    batched = model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == BATCH_DIM
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_path))
    stamp_path.write_text(json.dumps({**stamp, "batched": batched, "embedding_tensor": embedding}, indent=1))
    return BaseModel(out_path, batched)


# --- embedding extraction ------------------------------------------------------------------------

def run_batches(session: ort.InferenceSession, prepared: np.ndarray, batch_size: int,
                progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(audioset_scores (N,521), embedding (N,1024)) of prepared windows, ``batch_size`` per run."""
    scores = np.zeros((len(prepared), YAMNET_AUDIOSET_CLASSES), np.float32)
    embeddings = np.zeros((len(prepared), YAMNET_EMBEDDING_SIZE), np.float32)
    starts = range(0, len(prepared), batch_size)
    for start in progress_bar(starts, desc="yamnet", unit="batch", enabled=progress):
        batch = np.ascontiguousarray(prepared[start:start + batch_size], dtype=np.float32)
        out_scores, out_embeddings = session.run([SCORES_NAME, EMBEDDING_NAME], {INPUT_NAME: batch})
        scores[start:start + len(batch)] = out_scores
        embeddings[start:start + len(batch)] = out_embeddings
    return scores, embeddings


def _windows_key(prepared: np.ndarray, model_path: Path) -> str:
    digest = hashlib.sha256(sha256_file(model_path).encode())
    digest.update(str(prepared.shape).encode())
    digest.update(np.ascontiguousarray(prepared, dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


def extract_embeddings(prepared: np.ndarray, base: BaseModel | None = None, threads: int = 1,
                       cache_dir: Path | None = None, progress: bool = True,
                       cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (N,1024), audioset_scores (N,521)) of windows already passed through ``prepare_window``.

    Cached as .npz keyed by the window bytes and the model hash (unless ``cache`` is false, for callers
    that cache at a higher level), so re-training a head costs nothing.
    """
    prepared = np.asarray(prepared, dtype=np.float32)
    if prepared.ndim != 2 or prepared.shape[1] != WINDOW_SAMPLES:
        raise ValueError(f"expected prepared windows of shape (N, {WINDOW_SAMPLES}), got {prepared.shape}")
    base = base or convert_yamnet()
    cache_dir = Path(cache_dir) if cache_dir is not None else build_dir() / "embeddings"
    cache_file = cache_dir / f"yamnet-{_windows_key(prepared, base.path)}.npz" if cache else None
    if cache_file is not None and cache_file.is_file():
        with np.load(cache_file) as data:
            return data["embeddings"], data["scores"]
    session = make_session(base.path, threads)
    started = time.perf_counter()
    scores, embeddings = run_batches(session, prepared, DEFAULT_BATCH if base.batched else 1, progress)
    elapsed = time.perf_counter() - started
    log.info("embedded %d windows in %.1f s (%.2f ms/window)", len(prepared), elapsed,
             1000 * elapsed / max(len(prepared), 1))
    if cache_file is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        save_npz_atomic(cache_file, embeddings=embeddings, scores=scores)
    return embeddings, scores


def benchmark_batching(base: BaseModel, n_windows: int = 64, threads: int = 1) -> dict:
    """ms per window at batch 1 vs batch 8 (best of three passes), for deciding whether batching pays."""
    windows = _probe_windows(n_windows, seed=1)
    session = make_session(base.path, threads)
    result: dict = {"windows": n_windows, "threads": threads, "batched_model": base.batched}
    sizes = (1, BATCH_CHECK_SIZE) if base.batched else (1,)
    run_batches(session, windows[:BATCH_CHECK_SIZE], 1)
    for size in sizes:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            run_batches(session, windows, size)
            best = min(best, time.perf_counter() - started)
        result[f"ms_per_window_batch{size}"] = round(1000 * best / n_windows, 3)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tflite", type=Path, default=None, help="YAMNet TFLite model (default: shared/models)")
    parser.add_argument("--bench", action="store_true", help="print batch-1 vs batch-8 ms/window as JSON")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    setup_logging("INFO")
    base = convert_yamnet(args.tflite)
    print(json.dumps({"model": str(base.path), "batched": base.batched}))
    if args.bench:
        print(json.dumps(benchmark_batching(base, threads=args.threads)))


if __name__ == "__main__":
    main()
