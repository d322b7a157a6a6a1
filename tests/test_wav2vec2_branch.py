"""Wav2Vec2 branch: training (scratch and --init), calibration metadata, ONNX export parity and int8.

Runs offline on synthetic clips (harmonic "cries", shrill "screams", quiet noise) and a tiny model,
so the whole file takes seconds, not the budgeted ten minutes of a real run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("optimum.exporters.onnx")

import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification, Wav2Vec2Model  # noqa: E402

import export.wav2vec2_onnx as w2v_onnx  # noqa: E402
import training.train_wav2vec2 as tw  # noqa: E402
from monitor.classify import create_session  # noqa: E402
from monitor.constants import LABELS, SAMPLE_RATE, WINDOW_SAMPLES  # noqa: E402
from training.data import Clip, class_weights  # noqa: E402
from training.windows import WindowSet  # noqa: E402

pytestmark = pytest.mark.train

CLIP_SECONDS = 2.0
QUICK = tw.TrainSettings(batch_size=8, max_epochs=4, patience_epochs=10, threads=1, scratch_lr=3e-3)


def _synthetic(label: str, seed: int) -> np.ndarray:
    """Separable stand-ins: a 5-harmonic ~420 Hz wail, a ~1.1 kHz shriek, faint noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(CLIP_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    if label == "Crying":
        phase = 2 * np.pi * np.cumsum(420 + rng.uniform(-30, 30) + 40 * np.sin(2 * np.pi * 5 * t)) / SAMPLE_RATE
        x = 0.3 * sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * t) ** 2)
    elif label == "Screaming":
        phase = 2 * np.pi * np.cumsum(1100 + rng.uniform(-100, 100) + 200 * np.sin(2 * np.pi * 3 * t)) / SAMPLE_RATE
        x = 0.5 * (np.sin(phase) + 0.5 * np.sin(2 * phase)) + 0.05 * rng.standard_normal(t.size)
    else:
        x = 0.01 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def _clips(folder, per_label: int, seed: int) -> list[Clip]:
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for li, label in enumerate(LABELS):
        for i in range(per_label):
            path = folder / f"{label}-{seed}-{i}.wav"
            sf.write(path, _synthetic(label, seed * 1000 + li * 100 + i), SAMPLE_RATE)
            clips.append(Clip(path=path, label=label, group=f"{label}-{seed}-{i}", source="synthetic",
                              duration_s=CLIP_SECONDS, sample_rate=SAMPLE_RATE))
    return clips


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    return {"train": _clips(root / "train", 6, 1), "val": _clips(root / "val", 2, 2),
            "test": _clips(root / "test", 2, 3)}


@pytest.fixture(scope="module")
def trained(split, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    metadata = tw.train_wav2vec2(split, out, max_minutes=3, seed=7, tiny=True, settings=QUICK,
                                 window_cache_dir=out / "cache", progress=False)
    return out, metadata


# --- training ----------------------------------------------------------------------------------


def test_scratch_training_learns_and_saves_a_loadable_model(trained):
    out, metadata = trained
    losses = [epoch["train_loss"] for epoch in metadata["history"]]
    assert len(losses) == QUICK.max_epochs
    assert losses[-1] < losses[0]
    saved = json.loads((out / tw.METADATA_FILE).read_text())
    assert saved["init"] == "scratch" and saved["checkpoint"] is None
    assert saved["normalisation"] == "zero_mean_unit_var"
    assert saved["config"]["hidden_size"] == tw.TINY_DIMS.hidden_size
    assert saved["temperature"] > 0
    assert {"ece_before", "ece_after", "val_metrics", "test_metrics", "minutes", "epochs"} <= saved.keys()
    model = Wav2Vec2ForSequenceClassification.from_pretrained(out)
    assert [model.config.id2label[i] for i in range(len(LABELS))] == list(LABELS)


def test_validation_metrics_are_reported_at_the_fitted_temperature(trained):
    _, metadata = trained
    assert metadata["val_metrics"]["ece"] == pytest.approx(metadata["ece_after"])
    assert metadata["val_metrics"]["clips"] == 2 * len(LABELS)
    assert set(metadata["val_metrics"]["window"]["per_class"]) == set(LABELS)


def test_init_fine_tunes_a_local_checkpoint_with_a_frozen_feature_encoder(split, tmp_path):
    dims = tw.TINY_DIMS
    config = Wav2Vec2Config(hidden_size=dims.hidden_size, num_hidden_layers=dims.num_hidden_layers,
                            num_attention_heads=dims.num_attention_heads, intermediate_size=dims.intermediate_size,
                            conv_dim=dims.conv_dim, conv_kernel=dims.conv_kernel, conv_stride=dims.conv_stride,
                            num_conv_pos_embeddings=dims.num_conv_pos_embeddings,
                            num_conv_pos_embedding_groups=dims.num_conv_pos_embedding_groups, mask_time_length=2)
    torch.manual_seed(3)
    base = Wav2Vec2Model(config)
    checkpoint = tmp_path / "pretrained"
    base.save_pretrained(checkpoint)

    out = tmp_path / "finetuned"
    metadata = tw.train_wav2vec2(split, out, init=str(checkpoint), max_minutes=2, seed=1,
                                 settings=tw.TrainSettings(batch_size=8, max_epochs=1, threads=1),
                                 window_cache_dir=tmp_path / "cache", progress=False)
    assert metadata["init"] == "pretrained" and metadata["checkpoint"] == str(checkpoint)
    assert metadata["config"]["trainable_parameters"] < metadata["config"]["parameters"]
    tuned = Wav2Vec2ForSequenceClassification.from_pretrained(out)
    for before, after in zip(base.feature_extractor.parameters(), tuned.wav2vec2.feature_extractor.parameters(),
                             strict=True):
        assert torch.equal(before, after)
    encoder_changed = any(not torch.equal(a, b) for a, b in zip(base.encoder.parameters(),
                                                                 tuned.wav2vec2.encoder.parameters(), strict=True))
    assert encoder_changed
    assert tuned.classifier.out_features == len(LABELS)


def test_init_that_cannot_be_loaded_is_a_clear_error(split, tmp_path):
    with pytest.raises(ValueError, match="--init"):
        tw.build_model(str(tmp_path / "no-such-checkpoint"), tw.TINY_DIMS)


def test_cli_rejects_a_missing_manifest(tmp_path, capsys):
    with pytest.raises(SystemExit):
        tw.main(["--manifest", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "out")])
    assert "missing.csv" in capsys.readouterr().err


# --- pure helpers -------------------------------------------------------------------------------


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    values = [tw.lr_factor(p, 0.1, 0.02) for p in np.linspace(0, 1, 101)]
    peak = int(np.argmax(values))
    assert values[peak] == pytest.approx(1.0)
    assert abs(peak - 10) <= 1
    assert all(a >= b for a, b in zip(values[peak:], values[peak + 1:]))
    assert values[-1] == pytest.approx(0.02)
    assert values[0] == pytest.approx(0.02)


def test_class_weights_are_inverse_frequency_and_zero_for_absent_classes():
    weights = class_weights(np.array([0, 0, 0, 2]))
    assert weights[1] == 0.0
    assert weights[2] / weights[0] == pytest.approx(3.0)
    assert weights[[0, 2]].mean() == pytest.approx(1.0)


def test_clip_probabilities_average_the_windows_of_each_clip():
    probs = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    first, clip_probs = tw.clip_probabilities(probs, np.array([5, 5, 9]))
    assert first.tolist() == [0, 2]
    np.testing.assert_allclose(clip_probs, [[0.5, 0.5, 0], [0, 0, 1.0]])


def test_evaluation_view_keeps_active_windows_and_every_window_of_an_all_silent_clip():
    n = 5
    window_set = WindowSet(np.zeros((n, WINDOW_SAMPLES), np.float32), np.zeros(n, np.int64),
                           np.array([0, 0, 0, 1, 1]), np.array(["a"] * n), np.array([True, False, True, False, False]))
    view = tw.evaluation_view(window_set)
    assert view.clip_index.tolist() == [0, 0, 1, 1]


def test_model_inputs_are_standardised_per_window():
    rng = np.random.default_rng(0)
    windows = (0.01 * rng.standard_normal((3, WINDOW_SAMPLES)) + 0.2).astype(np.float32)
    inputs = tw.model_inputs(windows, tw.Config().preprocess)
    np.testing.assert_allclose(inputs.mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(inputs.std(axis=1), 1, atol=1e-3)


def test_thread_chooser_keeps_the_faster_thread_count():
    chooser = tw.ThreadChooser(None)
    chooser.start_epoch()
    seconds = {2: 1.0, 1: 0.2}
    step = 0
    while step < tw.THREAD_PROBE_STEPS * len(chooser.candidates):
        n = chooser.threads_for(step)
        chooser.record(n, seconds[n])
        step += 1
    assert chooser.threads_for(step) == 1
    assert tw.ThreadChooser(2).threads_for(0) == 2


# --- export -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(trained, split, tmp_path_factory):
    model_dir, _ = trained
    out = tmp_path_factory.mktemp("onnx")
    report = w2v_onnx.export_wav2vec2(model_dir, out, split["val"], split["test"])
    return out, report


def test_float_export_matches_torch_and_follows_the_runtime_contract(exported):
    out, report = exported
    assert report["parity"]["float_max_abs_diff"] <= w2v_onnx.FLOAT_TOLERANCE
    assert report["parity"]["clips"] >= w2v_onnx.MIN_PARITY_CLIPS
    session = create_session(out / w2v_onnx.FLOAT_FILE, threads=1)
    assert [i.name for i in session.get_inputs()] == ["input_values"]
    logits = session.run(["logits"], {"input_values": np.zeros((2, WINDOW_SAMPLES), np.float32)})[0]
    assert logits.shape == (2, len(LABELS))


def test_int8_export_loads_and_reports_its_trade_off(exported):
    out, report = exported
    session = create_session(out / w2v_onnx.INT8_FILE, threads=1)
    batch = np.random.default_rng(1).standard_normal((3, WINDOW_SAMPLES)).astype(np.float32)
    assert session.run(["logits"], {"input_values": batch})[0].shape == (3, len(LABELS))
    assert 0.0 <= report["parity"]["int8_argmax_agreement"] <= 1.0
    assert report["int8"]["size_bytes"] == (out / w2v_onnx.INT8_FILE).stat().st_size
    assert report["float"]["ms_per_window"] > 0 and report["int8"]["ms_per_window"] > 0
    expected = w2v_onnx.choose_variant(report["float"]["test"]["window"]["macro_f1"],
                                       report["int8"]["test"]["window"]["macro_f1"])
    assert report["default_variant"] == expected


def test_int8_is_chosen_only_within_the_allowed_f1_drop():
    assert w2v_onnx.choose_variant(0.90, 0.895) == "int8"
    assert w2v_onnx.choose_variant(0.90, 0.88) == "float"
    assert w2v_onnx.choose_variant(0.90, 0.92) == "int8"


def test_export_fails_when_float_logits_disagree(trained, split, tmp_path, monkeypatch):
    model_dir, _ = trained
    monkeypatch.setattr(w2v_onnx, "FLOAT_TOLERANCE", -1.0)
    with pytest.raises(w2v_onnx.ExportError, match="differ from torch"):
        w2v_onnx.export_wav2vec2(model_dir, tmp_path, split["val"])


def test_export_needs_enough_parity_clips(trained, split, tmp_path):
    model_dir, _ = trained
    with pytest.raises(ValueError, match="at least"):
        w2v_onnx.export_wav2vec2(model_dir, tmp_path, split["val"][:2])
