"""Wav2Vec2 branch: teacher targets, YAMNet pretraining, training (distilled, scratch and --init), calibration
metadata, ONNX export parity and int8.

Runs offline on synthetic clips (harmonic "cries", shrill "screams", quiet noise), a tiny model and a cheap
spectral stand-in for the YAMNet teacher, so the whole file takes seconds, not the minutes of a
real run; one test checks the real YAMNet teacher when the train extra and the shared model are there.
"""

from __future__ import annotations

import dataclasses
import importlib.util
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
from monitor.config import PreprocessConfig  # noqa: E402
from monitor.constants import (  # noqa: E402
    LABELS,
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    YAMNET_AUDIOSET_CLASSES,
    YAMNET_EMBEDDING_SIZE,
)
from monitor.paths import default_yamnet_tflite  # noqa: E402
from monitor.preprocess import clip_windows, prepare_batch  # noqa: E402
from monitor.windows import hop_samples_from_seconds  # noqa: E402
from training import teacher_targets as tt  # noqa: E402
from training.contrastive import ContrastiveObjective, ContrastiveSettings  # noqa: E402
from training.data import Clip, class_weights  # noqa: E402
from training.windows import WindowSet  # noqa: E402

pytestmark = pytest.mark.train

CLIP_SECONDS = 2.0
QUICK = tw.TrainSettings(batch_size=8, epochs=4, threads=1, scratch_lr=3e-3)
QUICK_DISTILL = tw.DistillSettings(steps=32, batch_size=8, lr=3e-3)
"""Steps, not time, end the tiny pretraining: 32 steps of 8 windows take seconds."""
QUICK_CONTRASTIVE = ContrastiveSettings(steps=32, batch_size=8, lr=3e-3)
TINY_WINDOWS = 64
SPECTRAL_BANDS_WIDTH = 7
"""Stand-in teacher: 1024 bands of 7 FFT bins each (7168 of the window's 7801 bins)."""


class SpectralTeacher:
    """A cheap, deterministic stand-in for YAMNet: band energies of each window alone (row i depends on
    window i only, as with the real teacher)."""

    identity = "spectral-bands-v1"

    def __init__(self):
        self.calls = 0

    def __call__(self, prepared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        power = np.abs(np.fft.rfft(prepared, axis=1)) ** 2
        bands = power[:, :YAMNET_EMBEDDING_SIZE * SPECTRAL_BANDS_WIDTH]
        embeddings = np.log1p(bands.reshape(len(prepared), YAMNET_EMBEDDING_SIZE, -1).mean(axis=2))
        centred = embeddings[:, :YAMNET_AUDIOSET_CLASSES] - embeddings.mean(axis=1, keepdims=True)
        return embeddings.astype(np.float32), (1.0 / (1.0 + np.exp(-centred))).astype(np.float32)


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
                                 window_cache_dir=out / "cache", progress=False, pretraining=None)
    return out, metadata


@pytest.fixture(scope="module")
def distilled(split, tmp_path_factory):
    out = tmp_path_factory.mktemp("distilled")
    teacher = SpectralTeacher()
    metadata = tw.train_wav2vec2(split, out, max_minutes=3, seed=7, tiny=True, settings=QUICK,
                                 window_cache_dir=out / "cache", progress=False, pretraining=QUICK_DISTILL,
                                 teacher=teacher, teacher_cache_dir=out / "teacher")
    return out, metadata, teacher


def _windows(n: int, seed: int) -> np.ndarray:
    """Conditioned-looking windows of different levels and spectra."""
    rng = np.random.default_rng(seed)
    t = np.arange(WINDOW_SAMPLES) / SAMPLE_RATE
    tones = np.sin(2 * np.pi * rng.uniform(200, 3000, size=(n, 1)) * t)
    return (rng.uniform(0.05, 0.5, size=(n, 1)) * tones + 0.01 * rng.standard_normal((n, WINDOW_SAMPLES))
            ).astype(np.float32)


# --- teacher targets -----------------------------------------------------------------------------


def test_teacher_targets_line_up_with_their_windows_and_reload_from_the_cache(tmp_path):
    windows = _windows(2 * 5 + 3, seed=0)
    cfg = PreprocessConfig()
    teacher = SpectralTeacher()
    original_chunk = tt.CHUNK_WINDOWS
    tt.CHUNK_WINDOWS = 5  # several chunks, the last one partial
    try:
        targets = tt.teacher_targets(windows, cfg, teacher, tmp_path)
    finally:
        tt.CHUNK_WINDOWS = original_chunk
    assert teacher.calls == 3
    for row in (0, 4, 5, 12):
        embedding, scores = teacher(prepare_batch(windows[row:row + 1], cfg))
        np.testing.assert_allclose(targets.embeddings[row], embedding[0], rtol=1e-5)
        np.testing.assert_allclose(targets.scores[row], scores[0], rtol=1e-5)

    calls = teacher.calls
    again = tt.teacher_targets(windows, cfg, teacher, tmp_path)
    assert teacher.calls == calls  # from the cache
    np.testing.assert_array_equal(again.embeddings, targets.embeddings)

    order = np.random.default_rng(1).permutation(len(windows))
    shuffled = tt.teacher_targets(windows[order], cfg, teacher, tmp_path)
    assert teacher.calls > calls  # other rows, other key: never a stale row
    np.testing.assert_allclose(shuffled.embeddings, targets.embeddings[order], rtol=1e-5)
    assert len(list(tmp_path.glob("targets-*.npz"))) == 2


def test_teacher_targets_key_depends_on_preprocessing_and_teacher():
    windows = _windows(3, seed=2)
    key = tt.targets_key(windows, PreprocessConfig(), "a")
    assert tt.targets_key(windows.copy(), PreprocessConfig(), "a") == key
    assert tt.targets_key(windows, PreprocessConfig(target_dbfs=-30.0), "a") != key
    assert tt.targets_key(windows, PreprocessConfig(), "b") != key


@pytest.mark.skipif(not (all(importlib.util.find_spec(m) for m in ("tf2onnx", "tensorflow"))
                         and default_yamnet_tflite().is_file()),
                    reason="needs the train extra (tf2onnx, tensorflow) and the shared YAMNet model")
def test_yamnet_teacher_gives_the_embeddings_of_the_runtime_feature_extractor(tmp_path):
    from training.yamnet_features import convert_yamnet, extract_embeddings

    base = convert_yamnet(out_path=tmp_path / "yamnet_base.onnx")
    windows = _windows(11, seed=3)
    targets = tt.teacher_targets(windows, PreprocessConfig(), tt.YamnetTeacher(base), tmp_path / "teacher")
    embeddings, scores = extract_embeddings(prepare_batch(windows, PreprocessConfig()), base, cache=False,
                                            progress=False)
    np.testing.assert_allclose(targets.embeddings, embeddings, atol=1e-5)
    np.testing.assert_allclose(targets.scores, scores, atol=1e-5)
    assert targets.embeddings.shape == (11, YAMNET_EMBEDDING_SIZE)


def test_mixtures_combine_two_windows_and_follow_the_seed():
    windows = _windows(6, seed=4)
    mixtures = tt.mixture_windows(windows, 9, (-5.0, 5.0), np.random.default_rng(0))
    assert mixtures.shape == (9, WINDOW_SAMPLES) and mixtures.dtype == np.float32
    np.testing.assert_array_equal(mixtures, tt.mixture_windows(windows, 9, (-5.0, 5.0), np.random.default_rng(0)))
    assert not any(np.allclose(m, w) for m in mixtures for w in windows)
    assert len(tt.mixture_windows(windows[:1], 4, (0.0, 0.0), np.random.default_rng(0))) == 0


def test_pretraining_windows_never_take_test_audio_and_respect_the_cap():
    sets = {name: WindowSet(_windows(n, seed), np.zeros(n, np.int64), np.arange(n), np.array(["g"] * n),
                            np.ones(n, bool)) for seed, (name, n) in enumerate((("train", 20), ("val", 10),
                                                                                ("test", 10)))}
    distill = tw.DistillSettings(mixtures_per_window=0.5)
    rng = np.random.default_rng(0)
    windows = tw.pretraining_windows(sets, distill, 1000, rng)
    assert len(windows) == 30 + 15
    test_rows = {w.tobytes() for w in sets["test"].windows}
    assert not any(w.tobytes() in test_rows for w in windows)
    assert len(tw.pretraining_windows(sets, distill, 30, rng)) == 20 + 10
    with pytest.raises(ValueError, match="test"):
        tw.pretraining_windows(sets, dataclasses.replace(distill, splits=("train", "test")), 1000, rng)


def test_pretraining_on_a_tiny_model_lowers_its_loss_and_changes_only_the_encoder():
    windows = _windows(TINY_WINDOWS, seed=5)
    cfg = PreprocessConfig()
    targets = tt.compute_targets(windows, cfg, SpectralTeacher())
    torch.manual_seed(0)
    model = tw.build_model(None, tw.TINY_DIMS)
    classifier_before = model.classifier.weight.detach().clone()
    encoder_before = [p.detach().clone() for p in model.wav2vec2.parameters()]
    history, stopped_by = tw.pretrain(model, windows, tw.DistillObjective(model, targets, QUICK_DISTILL), cfg,
                                      QUICK_DISTILL, QUICK, cap_seconds=60.0,
                                      rng=np.random.default_rng(0))
    passes = QUICK_DISTILL.steps * QUICK_DISTILL.batch_size // TINY_WINDOWS
    assert [h["pass"] for h in history] == list(range(1, passes + 1)) and stopped_by == "steps"
    assert sum(h["steps"] for h in history) == QUICK_DISTILL.steps
    assert history[-1]["loss"] < history[0]["loss"]
    assert torch.equal(model.classifier.weight, classifier_before)  # fine-tuning trains the 3-label layer
    assert any(not torch.equal(a, b) for a, b in zip(encoder_before, model.wav2vec2.parameters(), strict=True))


def test_pretraining_stops_at_its_wall_clock_cap_and_says_so():
    windows = _windows(TINY_WINDOWS, seed=5)
    targets = tt.compute_targets(windows, PreprocessConfig(), SpectralTeacher())
    model = tw.build_model(None, tw.TINY_DIMS)
    before = [p.detach().clone() for p in model.parameters()]
    history, stopped_by = tw.pretrain(model, windows, tw.DistillObjective(model, targets, QUICK_DISTILL),
                                      PreprocessConfig(), QUICK_DISTILL, QUICK,
                                      cap_seconds=0.0, rng=np.random.default_rng(0))
    assert (history, stopped_by) == ([], "time")
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_contrastive_pretraining_trains_the_classifiers_own_encoder_without_labels():
    windows = _windows(TINY_WINDOWS, seed=5)
    torch.manual_seed(0)
    model = tw.build_model(None, tw.TINY_DIMS)
    objective = ContrastiveObjective(model.wav2vec2, QUICK_CONTRASTIVE)
    assert objective.pretraining.wav2vec2 is model.wav2vec2
    encoder_ids = {id(p) for p in model.wav2vec2.parameters()}
    assert objective.extra_parameters() and not any(id(p) in encoder_ids for p in objective.extra_parameters())
    classifier_before = model.classifier.weight.detach().clone()
    encoder_before = [p.detach().clone() for p in model.wav2vec2.parameters()]
    quantiser_before = objective.pretraining.quantizer.codevectors.detach().clone()
    history, stopped_by = tw.pretrain(model, windows, objective, PreprocessConfig(), QUICK_CONTRASTIVE, QUICK,
                                      cap_seconds=60.0, rng=np.random.default_rng(0))
    assert stopped_by == "steps" and sum(h["steps"] for h in history) == QUICK_CONTRASTIVE.steps
    assert all(np.isfinite(h["loss"]) for h in history) and history[-1]["loss"] < history[0]["loss"]
    assert torch.equal(model.classifier.weight, classifier_before)
    assert any(not torch.equal(a, b) for a, b in zip(encoder_before, model.wav2vec2.parameters(), strict=True))
    assert not torch.equal(objective.pretraining.quantizer.codevectors, quantiser_before)


class RefusingTeacher:
    identity = "must-not-be-asked"

    def __call__(self, prepared: np.ndarray):
        raise AssertionError("self-supervised pretraining asked the teacher")


def test_self_supervised_training_needs_no_teacher_and_says_how_the_encoder_began(split, tmp_path):
    metadata = tw.train_wav2vec2(split, tmp_path / "model", max_minutes=3, seed=7, tiny=True, settings=QUICK,
                                 window_cache_dir=tmp_path / "cache", progress=False, pretraining=QUICK_CONTRASTIVE,
                                 teacher=RefusingTeacher(), teacher_cache_dir=tmp_path / "teacher")
    assert metadata["init"] == tw.INIT_SELF_SUPERVISED and metadata["checkpoint"] is None
    pretraining = metadata["pretraining"]
    assert pretraining["objective"] == "contrastive" and "teacher" not in pretraining
    assert pretraining["steps"] == QUICK_CONTRASTIVE.steps and pretraining["stopped_by"] == "steps"
    assert pretraining["settings"]["negatives"] == QUICK_CONTRASTIVE.negatives
    assert metadata["peak_lr"] == QUICK_CONTRASTIVE.finetune_lr
    assert not (tmp_path / "teacher").exists()
    saved = json.loads((tmp_path / "model" / tw.METADATA_FILE).read_text())
    assert saved["init"] == tw.INIT_SELF_SUPERVISED


# --- training ----------------------------------------------------------------------------------


def test_scratch_training_learns_and_saves_a_loadable_model(trained):
    out, metadata = trained
    losses = [epoch["train_loss"] for epoch in metadata["history"]]
    assert len(losses) == QUICK.epochs and metadata["stopped_by"] == "epochs"
    assert losses[-1] < losses[0]
    saved = json.loads((out / tw.METADATA_FILE).read_text())
    assert saved["init"] == tw.INIT_SCRATCH and saved["checkpoint"] is None and saved["pretraining"] is None
    assert saved["peak_lr"] == QUICK.scratch_lr
    assert saved["normalisation"] == "zero_mean_unit_var"
    assert saved["config"]["hidden_size"] == tw.TINY_DIMS.hidden_size
    assert saved["temperature"] > 0
    assert {"ece_before", "ece_after", "val_metrics", "test_metrics", "minutes", "epochs"} <= saved.keys()
    model = Wav2Vec2ForSequenceClassification.from_pretrained(out)
    assert [model.config.id2label[i] for i in range(len(LABELS))] == list(LABELS)


def test_default_training_distils_the_encoder_from_the_teacher_first(distilled, split):
    out, metadata, teacher = distilled
    assert metadata["init"] == tw.INIT_DISTILLED and metadata["checkpoint"] is None
    pretraining = metadata["pretraining"]
    assert pretraining["teacher"] == SpectralTeacher.identity and pretraining["steps"] > 0
    per_clip = len(clip_windows(np.zeros(int(CLIP_SECONDS * SAMPLE_RATE), np.float32),
                                hop_samples_from_seconds(tw.Config().window.hop_seconds)))
    clean = len(split["train"] + split["val"]) * per_clip  # every window of every train and val clip, no test
    assert pretraining["windows"] == clean + int(clean * QUICK_DISTILL.mixtures_per_window)
    assert len(list((out / "teacher").glob("targets-*.npz"))) == 1
    assert metadata["peak_lr"] == QUICK_DISTILL.finetune_lr
    assert json.loads((out / tw.METADATA_FILE).read_text())["init"] == tw.INIT_DISTILLED


def test_the_same_seed_trains_the_same_model(trained, split, tmp_path):
    """Steps, not the clock, set a run's length, so a rerun repeats it to the bit."""
    first_dir, first = trained
    metadata = tw.train_wav2vec2(split, tmp_path / "again", max_minutes=3, seed=7, tiny=True, settings=QUICK,
                                 window_cache_dir=tmp_path / "cache", progress=False, pretraining=None)
    assert [e["train_loss"] for e in metadata["history"]] == [e["train_loss"] for e in first["history"]]
    again = Wav2Vec2ForSequenceClassification.from_pretrained(tmp_path / "again").state_dict()
    for name, tensor in Wav2Vec2ForSequenceClassification.from_pretrained(first_dir).state_dict().items():
        assert torch.equal(tensor, again[name]), name


def test_the_kept_epoch_is_the_best_by_the_chosen_criterion_and_the_training_is_the_same(trained, split, tmp_path):
    """Both criteria are recorded every epoch; ``stop_on`` only picks which epoch's weights are kept."""
    _, by_f1 = trained
    history = by_f1["history"]
    assert all(0.0 <= e["val_normal_alert_share"] <= 1.0 for e in history)
    assert by_f1["settings"]["stop_on"] == "macro_f1"
    assert by_f1["best_epoch"] == 1 + int(np.argmax([e["val_macro_f1"] for e in history]))
    settings = dataclasses.replace(QUICK, stop_on="alert_ranking")
    by_ranking = tw.train_wav2vec2(split, tmp_path / "ranking", max_minutes=3, seed=7, tiny=True, settings=settings,
                                   window_cache_dir=tmp_path / "cache", progress=False, pretraining=None)
    def without_clock(records: list[dict]) -> list[dict]:
        return [{k: v for k, v in record.items() if k != "seconds"} for record in records]

    assert without_clock(by_ranking["history"]) == without_clock(history)  # the same run, to the bit
    assert by_ranking["best_epoch"] == 1 + int(np.argmin([e["val_normal_alert_share"] for e in history]))
    with pytest.raises(ValueError, match="TrainSettings.stop_on"):
        dataclasses.replace(QUICK, stop_on="accuracy")


def test_a_run_cut_by_its_wall_clock_cap_says_it_is_not_repeatable(split, tmp_path, caplog):
    metadata = tw.train_wav2vec2(split, tmp_path / "cut", max_minutes=1e-4, seed=7, tiny=True, settings=QUICK,
                                 window_cache_dir=tmp_path / "cache", progress=False, pretraining=None)
    assert metadata["stopped_by"] == "time" and metadata["steps"] == 0
    assert "not repeatable" in caplog.text


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
                                 settings=tw.TrainSettings(batch_size=8, epochs=1, threads=1),
                                 window_cache_dir=tmp_path / "cache", progress=False)
    assert metadata["init"] == tw.INIT_PRETRAINED and metadata["checkpoint"] == str(checkpoint)
    assert metadata["pretraining"] is None  # a real checkpoint is not distilled again
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


def test_cli_takes_either_a_checkpoint_or_scratch_and_no_negative_pretraining(tmp_path, capsys):
    with pytest.raises(SystemExit):
        tw.main(["--scratch", "--init", str(tmp_path / "checkpoint")])
    assert "not allowed with" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tw.main(["--pretrain-steps", "-1", "--out", str(tmp_path / "out")])
    assert "--pretrain-steps" in capsys.readouterr().err


# --- pure helpers -------------------------------------------------------------------------------


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    values = [tw.lr_factor(p, 0.1, 0.02) for p in np.linspace(0, 1, 101)]
    peak = int(np.argmax(values))
    assert values[peak] == pytest.approx(1.0)
    assert abs(peak - 10) <= 1
    assert all(a >= b for a, b in zip(values[peak:], values[peak + 1:]))
    assert values[-1] == pytest.approx(0.02)
    assert values[0] == pytest.approx(0.02)


def test_schedule_follows_steps_unless_the_cap_would_cut_the_run_first():
    assert tw.schedule_progress(0, 100, elapsed=2.0, cap_seconds=100.0) == 0.0  # the clock never sets step 0
    assert tw.schedule_progress(50, 100, elapsed=40.0, cap_seconds=100.0) == 0.5  # on pace: by steps alone
    slow = tw.schedule_progress(50, 100, elapsed=82.0, cap_seconds=100.0)
    assert slow == pytest.approx(0.8)  # behind: the curve moves on with the clock
    assert tw.schedule_progress(60, 100, elapsed=100.0, cap_seconds=100.0) == pytest.approx(1.0)  # ends at the cap


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
