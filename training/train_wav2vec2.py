"""The second voter: a Wav2Vec2 sequence classifier over prepared 0.975 s windows.

Four ways in. ``--init`` fine-tunes a pretrained checkpoint (a local folder or a hub name, for users who
are online) with its convolutional feature encoder frozen. Without it (the default) a compact Wav2Vec2 is
first taught by YAMNet: its pooled output learns to predict YAMNet's embedding and AudioSet scores for
unlabelled windows of every train and val clip and for mixtures of two of them (``training.teacher_targets``;
test clips never), then it is fine-tuned on the three labels. ``--pretrain contrastive`` pretrains it on the same
windows without a teacher instead (wav2vec 2.0's own objective, ``training.contrastive``); ``--scratch`` skips
pretraining (the earlier recipe). The compact shape was measured on 2 CPU cores within a 10-minute run:
- the conv stack opens with a stride-10 layer, tapers its width (24 -> 128 channels) and ends at 40 ms
  frames: the first layers over the long sequence dominate the cost, and a training step of this model
  measured 3-5x cheaper than with the textbook 7 x 128 stack at 20 ms frames, so more epochs fit the
  run (the input is band-limited to 4 kHz anyway);
- pre-LayerNorm transformer blocks (``do_stable_layer_norm``): with post-LN at this learning rate, val
  macro-F1 swung between epochs and one run collapsed to a single class (0.05); the pre-LN runs improved
  steadily.

Every input is ``prepare_window`` output standardised to zero mean and unit variance per window, the
same steps the runtime applies before the exported ONNX model (``normalisation: zero_mean_unit_var``).

A run's length is a count of steps (``DistillSettings.steps``, ``TrainSettings.epochs``), so the same code,
data and seed build the same model on any machine. The wall clock only caps a run that would overrun the
build (``--max-minutes``): the learning-rate curve is then squeezed into the cap and the metadata says
``stopped_by: time``. Builds used to train for a fixed time instead, and three builds of the same code gave
test macro-F1 0.63, 0.70 and 0.74, as the clock let a different number of steps in.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("USE_TF", "0")  # transformers would otherwise import TensorFlow: seconds and GBs for nothing

import numpy as np
import torch
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification, set_seed

from monitor.classify import standardise
from monitor.command import EXIT_FAILURE, add_config_option, setup_logging
from monitor.config import Config, GateConfig, PreprocessConfig, load_config
from monitor.constants import LABELS, SAMPLE_RATE, WINDOW_SAMPLES, YAMNET_AUDIOSET_CLASSES, YAMNET_EMBEDDING_SIZE
from monitor.paths import build_dir, default_manifest_csv
from monitor.preprocess import prepare_batch
from monitor.progress import progress_bar
from monitor.signal_helpers import softmax
from monitor.windows import hop_samples_from_seconds

from .augment import AugmentParams, augment_window
from .calibration import expected_calibration_error, fit_temperature
from .contrastive import ContrastiveObjective, ContrastiveSettings
from .data import Clip, class_weights
from .early_stopping import RANKING_KEEPS, STOP_ON, check_stop_on, normal_alert_share, stopping_score
from .metrics import index_report
from .pretraining import PRETRAIN_STEPS, PretrainSettings, pretraining_windows
from .split import SPLITS, dataset_split
from .teacher_targets import Teacher, TeacherTargets, YamnetTeacher, teacher_targets
from .windows import WindowSet, build_window_set
from .yamnet_features import convert_yamnet

log = logging.getLogger(__name__)

MODEL_SUBDIR = "wav2vec2"
METADATA_FILE = "metadata.json"
NORMALISATION = "zero_mean_unit_var"
TRAIN_THREADS = 2
"""The target machine has 2 cores; more threads than cores only adds contention."""
DEFAULT_MAX_MINUTES = 13.0
"""Wall-clock cap of the whole run, loading included. The step counts take 8.5-9.5 minutes on 2 cores (the
build's 25 minutes hold three YAMNet heads and the operating-point tuning too); the cap leaves a third more for
a slower machine before it cuts the run short."""
DEFAULT_TRAINING_SEED = 0
"""Seed of the Wav2Vec2 initialisation and batch order (the split has its own, ``DEFAULT_SPLIT_SEED``)."""
INITIAL_RESERVE_SECONDS = 60.0
"""Time kept back for the final evaluation and saving until the first validation pass has been timed."""
SAVE_MARGIN_SECONDS = 15.0
RESERVE_EVALUATIONS = 3
"""The final phase predicts val once and test (about the size of val) once; one more pass is slack."""
PRETRAIN_MAX_SHARE = 0.4
"""The pretraining never takes more than this share of the run's cap (it binds on short smoke runs,
``--quick``): fine-tuning needs the rest."""
PRETRAIN_WINDOWS_PER_MINUTE = 6000
"""Windows given to the teacher per minute of the pretraining's cap: when the cap is short, no teacher time goes
to windows the student would never reach (a step on a batch of 16 takes ~0.15 s on one free core)."""
PRETRAIN_DISTILL = "distill"
CAP_SLACK = 0.1
"""Share of a wall-clock cap that passes before the clock can move the learning rate (``schedule_progress``)."""
EMBEDDING_STD_FLOOR = 1e-2
"""Embedding dimensions are standardised by their spread over the targets, never by less than this (dead units)."""
INIT_SCRATCH, INIT_DISTILLED, INIT_SELF_SUPERVISED, INIT_PRETRAINED = (
    "scratch", "distilled-yamnet", "self-supervised", "pretrained")
"""How the encoder was initialised (metadata ``init``, copied into the manifest)."""


@dataclass(frozen=True)
class ModelDims:
    """Size of a from-scratch Wav2Vec2; the conv stack's strides set the frame rate (product 640 = 40 ms)."""

    hidden_size: int = 192
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 384
    conv_dim: tuple[int, ...] = (24, 48, 96, 128, 128)
    conv_kernel: tuple[int, ...] = (20, 3, 3, 4, 4)
    conv_stride: tuple[int, ...] = (10, 2, 2, 4, 4)
    num_conv_pos_embeddings: int = 32
    """Positional conv kernel in frames (the textbook 128 spans 2.5 s, longer than a window)."""
    num_conv_pos_embedding_groups: int = 16
    classifier_proj_size: int = 128
    mask_time_length: int = 3
    """SpecAugment-style time masks, in frames; the default 10 frames would hide 40% of a 24-frame window."""
    do_stable_layer_norm: bool = True
    """Pre-LayerNorm transformer blocks: stable from scratch at a learning rate that post-LN does not survive."""


COMPACT_DIMS = ModelDims()
TINY_DIMS = ModelDims(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                      conv_dim=(8, 8, 16), conv_kernel=(10, 4, 4), conv_stride=(5, 4, 8),
                      num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, classifier_proj_size=8,
                      mask_time_length=2)
"""For smoke tests: trains in seconds, learns nothing useful."""


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings; the learning rate follows a warm-up + cosine curve over ``epochs``."""

    batch_size: int = 16
    scratch_lr: float = 5e-4
    """From random weights (``--scratch``). 1e-3, chosen when runs were cut by the clock, lost every scream of val in
    the 3-epoch regime (window macro-F1 0.575); 5e-4, the pretrained encoders' fine-tuning rate, reached 0.758 on the
    same seed (README)."""
    pretrained_lr: float = 1e-4
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.98)
    """wav2vec 2.0's own choice: a shorter second-moment memory reacts faster to the loss spikes of a
    from-scratch transformer."""
    adam_eps: float = 1e-6
    warmup_fraction: float = 0.06
    final_lr_fraction: float = 0.02
    grad_clip_norm: float = 1.0
    label_smoothing: float = 0.05
    epochs: int = 3
    """Fine-tuning length; the val-best epoch is kept. Three epochs (~110 s each on 2 free cores) are what the
    earlier 9.5-minute clock let in on most builds."""
    stop_on: str = "macro_f1"
    """Which epoch is kept (``training.early_stopping``; both criteria are in every epoch's record). Not the YAMNet
    head's ``alert_ranking``: with three epochs it picked epoch 2 of the build's seed, no better on the test split's
    alert tail (a mean 0.222 of Normal windows alerting either way) and worse on its clips (macro-F1 0.712 ->
    0.652); six epochs did not move the tail either (README)."""
    ranking_keeps: tuple[float, ...] = RANKING_KEEPS
    noise_bank_size: int = 1024
    """Normal training windows kept as backgrounds for mixing."""
    eval_batch_size: int = 64
    threads: int = TRAIN_THREADS
    """Torch threads, fixed: the thread count changes the order of the sums and so the model. When it was chosen
    by timing a few steps each epoch, a clean-clone build took its third epoch on 1 thread."""

    def __post_init__(self) -> None:
        check_stop_on(self.stop_on, "TrainSettings")


@dataclass(frozen=True)
class DistillSettings(PretrainSettings):
    """Teacher-student pretraining: the pooled output learns YAMNet's embedding (MSE on standardised
    dimensions) and its AudioSet scores (binary cross-entropy on the teacher's probabilities)."""

    embedding_weight: float = 1.0
    scores_weight: float = 1.0
    windows_per_minute: int = PRETRAIN_WINDOWS_PER_MINUTE

    def window_count(self, cap_seconds: float) -> int:
        """Windows (clean + mixtures) the teacher labels: fewer when the cap is short."""
        return int(min(self.windows, self.windows_per_minute * cap_seconds / 60.0))


PRETRAIN_OBJECTIVES: dict[str, type[PretrainSettings]] = {PRETRAIN_DISTILL: DistillSettings,
                                                          "contrastive": ContrastiveSettings}
"""``--pretrain`` choices."""


@dataclass
class EpochRecord:
    epoch: int
    steps: int
    train_loss: float
    val_accuracy: float
    val_macro_f1: float
    val_normal_alert_share: float
    """``early_stopping.normal_alert_share``: lower is better."""
    lr: float
    seconds: float


@dataclass
class Predictions:
    """Window logits of one split with what the metrics need to aggregate them per clip."""

    logits: np.ndarray
    labels: np.ndarray
    clip_index: np.ndarray


def label_maps() -> tuple[dict[int, str], dict[str, int]]:
    return dict(enumerate(LABELS)), {label: i for i, label in enumerate(LABELS)}


def model_inputs(conditioned: np.ndarray, preprocess_cfg: PreprocessConfig) -> np.ndarray:
    """Conditioned windows -> what the model sees: ``prepare_window`` then the runtime's standardisation."""
    return standardise(prepare_batch(conditioned, preprocess_cfg))


def scratch_config(dims: ModelDims) -> Wav2Vec2Config:
    id2label, label2id = label_maps()
    return Wav2Vec2Config(
        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(dims).items()},
        feat_extract_norm="group", num_labels=len(LABELS), id2label=id2label, label2id=label2id)


def build_model(init: str | None, dims: ModelDims) -> Wav2Vec2ForSequenceClassification:
    """A fresh compact model, or a pretrained checkpoint with a new 3-label head and a frozen feature encoder."""
    if init is None:
        return Wav2Vec2ForSequenceClassification(scratch_config(dims))
    id2label, label2id = label_maps()
    try:
        model = Wav2Vec2ForSequenceClassification.from_pretrained(
            init, num_labels=len(LABELS), id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True)
    except (OSError, ValueError) as exc:  # missing folder, bad hub id, or offline
        raise ValueError(f"--init {init}: cannot load a Wav2Vec2 checkpoint ({str(exc).splitlines()[0]})") from None
    model.freeze_feature_encoder()
    return model


def config_summary(model: Wav2Vec2ForSequenceClassification) -> dict:
    """The dimensions that describe a model in metadata and the manifest."""
    cfg = model.config
    return {
        "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads, "intermediate_size": cfg.intermediate_size,
        "conv_dim": list(cfg.conv_dim), "conv_kernel": list(cfg.conv_kernel), "conv_stride": list(cfg.conv_stride),
        "frames_per_window": int(model.wav2vec2._get_feat_extract_output_lengths(WINDOW_SAMPLES)),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "trainable_parameters": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
    }


def lr_factor(progress: float, warmup_fraction: float, final_fraction: float) -> float:
    """Multiplier of the peak learning rate: linear warm-up, then cosine down to ``final_fraction``."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup_fraction:
        return max(progress / warmup_fraction, final_fraction)
    cosine = 0.5 * (1.0 + np.cos(np.pi * (progress - warmup_fraction) / max(1.0 - warmup_fraction, 1e-9)))
    return float(final_fraction + (1.0 - final_fraction) * cosine)


def _warn_cut_short(stage: str, cap_seconds: float, steps_done: int, steps_planned: int) -> None:
    log.warning("Wav2Vec2 %s cut by its %.1f-minute cap after %d of %d steps: this model is not repeatable (raise "
                "--max-minutes / --w2v-minutes, or free a core)", stage, cap_seconds / 60.0, steps_done, steps_planned)


def schedule_progress(step: int, total_steps: int, elapsed: float, cap_seconds: float) -> float:
    """Position on the learning-rate curve: by steps, or by time once the run falls behind the pace its wall-clock
    cap allows (the curve then still ends inside the cap). The time term starts at zero only after
    ``CAP_SLACK`` of the cap: a plain max(steps, time) lets the clock set the first steps' learning rate (time has
    passed at step 0), and two runs of one seed parted there."""
    by_time = (elapsed / max(cap_seconds, 1e-9) - CAP_SLACK) / (1.0 - CAP_SLACK)
    return max(step / max(total_steps, 1), by_time)


class Budget:
    """Wall-clock cap of the whole run; training stops early enough to evaluate and save within it."""

    def __init__(self, max_minutes: float, start: float | None = None):
        self.start = time.monotonic() if start is None else start
        self.total = max_minutes * 60.0
        self.reserve = min(INITIAL_RESERVE_SECONDS, self.total / 4)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def training_left(self) -> float:
        return self.total - self.reserve - self.elapsed()

    def note_evaluation(self, seconds: float) -> None:
        self.reserve = RESERVE_EVALUATIONS * seconds + SAVE_MARGIN_SECONDS


def predict_logits(model: nn.Module, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            out.append(model(torch.from_numpy(inputs[start:start + batch_size])).logits.float().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(LABELS)), np.float32)


def clip_probabilities(probs: np.ndarray, clip_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first window of each clip, mean window probability per clip): the clip-level decision."""
    _, first, inverse = np.unique(clip_index, return_index=True, return_inverse=True)
    sums = np.zeros((len(first), probs.shape[1]))
    np.add.at(sums, inverse, probs)
    return first, sums / np.bincount(inverse)[:, None]


def split_metrics(pred: Predictions, temperature: float = 1.0) -> dict:
    """Window- and clip-level accuracy / macro-F1 / per-class figures, plus ECE, at ``temperature``."""
    probs = softmax(pred.logits, temperature)
    first, clip_probs = clip_probabilities(probs, pred.clip_index)
    return {
        "windows": int(len(pred.labels)),
        "clips": int(len(first)),
        "window": index_report(pred.labels, probs.argmax(axis=1), LABELS),
        "clip": index_report(pred.labels[first], clip_probs.argmax(axis=1), LABELS),
        "ece": expected_calibration_error(probs, pred.labels),
    }


def evaluation_view(window_set: WindowSet) -> WindowSet:
    """Windows whose label can be trusted: active windows, or all windows of a clip that has none active."""
    fallback = ~np.isin(window_set.clip_index, window_set.clip_index[window_set.active])
    return window_set.select(window_set.active | fallback)


class _Batches:
    """Shuffled, augmented, prepared training batches."""

    def __init__(self, train: WindowSet, preprocess_cfg: PreprocessConfig, augment: AugmentParams,
                 settings: TrainSettings, rng: np.random.Generator):
        self.train = train
        self.preprocess_cfg = preprocess_cfg
        self.augment = augment
        self.batch_size = settings.batch_size
        self.rng = rng
        normal = np.flatnonzero(train.labels == LABELS.index("Normal"))
        chosen = rng.choice(normal, size=min(settings.noise_bank_size, normal.size), replace=False)
        self.noise_bank = train.windows[np.sort(chosen)] if chosen.size else None

    def steps_per_epoch(self) -> int:
        return max(1, len(self.train) // self.batch_size)

    def epoch(self):
        order = self.rng.permutation(len(self.train))
        for step in range(self.steps_per_epoch()):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            augmented = np.stack([augment_window(w, self.rng, self.noise_bank, self.augment)
                                  for w in self.train.windows[index]])
            yield (torch.from_numpy(model_inputs(augmented, self.preprocess_cfg)),
                   torch.from_numpy(self.train.labels[index].astype(np.int64)))


def make_optimizer(params: list[nn.Parameter], lr: float, settings: TrainSettings) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=lr, weight_decay=settings.weight_decay, betas=settings.adam_betas,
                             eps=settings.adam_eps)


def optimizer_step(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], loss: torch.Tensor, lr: float,
                   clip_norm: float) -> None:
    """One update at learning rate ``lr`` with the gradient norm clipped."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(params, clip_norm)
    optimizer.step()


@dataclass
class _Outcome:
    best_state: dict
    best_epoch: int
    steps: int
    stopped_by: str
    history: list[EpochRecord]


def _fit(model: Wav2Vec2ForSequenceClassification, batches: _Batches, val_inputs: np.ndarray,
         val_labels: np.ndarray, peak_lr: float, weights: np.ndarray, settings: TrainSettings,
         budget: Budget, progress: bool) -> _Outcome:
    """Train for ``settings.epochs`` (or until the cap); keep the state of the best val ``settings.stop_on``."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, peak_lr, settings)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32),
                                  label_smoothing=settings.label_smoothing)
    planned_steps = settings.epochs * batches.steps_per_epoch()
    train_seconds = max(budget.training_left(), 1.0)
    train_start = time.monotonic()
    history: list[EpochRecord] = []
    best_score, best_epoch, best_state = -float("inf"), 0, copy.deepcopy(model.state_dict())
    val_active = np.ones(len(val_labels), bool)  # evaluation_view: every val window carries its clip's label
    step, stopped_by = 0, "epochs"
    for epoch in range(1, settings.epochs + 1):
        model.train()
        epoch_start, losses, lr = time.monotonic(), [], peak_lr
        bar = progress_bar(batches.epoch(), total=batches.steps_per_epoch(), desc=f"epoch {epoch}", unit="batch",
                           enabled=progress, leave=False)
        for inputs, labels in bar:
            if budget.training_left() <= 0:
                stopped_by = "time"
                break
            fraction = schedule_progress(step, planned_steps, time.monotonic() - train_start, train_seconds)
            lr = peak_lr * lr_factor(fraction, settings.warmup_fraction, settings.final_lr_fraction)
            loss = loss_fn(model(inputs).logits, labels)
            optimizer_step(optimizer, params, loss, lr, settings.grad_clip_norm)
            step += 1
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{lr:.1e}")
        bar.close()
        if not losses:
            break
        eval_start = time.monotonic()
        val_logits = predict_logits(model, val_inputs, settings.eval_batch_size)
        budget.note_evaluation(time.monotonic() - eval_start)
        report = index_report(val_labels, val_logits.argmax(axis=1), LABELS)
        share = normal_alert_share(val_logits, val_labels, val_active, settings.ranking_keeps)
        history.append(EpochRecord(epoch, step, float(np.mean(losses)), report["accuracy"], report["macro_f1"], share,
                                   lr, time.monotonic() - epoch_start))
        log.info("epoch %d: loss %.4f, val accuracy %.3f, macro-F1 %.3f, Normal alert share %.3f (%.0f s)", epoch,
                 np.mean(losses), report["accuracy"], report["macro_f1"], share, time.monotonic() - epoch_start)
        score = stopping_score(report["macro_f1"], share, settings.stop_on)
        if score > best_score:
            best_score, best_epoch, best_state = score, epoch, copy.deepcopy(model.state_dict())
        if stopped_by == "time":
            break
    if stopped_by == "time":
        _warn_cut_short("fine-tuning", budget.total, step, planned_steps)
    return _Outcome(best_state, best_epoch, step, stopped_by, history)


def _window_sets(clips_split: dict[str, list[Clip]], preprocess_cfg: PreprocessConfig, gate_cfg: GateConfig,
                 hop_samples: int, cache_dir: Path | None, progress: bool) -> dict[str, WindowSet]:
    """One cached window set over every clip (sorted by path, so reruns hit the cache), cut per split."""
    all_clips = sorted({c for name in SPLITS for c in clips_split.get(name, [])}, key=lambda c: str(c.path))
    window_set = build_window_set(all_clips, preprocess_cfg, hop_samples, gate_cfg, cache_dir=cache_dir,
                                  progress=progress)
    position = {c: i for i, c in enumerate(all_clips)}
    return {name: window_set.of_clips([position[c] for c in clips_split.get(name, [])]) for name in SPLITS}


def _predictions(model: nn.Module, window_set: WindowSet, preprocess_cfg: PreprocessConfig,
                 batch_size: int) -> Predictions:
    view = evaluation_view(window_set)
    logits = predict_logits(model, model_inputs(view.windows, preprocess_cfg), batch_size)
    return Predictions(logits, view.labels.astype(np.int64), view.clip_index)


# --- teacher-student pretraining ------------------------------------------------------------------

def pooled_output(model: Wav2Vec2ForSequenceClassification, inputs: torch.Tensor) -> torch.Tensor:
    """What the classifier layer sees: the projected hidden states averaged over frames (windows are unpadded)."""
    return model.projector(model.wav2vec2(inputs).last_hidden_state).mean(dim=1)


class DistillHeads(nn.Module):
    """Linear read-outs of the pooled output: YAMNet's standardised embedding and its AudioSet score logits."""

    def __init__(self, pooled_size: int, targets: TeacherTargets):
        super().__init__()
        self.embedding = nn.Linear(pooled_size, YAMNET_EMBEDDING_SIZE)
        self.scores = nn.Linear(pooled_size, YAMNET_AUDIOSET_CLASSES)
        self.register_buffer("mean", torch.from_numpy(targets.embeddings.mean(axis=0)))
        self.register_buffer("std", torch.from_numpy(np.maximum(targets.embeddings.std(axis=0), EMBEDDING_STD_FLOOR)))

    def loss(self, pooled: torch.Tensor, targets: TeacherTargets, distill: DistillSettings) -> torch.Tensor:
        embeddings = (torch.from_numpy(targets.embeddings) - self.mean) / self.std
        scores = torch.from_numpy(targets.scores)
        return (distill.embedding_weight * nn.functional.mse_loss(self.embedding(pooled), embeddings)
                + distill.scores_weight * nn.functional.binary_cross_entropy_with_logits(self.scores(pooled), scores))


class DistillObjective:
    """The teacher-student loss of ``model``'s pooled output on the rows of ``targets``."""

    def __init__(self, model: Wav2Vec2ForSequenceClassification, targets: TeacherTargets, distill: DistillSettings):
        self.model, self.targets, self.distill = model, targets, distill
        self.heads = DistillHeads(model.config.classifier_proj_size, targets)

    def extra_parameters(self) -> list[nn.Parameter]:
        return list(self.heads.parameters())

    def loss(self, inputs: torch.Tensor, rows: np.ndarray, progress: float) -> torch.Tensor:
        return self.heads.loss(pooled_output(self.model, inputs), self.targets.select(rows), self.distill)


def pretrain(model: Wav2Vec2ForSequenceClassification, windows: np.ndarray,
             objective: DistillObjective | ContrastiveObjective, preprocess_cfg: PreprocessConfig,
             pretraining: PretrainSettings, settings: TrainSettings, cap_seconds: float, rng: np.random.Generator,
             progress: bool = False) -> tuple[list[dict], str]:
    """Lower ``objective`` for ``pretraining.steps`` steps (warm-up + cosine over them), passing over ``windows`` in
    a new order each time, unless ``cap_seconds`` runs out first; returns the mean loss of each pass and what
    stopped it ("steps" or "time")."""
    params = [p for p in (*model.parameters(), *objective.extra_parameters()) if p.requires_grad]
    optimizer = make_optimizer(params, pretraining.lr, settings)
    steps_per_pass = max(1, len(windows) // pretraining.batch_size)
    start, history, step, stopped_by = time.monotonic(), [], 0, "steps"
    model.train()
    while step < pretraining.steps and stopped_by == "steps":
        order, losses = rng.permutation(len(windows)), []
        pass_steps = min(steps_per_pass, pretraining.steps - step)
        for step_in_pass in progress_bar(range(pass_steps), desc=f"pretrain {len(history) + 1}", unit="batch",
                                         enabled=progress, leave=False):
            elapsed = time.monotonic() - start
            if elapsed >= cap_seconds:
                stopped_by = "time"
                break
            fraction = schedule_progress(step, pretraining.steps, elapsed, cap_seconds)
            batch = pretraining.batch_size
            rows = np.sort(order[step_in_pass * batch:(step_in_pass + 1) * batch])
            lr = pretraining.lr * lr_factor(fraction, settings.warmup_fraction, settings.final_lr_fraction)
            loss = objective.loss(torch.from_numpy(model_inputs(windows[rows], preprocess_cfg)), rows, fraction)
            optimizer_step(optimizer, params, loss, lr, settings.grad_clip_norm)
            losses.append(float(loss.detach()))
            step += 1
        if not losses:
            break
        history.append({"pass": len(history) + 1, "steps": len(losses), "loss": float(np.mean(losses)),
                        "seconds": round(time.monotonic() - start, 1)})
        log.info("pretraining pass %d: %d steps, loss %.4f", len(history), len(losses), history[-1]["loss"])
    if stopped_by == "time":
        _warn_cut_short("pretraining", cap_seconds, step, pretraining.steps)
    return history, stopped_by


def _pretrain_encoder(model: Wav2Vec2ForSequenceClassification, sets: dict[str, WindowSet],
                      preprocess_cfg: PreprocessConfig, pretraining: PretrainSettings, settings: TrainSettings,
                      teacher: Teacher | None, yamnet_tflite: Path | None, cap_seconds: float,
                      teacher_cache_dir: Path | None, rng: np.random.Generator, progress: bool) -> dict:
    """The pretraining windows, the teacher's targets for them (distillation only; default teacher: YAMNet
    converted from ``yamnet_tflite``), then the steps, all inside ``cap_seconds``; returns what the metadata
    records."""
    contrastive = isinstance(pretraining, ContrastiveSettings)
    if not contrastive:
        teacher = teacher or YamnetTeacher(convert_yamnet(yamnet_tflite), settings.threads)
    start = time.monotonic()
    windows = pretraining_windows(sets, pretraining, pretraining.window_count(cap_seconds), rng)
    record: dict = {"objective": "contrastive" if contrastive else "distillation"}
    if contrastive:
        objective = ContrastiveObjective(model.wav2vec2, pretraining)
    else:
        targets = teacher_targets(windows, preprocess_cfg, teacher, teacher_cache_dir, progress)
        objective = DistillObjective(model, targets, pretraining)
        record |= {"teacher": teacher.identity, "teacher_seconds": round(time.monotonic() - start, 1)}
    history, stopped_by = pretrain(model, windows, objective, preprocess_cfg, pretraining, settings,
                                   cap_seconds - (time.monotonic() - start), rng, progress)
    return {**record, "windows": int(len(windows)), "steps": int(sum(h["steps"] for h in history)),
            "stopped_by": stopped_by, "seconds": round(time.monotonic() - start, 1), "history": history,
            "settings": dataclasses.asdict(pretraining)}


def train_wav2vec2(clips_split: dict[str, list[Clip]], out_dir: Path, init: str | None = None,
                   max_minutes: float = DEFAULT_MAX_MINUTES, seed: int = DEFAULT_TRAINING_SEED, tiny: bool = False, *,
                   cfg: Config | None = None, settings: TrainSettings = TrainSettings(),
                   augment: AugmentParams = AugmentParams(), window_cache_dir: Path | None = None,
                   progress: bool = True, extra_metadata: dict | None = None,
                   pretraining: PretrainSettings | None = DistillSettings(), teacher: Teacher | None = None,
                   yamnet_tflite: Path | None = None, teacher_cache_dir: Path | None = None) -> dict:
    """Train, calibrate and save (``save_pretrained`` + ``metadata.json``) to ``out_dir``; returns the metadata.

    Without ``init`` the encoder is first pretrained: distilled from ``teacher`` (default: YAMNet converted from
    ``yamnet_tflite``) with ``DistillSettings``, self-supervised with ``ContrastiveSettings``; None: from scratch.
    """
    budget = Budget(max_minutes)
    cfg = cfg or Config()
    torch.set_num_threads(settings.threads)
    set_seed(seed)  # torch and numpy's global generator too: transformers draws SpecAugment's masks from the latter
    rng = np.random.default_rng(seed)
    if not clips_split.get("train") or not clips_split.get("val"):
        raise ValueError("training needs clips in both the train and the val split")

    model = build_model(init, TINY_DIMS if tiny else COMPACT_DIMS)  # first: a bad --init fails fast
    summary = config_summary(model)
    contrastive = isinstance(pretraining, ContrastiveSettings)
    start = (f"pretrained {init}" if init else "compact, scratch" if pretraining is None
             else f"compact, {'self-supervised' if contrastive else 'distilled from YAMNet'} first")
    log.info("wav2vec2 %s: %s", start, summary)

    hop = hop_samples_from_seconds(cfg.window.training_hop_seconds)
    sets = _window_sets(clips_split, cfg.preprocess, cfg.gate, hop, window_cache_dir, progress)
    pretrained = None
    if init is None and pretraining is not None:
        pretrained = _pretrain_encoder(model, sets, cfg.preprocess, pretraining, settings, teacher, yamnet_tflite,
                                       60.0 * PRETRAIN_MAX_SHARE * max_minutes, teacher_cache_dir, rng, progress)
    init_kind = (INIT_PRETRAINED if init else INIT_SCRATCH if not (pretrained and pretrained["steps"])
                 else INIT_SELF_SUPERVISED if contrastive else INIT_DISTILLED)
    train = sets["train"].training_view()
    if len(train) == 0:
        raise ValueError("no active training window: are the train clips silent?")
    val = evaluation_view(sets["val"])
    val_inputs = model_inputs(val.windows, cfg.preprocess)
    val_labels = val.labels.astype(np.int64)
    log.info("windows: train %d %s, val %d", len(train), dict(Counter(LABELS[i] for i in train.labels)), len(val))

    weights = class_weights(train.labels)
    peak_lr = {INIT_PRETRAINED: settings.pretrained_lr, INIT_SCRATCH: settings.scratch_lr}.get(
        init_kind, pretraining.finetune_lr if pretraining else settings.scratch_lr)
    batches = _Batches(train, cfg.preprocess, augment, settings, rng)
    outcome = _fit(model, batches, val_inputs, val_labels, peak_lr, weights, settings, budget, progress)
    model.load_state_dict(outcome.best_state)

    val_pred = Predictions(predict_logits(model, val_inputs, settings.eval_batch_size), val_labels, val.clip_index)
    temperature = fit_temperature(val_pred.logits, val_pred.labels)
    metadata = {
        "kind": "wav2vec2",
        "labels": list(LABELS),
        "sample_rate": SAMPLE_RATE,
        "window_samples": WINDOW_SAMPLES,
        "normalisation": NORMALISATION,
        "init": init_kind,
        "checkpoint": str(init) if init else None,
        "pretraining": pretrained,
        "peak_lr": peak_lr,
        "config": summary,
        "seed": seed,
        "epochs": len(outcome.history),
        "best_epoch": outcome.best_epoch,
        "steps": outcome.steps,
        "stopped_by": outcome.stopped_by,
        "temperature": temperature,
        "ece_before": expected_calibration_error(softmax(val_pred.logits), val_pred.labels),
        "ece_after": expected_calibration_error(softmax(val_pred.logits, temperature), val_pred.labels),
        "val_metrics": split_metrics(val_pred, temperature),
        "test_metrics": (split_metrics(_predictions(model, sets["test"], cfg.preprocess, settings.eval_batch_size),
                                       temperature) if len(sets["test"]) else None),
        "class_weights": dict(zip(LABELS, map(float, weights), strict=True)),
        "train_windows": dict(Counter(LABELS[i] for i in train.labels)),
        "hop_seconds": cfg.window.training_hop_seconds,
        "preprocess": dataclasses.asdict(cfg.preprocess),
        "settings": dataclasses.asdict(settings),
        "augmentation": dataclasses.asdict(augment),
        "history": [dataclasses.asdict(r) for r in outcome.history],
        **(extra_metadata or {}),
    }
    metadata["minutes"] = budget.elapsed() / 60.0
    save_model(model, out_dir, metadata)
    log.info("saved %s: val window macro-F1 %.3f, T=%.2f, ECE %.3f -> %.3f, %.1f min", out_dir,
             metadata["val_metrics"]["window"]["macro_f1"], temperature, metadata["ece_before"],
             metadata["ece_after"], metadata["minutes"])
    return metadata


def save_model(model: Wav2Vec2ForSequenceClassification, out_dir: Path, metadata: dict) -> None:
    """``save_pretrained`` model + feature extractor (so HF tools and optimum read the folder) + metadata."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True,
                             return_attention_mask=False).save_pretrained(out_dir)
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=1) + "\n", encoding="utf-8")


def read_metadata(model_dir: Path) -> dict:
    path = Path(model_dir) / METADATA_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable training metadata file ({exc})") from None


def default_model_dir() -> Path:
    return build_dir() / MODEL_SUBDIR


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m training.train_wav2vec2", description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=None,
                        help="manifest CSV or <label>/ folder tree (default: the shared manifest)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--init", default=None,
                       help="pretrained checkpoint folder or hub name; default: a compact model distilled from YAMNet")
    start.add_argument("--scratch", action="store_true", help="no YAMNet pretraining: train from random weights")
    parser.add_argument("--pretrain", choices=PRETRAIN_OBJECTIVES, default=PRETRAIN_DISTILL,
                        help="how the compact encoder learns first: taught by YAMNet (default) or self-supervised "
                             "(wav2vec 2.0's contrastive objective, no teacher)")
    parser.add_argument("--pretrain-steps", type=int, default=PRETRAIN_STEPS,
                        help="steps of the pretraining (0: none, as --scratch)")
    parser.add_argument("--yamnet-tflite", type=Path, default=None, help="the teacher (default: the shared YAMNet)")
    parser.add_argument("--epochs", type=int, default=TrainSettings.epochs, help="fine-tuning epochs")
    parser.add_argument("--stop-on", choices=STOP_ON, default=TrainSettings.stop_on,
                        help="which val epoch is kept: best macro-F1 (default) or fewest Normal windows as likely "
                             "an alert as most cries and screams (alert_ranking)")
    parser.add_argument("--max-minutes", type=float, default=DEFAULT_MAX_MINUTES,
                        help="wall-clock cap of the whole run, loading included: it cuts a slow run short "
                             "(the steps set the run's length)")
    parser.add_argument("--seed", type=int, default=DEFAULT_TRAINING_SEED, help="training seed (the split has its own)")
    add_config_option(parser)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: build/wav2vec2)")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    if args.max_minutes <= 0 or args.epochs <= 0 or args.pretrain_steps < 0:
        parser.error("--max-minutes and --epochs must be positive and --pretrain-steps not negative")
    cfg = load_config(args.config)
    try:
        data = dataset_split(args.manifest or default_manifest_csv())
    except ValueError as exc:
        parser.error(str(exc))
    try:
        metadata = train_wav2vec2(data.split, args.out or default_model_dir(), init=args.init,
                                  max_minutes=args.max_minutes, seed=args.seed, cfg=cfg,
                                  settings=TrainSettings(epochs=args.epochs, stop_on=args.stop_on),
                                  pretraining=(None if args.scratch or args.pretrain_steps == 0
                                               else PRETRAIN_OBJECTIVES[args.pretrain](steps=args.pretrain_steps)),
                                  yamnet_tflite=args.yamnet_tflite,
                                  extra_metadata={"training_data": {"manifest_sha256": data.manifest_sha256,
                                                                    "clips": len(data.clips),
                                                                    "split_file": str(data.split_file)}})
    except ValueError as exc:
        parser.exit(EXIT_FAILURE, f"error: {exc}\n")
    print(json.dumps({k: metadata[k] for k in ("init", "epochs", "best_epoch", "minutes", "temperature",
                                              "ece_before", "ece_after")}, indent=1))
    return metadata


if __name__ == "__main__":
    main()
