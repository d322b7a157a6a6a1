"""ONNX Runtime classifiers behind a narrow interface: prepared windows in, probabilities out.

Sessions are built by one factory; callers never touch onnxruntime options. No audio I/O here
except ``classify_clip``, which replays a file through the same conditioning, gate and fusion
functions as the live pipeline.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .audiofile import load_clip
from .config import Config, FusionConfig
from .constants import LABELS, WINDOW_SAMPLES
from .fusion import VOTER_WAV2VEC2, VOTER_YAMNET, FusedWindow, alert_probability, fuse_window
from .gate import Gate
from .model_manifest import ModelEntry, ModelError, configured_manifest_path, read_manifest, verify_variant
from .preprocess import prepare_batch
from .signal_helpers import pad_to_window, softmax
from .windows import SlidingWindower, hop_samples_from_seconds

log = logging.getLogger(__name__)

STANDARDISE_EPSILON = 1e-7
"""Same epsilon as transformers' Wav2Vec2FeatureExtractor zero-mean unit-variance normalisation."""


def create_session(path: str | os.PathLike, threads: int) -> ort.InferenceSession:
    """The one place ONNX Runtime sessions are configured (CPU, fixed threads, full graph optimisation)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several private exception types
        raise ModelError(f"cannot load ONNX model {path}: {str(exc).splitlines()[0]}") from None


def standardise(windows: np.ndarray) -> np.ndarray:
    mean = windows.mean(axis=-1, keepdims=True)
    var = windows.var(axis=-1, keepdims=True)
    return ((windows - mean) / np.sqrt(var + STANDARDISE_EPSILON)).astype(np.float32)


class OnnxClassifier:
    """One manifest entry as a callable: prepared windows (B, 15600) -> dict of named outputs."""

    def __init__(self, entry: ModelEntry, threads: int, variant: str = "default"):
        self.entry = entry
        self.path = verify_variant(entry, variant)
        self.session = create_session(self.path, threads)
        inputs = {i.name: i for i in self.session.get_inputs()}
        if entry.input_name not in inputs:
            raise ModelError(f"{self.path}: has inputs {list(inputs)}, manifest says '{entry.input_name}'")
        self._output_names = list(entry.outputs.values())
        available = {o.name for o in self.session.get_outputs()}
        missing = [name for name in self._output_names if name not in available]
        if missing:
            raise ModelError(f"{self.path}: missing outputs {missing} declared in the manifest")
        self._batchable = not isinstance(inputs[entry.input_name].shape[0], int)

    @property
    def version(self) -> str:
        return self.entry.version

    def _run(self, prepared: np.ndarray) -> dict[str, np.ndarray]:
        if prepared.ndim != 2 or prepared.shape[1] != WINDOW_SAMPLES:
            raise ValueError(f"expected windows of shape (B, {WINDOW_SAMPLES}), got {prepared.shape}")
        batch = standardise(prepared) if self.entry.normalisation == "zero_mean_unit_var" else prepared
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self._batchable or len(batch) == 1:
            outputs = self.session.run(self._output_names, {self.entry.input_name: batch})
        else:
            per_window = [self.session.run(self._output_names, {self.entry.input_name: w[None]}) for w in batch]
            outputs = [np.concatenate(parts) for parts in zip(*per_window)]
        by_role = dict(zip(self.entry.outputs.keys(), outputs))
        by_role["probs"] = softmax(by_role["logits"], self.entry.temperature).astype(np.float32)
        return by_role


class YamnetClassifier(OnnxClassifier):
    def predict(self, prepared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probs (B, 3) in LABELS order, AudioSet scores (B, 521))."""
        out = self._run(prepared)
        return out["probs"], out["audioset"]


class Wav2Vec2Classifier(OnnxClassifier):
    def predict(self, prepared: np.ndarray) -> np.ndarray:
        return self._run(prepared)["probs"]


@dataclass
class Classifiers:
    yamnet: YamnetClassifier
    wav2vec2: Wav2Vec2Classifier | None
    manifest_path: Path
    operating_point: dict = field(default_factory=dict)
    """Fusion settings tuned for these models by build-models (the manifest's ``operating_point``)."""

    def resolve_fusion(self, fusion: FusionConfig) -> FusionConfig:
        """The config's fusion settings, its null operating-point keys taken from these models' tuning."""
        return fusion.resolve(self.operating_point)

    @property
    def versions(self) -> dict[str, str]:
        versions = {"yamnet": self.yamnet.version}
        if self.wav2vec2 is not None:
            versions["wav2vec2"] = self.wav2vec2.version
        return versions


def load_classifiers(cfg: Config) -> Classifiers:
    """Both sessions from the manifest, checked against their hashes and contract."""
    manifest_path = configured_manifest_path(cfg)
    manifest = read_manifest(manifest_path)
    if "yamnet" not in manifest.models:
        raise ModelError(f"{manifest_path}: no 'yamnet' model listed")
    yamnet = YamnetClassifier(manifest.models["yamnet"], cfg.models.threads)
    wav2vec2 = None
    if cfg.models.use_wav2vec2:
        if "wav2vec2" not in manifest.models:
            raise ModelError(f"{manifest_path}: no 'wav2vec2' model listed (or set models.use_wav2vec2: false)")
        wav2vec2 = Wav2Vec2Classifier(manifest.models["wav2vec2"], cfg.models.threads, cfg.models.wav2vec2_variant)
    tuned_hop = manifest.tuned_hop_seconds
    if tuned_hop is not None and not np.isclose(tuned_hop, cfg.window.hop_seconds):
        log.warning("window.hop_seconds is %g s but the operating point in %s was tuned at %g s: its k-of-n and "
                    "smoothing count windows, so alarms come sooner or later than tuned; re-run build-models",
                    cfg.window.hop_seconds, manifest_path, tuned_hop)
    log.info("models loaded: %s", ", ".join(f"{k}={v}" for k, v in Classifiers(yamnet, wav2vec2,
                                                                                 manifest_path).versions.items()))
    return Classifiers(yamnet=yamnet, wav2vec2=wav2vec2, manifest_path=manifest_path,
                       operating_point=manifest.operating_point_for(cfg.fusion.false_alarm_budget))


@dataclass
class WindowPredictions:
    """Per-window model outputs for a batch of windows."""

    yamnet: np.ndarray
    audioset: np.ndarray
    wav2vec2: np.ndarray | None

    wav2vec2_skipped: int = 0
    """Windows the cascade left without Wav2Vec2 scores (NaN rows in ``wav2vec2``)."""

    def model_probs(self, index: int) -> dict[str, np.ndarray]:
        probs = {"yamnet": self.yamnet[index]}
        if self.wav2vec2 is not None and not np.isnan(self.wav2vec2[index, 0]):
            probs["wav2vec2"] = self.wav2vec2[index]
        return probs


def predict_windows(classifiers: Classifiers, windows: np.ndarray, cfg: Config,
                    record_time: Callable[[str, float], None] | None = None,
                    wav2vec2_from: float = float("-inf")) -> WindowPredictions:
    """Raw 16 kHz windows -> prepare_window -> both models, batched; ``record_time(model, ms)`` is told
    how long each model's call took (the live pipeline's inference times). Wav2Vec2 runs only on windows whose
    YAMNet alert probability reaches ``wav2vec2_from`` (the cascade; ``fusion.wav2vec2_decisive_from``)."""
    prepared = prepare_batch(windows, cfg.preprocess)
    started = time.perf_counter()
    yamnet_probs, audioset = classifiers.yamnet.predict(prepared)
    if record_time is not None:
        record_time("yamnet", (time.perf_counter() - started) * 1000.0)
    if classifiers.wav2vec2 is None:
        return WindowPredictions(yamnet=yamnet_probs, audioset=audioset, wav2vec2=None)
    wanted = alert_probability(yamnet_probs) >= wav2vec2_from
    w2v = np.full(yamnet_probs.shape, np.nan, np.float32)
    if wanted.any():
        started = time.perf_counter()
        w2v[wanted] = classifiers.wav2vec2.predict(prepared if wanted.all() else prepared[wanted])
        if record_time is not None:
            record_time("wav2vec2", (time.perf_counter() - started) * 1000.0)
    return WindowPredictions(yamnet=yamnet_probs, audioset=audioset, wav2vec2=w2v,
                             wav2vec2_skipped=int((~wanted).sum()))


@dataclass
class ClipResult:
    """A file's label and the clip-level scores of each model and of both ensembles."""

    path: str
    label: str
    probs: dict[str, float]
    per_model: dict[str, dict[str, float]] = field(default_factory=dict)
    per_model_labels: dict[str, str] = field(default_factory=dict)
    windows: int = 0
    gated_windows: int = 0

    def to_dict(self) -> dict:
        return {"path": self.path, "label": self.label, "probs": self.probs, "models": self.per_model,
                "model_labels": self.per_model_labels, "windows": self.windows, "gated_windows": self.gated_windows}


def _as_dict(probs: np.ndarray) -> dict[str, float]:
    return {label: round(float(p), 6) for label, p in zip(LABELS, probs)}


def vote_shares(fused: FusedWindow) -> np.ndarray:
    """Fraction of voters per label: a graded score for the vote ensemble's ROC curves."""
    shares = np.array([sum(v == label for v in fused.votes.values()) for label in LABELS], np.float32)
    return shares / max(1.0, float(shares.sum()))


def _normal_only() -> np.ndarray:
    return np.array([0.0 if label != "Normal" else 1.0 for label in LABELS], np.float32)


ENSEMBLE_AVERAGE = "ensemble_average"
"""The clip's weighted average of both branches, without the vetoes."""
ENSEMBLE_VOTE = "ensemble_vote"
"""The clip's majority vote of the branches and the average."""
DEFAULT_FUSION = "default_fusion"
"""The clip's label: the ensemble average, Normal where AudioSet's vetoes hear laughter, a cat or an animal."""
CLIP_DECISIONS = (VOTER_YAMNET, VOTER_WAV2VEC2, ENSEMBLE_AVERAGE, ENSEMBLE_VOTE, DEFAULT_FUSION)
"""What ``ClipResult.per_model`` holds per clip: each branch, the plain average, the vote, and the decision."""


def classify_samples(samples: np.ndarray, classifiers: Classifiers, cfg: Config, name: str = "<samples>") -> ClipResult:
    """Clip-level decision: the gate picks the windows worth classifying (as live), then each model's
    window probabilities are averaged over them and fused like a single window, AudioSet's vetoes included
    (a laughing baby is Normal, as for the alarms)."""
    windower = SlidingWindower(hop_samples_from_seconds(cfg.window.hop_seconds))
    gate = Gate(cfg.gate)
    padded = pad_to_window(samples)
    windows = windower.push(padded)
    kept = [w.samples for w in windows if gate.assess(w).passed]
    result = ClipResult(path=name, label="Normal", probs=_as_dict(_normal_only()), windows=len(windows),
                        gated_windows=len(kept))
    if not kept:
        result.per_model = dict.fromkeys(CLIP_DECISIONS, result.probs)
        result.per_model_labels = dict.fromkeys(result.per_model, "Normal")
        return result
    predictions = predict_windows(classifiers, np.stack(kept), cfg)
    yamnet_mean = predictions.yamnet.mean(axis=0)
    w2v_mean = predictions.wav2vec2.mean(axis=0) if predictions.wav2vec2 is not None else None
    fusion = classifiers.resolve_fusion(cfg.fusion)
    fused = fuse_window(yamnet_mean, w2v_mean, predictions.audioset.mean(axis=0), fusion)
    vote_probs = vote_shares(fused)
    result.per_model = {VOTER_YAMNET: _as_dict(yamnet_mean), ENSEMBLE_AVERAGE: _as_dict(fused.probs),
                        ENSEMBLE_VOTE: _as_dict(vote_probs), DEFAULT_FUSION: _as_dict(fused.label_probs)}
    result.per_model_labels = {VOTER_YAMNET: LABELS[int(np.argmax(yamnet_mean))],
                               ENSEMBLE_AVERAGE: fused.average_label, ENSEMBLE_VOTE: fused.vote_label,
                               DEFAULT_FUSION: fused.label}
    if w2v_mean is not None:
        result.per_model[VOTER_WAV2VEC2] = _as_dict(w2v_mean)
        result.per_model_labels[VOTER_WAV2VEC2] = LABELS[int(np.argmax(w2v_mean))]
    result.label = fused.label
    result.probs = _as_dict(fused.label_probs)
    return result


def classify_clip(path: str | os.PathLike, classifiers: Classifiers, cfg: Config) -> ClipResult:
    """One label per file; the function behind `nursery-monitor classify` and training.evaluate."""
    samples = load_clip(path, cfg.preprocess, block_seconds=cfg.audio.block_seconds * 10)
    return classify_samples(samples, classifiers, cfg, name=str(path))
