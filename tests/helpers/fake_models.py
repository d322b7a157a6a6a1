"""Tiny ONNX stand-ins for the two classifiers, with the real tensor contract, for offline tests.

The fake YAMNet measures the energy of three pure tones (one per label), so a test clip of
``TONE_HZ[label]`` is classified as that label; the fake Wav2Vec2 always answers ``Normal``.
Both are a few hundred kB and build in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import soundfile as sf
from onnx import TensorProto, helper, numpy_helper

from export.manifest import WAV2VEC2_CONTRACT, YAMNET_CONTRACT, manifest_document, model_entry
from monitor.capture import AudioBlock, AudioClock
from monitor.constants import LABELS, SAMPLE_RATE, WINDOW_SAMPLES, YAMNET_AUDIOSET_CLASSES, YAMNET_EMBEDDING_SIZE
from monitor.model_manifest import write_manifest

OPSET = 17
IR_VERSION = 8
TONE_HZ = {"Crying": 500.0, "Screaming": 1000.0, "Normal": 2000.0}
AUDIOSET_FLOOR = 0.01
"""Every fake AudioSet score: below any vote threshold, so the AudioSet voter stays silent."""
ALWAYS_NORMAL_LOGITS = np.array([-2.0, -2.0, 2.0], np.float32)


def _tone_projection() -> np.ndarray:
    """(15600, 6): a sine and cosine per label tone, so energy is phase-independent."""
    t = np.arange(WINDOW_SAMPLES) / SAMPLE_RATE
    columns = []
    for label in LABELS:
        columns += [np.sin(2 * np.pi * TONE_HZ[label] * t), np.cos(2 * np.pi * TONE_HZ[label] * t)]
    return np.stack(columns, axis=1).astype(np.float32)


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _save(nodes, inputs, outputs, initializers, path: Path) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _batch_tensor(name: str, width: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", width])


def make_fake_yamnet(path: Path, with_audioset: bool = True) -> Path:
    """``waveform`` [batch, 15600] -> ``logits`` [batch, 3] (log tone energies), ``audioset_scores``, ``embedding``."""
    nodes = [
        helper.make_node("MatMul", ["waveform", "projection"], ["proj"]),
        helper.make_node("Mul", ["proj", "proj"], ["power"]),
        helper.make_node("Reshape", ["power", "pairs_shape"], ["pairs"]),
        helper.make_node("ReduceSum", ["pairs", "pair_axis"], ["energy"], keepdims=0),
        helper.make_node("Add", ["energy", "tiny"], ["energy_safe"]),
        helper.make_node("Log", ["energy_safe"], ["logits"]),
        helper.make_node("MatMul", ["energy", "zeros_embedding"], ["embedding_raw"]),
        helper.make_node("Identity", ["embedding_raw"], ["embedding"]),
    ]
    initializers = [
        _const("projection", _tone_projection()),
        _const("pairs_shape", np.array([-1, len(LABELS), 2], np.int64)),
        _const("pair_axis", np.array([2], np.int64)),
        _const("tiny", np.array(1e-6, np.float32)),
        _const("zeros_embedding", np.zeros((len(LABELS), YAMNET_EMBEDDING_SIZE), np.float32)),
    ]
    outputs = [_batch_tensor("logits", len(LABELS)), _batch_tensor("embedding", YAMNET_EMBEDDING_SIZE)]
    if with_audioset:
        nodes += [helper.make_node("MatMul", ["energy", "zeros_audioset"], ["audioset_zero"]),
                  helper.make_node("Add", ["audioset_zero", "audioset_floor"], ["audioset_scores"])]
        initializers += [_const("zeros_audioset", np.zeros((len(LABELS), YAMNET_AUDIOSET_CLASSES), np.float32)),
                         _const("audioset_floor", np.full(YAMNET_AUDIOSET_CLASSES, AUDIOSET_FLOOR, np.float32))]
        outputs.append(_batch_tensor("audioset_scores", YAMNET_AUDIOSET_CLASSES))
    return _save(nodes, [_batch_tensor("waveform", WINDOW_SAMPLES)], outputs, initializers, Path(path))


def make_fake_wav2vec2(path: Path, logits: np.ndarray = ALWAYS_NORMAL_LOGITS) -> Path:
    """``input_values`` [batch, 15600] -> the same ``logits`` [batch, 3] for every window."""
    nodes = [helper.make_node("MatMul", ["input_values", "zeros"], ["zero_logits"]),
             helper.make_node("Add", ["zero_logits", "bias"], ["logits"])]
    initializers = [_const("zeros", np.zeros((WINDOW_SAMPLES, len(LABELS)), np.float32)),
                    _const("bias", np.asarray(logits, np.float32))]
    return _save(nodes, [_batch_tensor("input_values", WINDOW_SAMPLES)], [_batch_tensor("logits", len(LABELS))],
                 initializers, Path(path))


def write_fake_models(folder: Path) -> Path:
    """Both fakes (Wav2Vec2 in two variants) and their manifest in ``folder``; returns the manifest path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    yamnet = make_fake_yamnet(folder / "yamnet_classifier.onnx")
    w2v_float = make_fake_wav2vec2(folder / "wav2vec2_classifier.onnx")
    w2v_int8 = make_fake_wav2vec2(folder / "wav2vec2_classifier.int8.onnx", ALWAYS_NORMAL_LOGITS * 1.01)
    models = {
        "yamnet": model_entry(YAMNET_CONTRACT, {"float": yamnet}, folder, "float",
                              training={"init": "pretrained", "checkpoint": "fake"}),
        "wav2vec2": model_entry(WAV2VEC2_CONTRACT, {"float": w2v_float, "int8": w2v_int8}, folder, "int8",
                                training={"init": "scratch", "checkpoint": None}),
    }
    path = folder / "manifest.json"
    write_manifest(path, manifest_document(models, {"manifest_sha256": "0" * 64, "clips": 0}))
    return path


def write_tone(path: Path, label: str, seconds: float = 2.0, rate: int = SAMPLE_RATE, seed: int = 0) -> Path:
    """A clip of the label's tone with a little noise, as 16-bit PCM."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    samples = 0.3 * np.sin(2 * np.pi * TONE_HZ[label] * t + rng.uniform(0, np.pi)) + 0.003 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples.astype(np.float32), rate, subtype="PCM_16")
    return path


def fake_runtime(manifest: Path):
    """Defaults with the fake YAMNet alone: (config, classifiers), for in-process pipeline tests."""
    from monitor.classify import load_classifiers
    from monitor.config import Config

    cfg = Config()
    cfg.models.manifest = str(manifest)
    cfg.models.use_wav2vec2 = False
    return cfg, load_classifiers(cfg)



def tone_blocks(label: str | None, seconds: float, clock: AudioClock, heard_from: float | None = None,
                block_seconds: float = 0.1) -> Iterator[AudioBlock]:
    """``seconds`` of a fake-model tone (or quiet noise) in blocks stamped as a microphone stamps them (heard from
    ``heard_from`` on, a wall time; None: no stamp), the first one a discontinuity."""
    rng = np.random.default_rng(0)
    n = int(block_seconds * SAMPLE_RATE)
    for index in range(round(seconds / block_seconds)):
        t = (np.arange(n) + index * n) / SAMPLE_RATE
        samples = 1e-4 * rng.standard_normal(n)
        if label is not None:
            samples = samples + 0.3 * np.sin(2 * np.pi * TONE_HZ[label] * t)
        heard_at = None if heard_from is None else heard_from + index * block_seconds
        yield clock.stamp(samples.astype(np.float32), discontinuity=index == 0, heard_at=heard_at)
