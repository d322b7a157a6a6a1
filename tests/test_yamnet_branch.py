"""YAMNet branch: calibration, the batched ONNX conversion, a tiny end-to-end training + export, and the
band-limit robustness of the built model."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from monitor.config import Config, PreprocessConfig
from monitor.constants import LABELS, WINDOW_SAMPLES, YAMNET_AUDIOSET_CLASSES, YAMNET_EMBEDDING_SIZE
from monitor.paths import default_manifest_csv, default_yamnet_tflite, models_dir
from monitor.preprocess import clip_windows, prepare_batch
from monitor.signal_helpers import softmax
from training.augment import lowpass
from training.calibration import expected_calibration_error, fit_temperature, negative_log_likelihood

HAVE_TRAIN_DEPS = all(importlib.util.find_spec(m) for m in ("torch", "tf2onnx", "tensorflow"))
HAVE_SHARED = default_manifest_csv().is_file() and default_yamnet_tflite().is_file()
needs_training = pytest.mark.skipif(not (HAVE_TRAIN_DEPS and HAVE_SHARED),
                                    reason="needs the train extra (torch, tf2onnx, tensorflow) and the shared files")


# --- calibration -----------------------------------------------------------------------------

def synthetic_logits(n: int, overconfidence: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(true logits); the model reports ``overconfidence`` x the true logits."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0.0, 2.0, size=(n, len(LABELS)))
    probs = softmax(true_logits)
    labels = np.array([rng.choice(len(LABELS), p=p) for p in probs])
    return true_logits * overconfidence, labels


def test_softmax_rows_and_temperature():
    logits = np.array([[2.0, 0.0, -1.0], [1000.0, 0.0, 0.0]])
    probs = softmax(logits)
    assert np.allclose(probs.sum(axis=1), 1.0) and np.all(np.isfinite(probs))
    assert softmax(logits, 2.0)[0].max() < probs[0].max()  # a higher temperature flattens
    assert np.allclose(softmax(logits, 2.0), softmax(logits / 2.0))


@pytest.mark.parametrize("overconfidence", [0.5, 1.0, 3.0])
def test_fit_temperature_recovers_the_distortion(overconfidence):
    logits, labels = synthetic_logits(4000, overconfidence)
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(overconfidence, rel=0.15)
    assert negative_log_likelihood(logits, labels, temperature) <= negative_log_likelihood(logits, labels, 1.0)


def test_temperature_reduces_ece_of_overconfident_model():
    logits, labels = synthetic_logits(4000, 3.0, seed=1)
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits, fit_temperature(logits, labels)), labels)
    assert before > 0.05 and after < before / 2


def test_ece_is_zero_when_confidence_matches_accuracy():
    probs = np.tile([[0.8, 0.1, 0.1]], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(probs, np.ones(10, int)) == pytest.approx(0.8)


def test_fit_temperature_rejects_empty():
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((0, 3)), np.zeros(0, int))


# --- conversion, training, export (train extra + shared files) --------------------------------

def test_hard_negatives_are_the_most_alarming_normal_rows_only():
    from training.train_yamnet import hard_negative_weights

    labels = np.array([2, 2, 2, 2, 0, 1, 2, 2, 2, 2])
    alert = np.array([0.1, 0.9, 0.2, 0.3, 0.99, 0.98, 0.8, 0.05, 0.0, 0.4])
    weights = hard_negative_weights(labels, alert, fraction=0.25, weight=4.0)
    assert weights.tolist() == [1, 4, 1, 1, 1, 1, 4, 1, 1, 1]
    assert hard_negative_weights(labels, alert, fraction=0.25, weight=1.0).tolist() == [1.0] * 10


def random_features(rows: int, seed: int = 0):
    from training.train_yamnet import FeatureSet

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(LABELS), rows)
    embeddings = rng.standard_normal((rows, YAMNET_EMBEDDING_SIZE)).astype(np.float32)
    embeddings[:, :len(LABELS)] += 2.0 * np.eye(len(LABELS), dtype=np.float32)[labels]  # learnable
    return FeatureSet(embeddings=embeddings, scores=rng.random((rows, YAMNET_AUDIOSET_CLASSES)).astype(np.float32),
                      labels=labels, clip_index=np.arange(rows), active=np.ones(rows, bool),
                      part=np.full(rows, "train"))


def test_embedding_dropout_adds_copies_that_keep_only_the_audioset_scores():
    from training.train_yamnet import with_embedding_dropout

    rows = 400
    train = random_features(rows)
    out = with_embedding_dropout(train, 0.5, seed=3)
    extra = out.select(np.arange(len(out.labels)) >= rows)
    assert np.array_equal(out.embeddings[:rows], train.embeddings), "the original rows come first, unchanged"
    assert 150 < len(extra.labels) < 250
    copied = extra.clip_index
    assert np.array_equal(extra.labels, train.labels[copied]) and np.array_equal(extra.scores, train.scores[copied])
    assert np.allclose(extra.embeddings, train.embeddings.mean(axis=0), atol=1e-6), "no embedding: its mean"
    assert np.array_equal(with_embedding_dropout(train, 0.5, seed=3).clip_index, out.clip_index), "seeded"
    assert with_embedding_dropout(train, 0.0, seed=3) is train


def test_head_with_audioset_inputs_reads_log_scores_after_the_embedding():
    from training.train_yamnet import AUDIOSET_LOG_FLOOR, HeadWeights

    rng = np.random.default_rng(0)
    size = YAMNET_EMBEDDING_SIZE + YAMNET_AUDIOSET_CLASSES
    weights = HeadWeights(rng.standard_normal((size, 4)).astype(np.float32), np.zeros(4, np.float32),
                          rng.standard_normal((4, 3)).astype(np.float32), np.zeros(3, np.float32))
    embedding = rng.random((2, YAMNET_EMBEDDING_SIZE)).astype(np.float32)
    scores = rng.random((2, YAMNET_AUDIOSET_CLASSES)).astype(np.float32)
    inputs = np.concatenate([embedding, np.log(scores + AUDIOSET_LOG_FLOOR)], axis=1)
    expected = np.maximum(inputs @ weights.w1, 0) @ weights.w2
    assert weights.audioset_inputs
    assert np.allclose(weights.logits(embedding, scores), expected, atol=1e-4)
    cat_louder = scores.copy()
    cat_louder[:, 76] = 0.9  # AudioSet "Cat": the head sees it
    assert not np.allclose(weights.logits(embedding, cat_louder), expected)


def test_merged_head_logits_are_the_mean_of_its_members():
    from training.train_yamnet import HeadWeights, merge_heads

    rng = np.random.default_rng(1)
    size = YAMNET_EMBEDDING_SIZE + YAMNET_AUDIOSET_CLASSES
    members = [HeadWeights(*(rng.standard_normal(shape).astype(np.float32)
                             for shape in ((size, hidden), (hidden,), (hidden, 3), (3,))))
               for hidden in (4, 6, 5)]
    merged = merge_heads(members)
    features = random_features(8)
    mean = np.mean([m.logits(features.embeddings, features.scores) for m in members], axis=0)
    assert merged.w1.shape == (size, 15) and merged.audioset_inputs
    assert np.allclose(merged.logits(features.embeddings, features.scores), mean, atol=1e-4)
    one = merge_heads(members[:1])
    assert all(np.array_equal(getattr(one, name), getattr(members[0], name)) for name in ("w1", "b1", "w2", "b2"))


@pytest.mark.train
@pytest.mark.skipif(not HAVE_TRAIN_DEPS, reason="needs torch")
def test_head_members_are_seeded_alone_whether_fitted_in_parallel_or_not():
    from training.train_yamnet import HeadConfig, fit_member, merge_heads, train_head

    train, val = random_features(600, seed=2), random_features(150, seed=3)
    small = HeadConfig(hidden=8, max_epochs=4, patience=2, batch_size=64, members=2)
    parallel = train_head(train, val, small, seed=7)
    alone = train_head(train, val, dataclasses.replace(small, member_processes=1), seed=7)
    by_hand = merge_heads([fit_member(train, val, small, seed)[0] for seed in (7, 8)])
    assert parallel.weights.w1.shape[1] == 16 and {h["member"] for h in parallel.history} == {0, 1}
    assert parallel.best_epochs == [fit_member(train, val, small, seed)[1] for seed in (7, 8)]
    for head in (parallel.weights, alone.weights):
        for name in ("w1", "b1", "w2", "b2"):
            assert np.array_equal(getattr(head, name), getattr(by_hand, name)), name
    single = train_head(train, val, dataclasses.replace(small, members=1), seed=7)
    assert np.array_equal(single.weights.w1, fit_member(train, val, small, 7)[0].w1)
    assert not np.array_equal(by_hand.w1[:, :8], by_hand.w1[:, 8:]), "members differ by seed"


@pytest.mark.train
@pytest.mark.skipif(not HAVE_TRAIN_DEPS, reason="needs torch")
def test_head_fit_keeps_the_epoch_with_the_best_stopping_score_and_rejects_an_unknown_criterion():
    from training.train_yamnet import HeadConfig, _fit, head_inputs

    train, val = random_features(600, seed=2), random_features(150, seed=3)
    x = head_inputs(train.embeddings, train.scores, True)
    x_val = head_inputs(val.embeddings, val.scores, True)
    small = HeadConfig(hidden=8, max_epochs=6, patience=6, batch_size=64)
    weights, best_epoch, history = _fit(x, train.labels, np.ones(len(x)), x_val, val.labels, small, 5, val.active)
    best = max(history, key=lambda h: (h["val_score"], -h["val_loss"]))
    assert best_epoch == best["epoch"] and len(history) == 6
    assert all(-1.0 <= h["val_score"] <= 0.0 for h in history)
    with pytest.raises(ValueError, match="stop_on"):
        _fit(x, train.labels, np.ones(len(x)), x_val, val.labels, dataclasses.replace(small, stop_on="accuracy"), 5)


@pytest.mark.train
@pytest.mark.skipif(not HAVE_TRAIN_DEPS, reason="needs torch")
def test_mixup_loss_blends_two_rows_losses_and_weights_by_one_share():
    import torch
    from torch import nn

    from training.train_yamnet import _batch_loss

    torch.manual_seed(0)
    model = nn.Linear(4, len(LABELS))
    inputs, targets = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    weights = torch.tensor([1.0, 2.0, 1.0, 3.0, 1.0, 1.0])
    plain = _batch_loss(model, inputs, targets, weights, 0.0, np.random.default_rng(0), torch.Generator())
    losses = nn.functional.cross_entropy(model(inputs), targets, reduction="none")
    assert float(plain) == pytest.approx(float((losses * weights).sum() / weights.sum()))

    mixed = _batch_loss(model, inputs, targets, weights, 0.4, np.random.default_rng(5),
                        torch.Generator().manual_seed(9))
    share = float(np.random.default_rng(5).beta(0.4, 0.4))
    partner = torch.randperm(6, generator=torch.Generator().manual_seed(9))
    logits = model(share * inputs + (1 - share) * inputs[partner])
    ours = nn.functional.cross_entropy(logits, targets, reduction="none") * weights * share
    theirs = nn.functional.cross_entropy(logits, targets[partner], reduction="none") * weights[partner] * (1 - share)
    expected = (ours + theirs).sum() / (share * weights + (1 - share) * weights[partner]).sum()
    assert 0 < share < 1 and float(mixed) == pytest.approx(float(expected))
    assert float(mixed) != pytest.approx(float(plain))


# --- reproducible conversion ---------------------------------------------------------------------

def _counted_graph(counters: tuple[int, int, int], reverse_initializers: bool) -> onnx.ModelProto:
    """x + a -> Relu -> * b -> Relu, named the way tf2onnx names folded constants and nodes: with counters."""
    from onnx import TensorProto, helper, numpy_helper

    first, second, third = counters
    inits = [numpy_helper.from_array(np.array([1.5, -2.0], np.float32), f"const_fold_opt__{first}"),
             numpy_helper.from_array(np.array([0.5, 3.0], np.float32), f"const_fold_opt__{second}")]
    nodes = [helper.make_node("Add", ["x", inits[0].name], [f"Add__{third}:0"], name=f"Add__{third}"),
             helper.make_node("Relu", [f"Add__{third}:0"], [f"Relu__{first}:0"], name=f"Relu__{first}"),
             helper.make_node("Mul", [f"Relu__{first}:0", inits[1].name], [f"Mul__{second}:0"], name="Mul"),
             helper.make_node("Relu", [f"Mul__{second}:0"], ["y"], name=f"Relu__{second}")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              initializer=inits[::-1] if reverse_initializers else inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_canonical_names_make_two_conversions_of_one_model_byte_identical_and_keep_what_it_computes():
    from training.yamnet_features import canonical_names

    one, other = _counted_graph((259, 263, 12), False), _counted_graph((262, 268, 40), True)
    assert one.SerializeToString() != other.SerializeToString()
    x = np.array([0.25, 1.0], np.float32)
    before = ort.InferenceSession(one.SerializeToString()).run(None, {"x": x})[0]
    for model in (one, other):
        canonical_names(model.graph)
        onnx.checker.check_model(model)
    assert one.SerializeToString() == other.SerializeToString()
    assert np.array_equal(ort.InferenceSession(one.SerializeToString()).run(None, {"x": x})[0], before)
    assert sorted(node.name for node in one.graph.node) == ["Add", "Mul", "Relu", "Relu~1"]


@pytest.mark.train
@needs_training
def test_converting_the_tflite_again_in_a_new_process_writes_the_same_bytes(build_env, tmp_path):
    """tf2onnx numbers what it folds differently in every process; the model's hash is its version."""
    import subprocess
    import sys

    _, base = build_env
    again = tmp_path / "again.onnx"
    code = ("import sys; from pathlib import Path; from training.yamnet_features import convert_yamnet; "
            "convert_yamnet(out_path=Path(sys.argv[1]))")
    subprocess.run([sys.executable, "-c", code, str(again)], check=True, cwd=Path(__file__).resolve().parents[1])
    assert again.read_bytes() == base.path.read_bytes()


@pytest.fixture(scope="module")
def build_env(tmp_path_factory):
    """A private build/models folder for this module, with YAMNet converted once."""
    from training.yamnet_features import convert_yamnet

    root = tmp_path_factory.mktemp("yamnet_build")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NURSERY_BUILD", str(root / "build"))
        patch.setenv("NURSERY_MODELS", str(root / "models"))
        yield root, convert_yamnet()


def probe(n: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((n, WINDOW_SAMPLES))).astype(np.float32)


@pytest.mark.train
@needs_training
def test_converted_model_is_batched_and_optimisation_independent(build_env):
    from training.yamnet_features import EMBEDDING_NAME, INPUT_NAME, SCORES_NAME

    _, base = build_env
    model = onnx.load(str(base.path))
    assert [i.name for i in model.graph.input] == [INPUT_NAME]
    assert [o.name for o in model.graph.output] == [SCORES_NAME, EMBEDDING_NAME]
    assert base.batched
    windows = probe(8)
    results = {}
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(str(base.path), options, providers=["CPUExecutionProvider"])
        scores, embedding = session.run(None, {INPUT_NAME: windows})
        singles = [session.run(None, {INPUT_NAME: w[None, :]}) for w in windows]
        assert scores.shape == (8, YAMNET_AUDIOSET_CLASSES) and embedding.shape == (8, YAMNET_EMBEDDING_SIZE)
        assert np.allclose(scores, np.concatenate([s[0] for s in singles]), atol=1e-5)
        assert np.allclose(embedding, np.concatenate([s[1] for s in singles]), atol=1e-5)
        results[level] = scores
    # int8 weights folded to float: no fused integer kernels that would change the numbers
    assert np.allclose(*results.values(), atol=1e-5)


def tiny_manifest(folder: Path, per_label: int = 3) -> Path:
    """A few shared clips per label (distinct groups), listed with absolute paths."""
    from training.data import load_dataset

    rows = ["path,label,source,group"]
    for label in LABELS:
        seen_groups: set[str] = set()
        for clip in load_dataset(default_manifest_csv()):
            if clip.label == label and clip.group not in seen_groups and len(seen_groups) < per_label:
                seen_groups.add(clip.group)
                rows.append(f"{clip.path},{label},{clip.source},{clip.group}")
    path = folder / "tiny.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.train
@needs_training
def test_tiny_training_and_export_end_to_end(build_env, tmp_path):
    from export.yamnet_onnx import LOGITS_NAME, export_yamnet
    from training.train_yamnet import HeadConfig, load_head, run_training

    root, base = build_env
    head_cfg = HeadConfig(hidden=16, max_epochs=3, patience=2, augment_copies=1, batch_size=32)
    head_dir = tmp_path / "head"
    metadata = run_training(tiny_manifest(tmp_path), seed=5, cfg=Config(), head_cfg=head_cfg, out_dir=head_dir,
                            base=base, progress=False)
    assert set(metadata["metrics"]) == {"val", "test"}
    for part in metadata["metrics"].values():
        assert 0.0 <= part["window"]["accuracy"] <= 1.0 and part["window"]["n"] > 0
    weights, saved = load_head(head_dir)
    hidden = 16 * head_cfg.members  # the members' hidden units side by side
    assert weights.w1.shape == (YAMNET_EMBEDDING_SIZE + YAMNET_AUDIOSET_CLASSES, hidden) and weights.audioset_inputs
    assert weights.w2.shape == (hidden, len(LABELS))
    assert saved["temperature"] > 0 and saved["labels"] == list(LABELS)
    saved_json = json.loads((head_dir / "metadata.json").read_text())
    assert saved_json["seed"] == 5 and len(saved_json["best_epoch"]) == head_cfg.members

    out = tmp_path / "yamnet_classifier.onnx"
    figures = export_yamnet(head_dir=head_dir, out_path=out)
    assert figures["clips"] >= 5
    assert figures["audioset_vs_tflite_float_weights_max_abs_diff"] <= 1e-4
    assert figures["logits_vs_numpy_head_max_abs_diff"] <= 1e-4
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [LOGITS_NAME, "audioset_scores", "embedding"]
    logits, scores, embedding = session.run(None, {"waveform": probe(3, seed=1)})
    assert logits.shape == (3, len(LABELS)) and scores.shape == (3, YAMNET_AUDIOSET_CLASSES)
    assert np.allclose(logits, weights.logits(embedding, scores), atol=1e-4)


# --- robustness of the built model (skipped until `make models` has run) ----------------------

BUILT_MODEL = models_dir() / "yamnet_classifier.onnx"
MAX_FLIPPED_FRACTION = 0.05
BAND_LIMIT_HZ = 4000


def clip_label(session: ort.InferenceSession, samples: np.ndarray, cfg: PreprocessConfig) -> int:
    prepared = prepare_batch(clip_windows(samples, WINDOW_SAMPLES // 2), cfg)
    logits = session.run(["logits"], {"waveform": prepared})[0]
    return int(softmax(logits).mean(axis=0).argmax())


@pytest.mark.models
@pytest.mark.skipif(not BUILT_MODEL.is_file() or not default_manifest_csv().is_file(),
                    reason="needs the built YAMNet model and the shared data")
def test_lowpass_to_4khz_does_not_flip_normal_clips():
    from training.data import load_dataset, manifest_sha256
    from training.split import load_or_make_split, split_file_for
    from training.windows import conditioned_clip

    manifest = default_manifest_csv()
    clips = load_dataset(manifest)
    digest = manifest_sha256(manifest)
    test_normal = [c for c in load_or_make_split(clips, split_file_for(digest), manifest_hash=digest)["test"]
                   if c.label == "Normal"]
    assert len(test_normal) >= 20
    cfg = PreprocessConfig()
    session = ort.InferenceSession(str(BUILT_MODEL), providers=["CPUExecutionProvider"])
    flipped = 0
    for clip in test_normal:
        samples = conditioned_clip(clip, cfg)
        flipped += clip_label(session, samples, cfg) != clip_label(session, lowpass(samples, BAND_LIMIT_HZ), cfg)
    assert flipped / len(test_normal) <= MAX_FLIPPED_FRACTION, f"{flipped} of {len(test_normal)} flipped"
