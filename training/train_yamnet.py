"""Train the YAMNet branch: a small classifier head on frozen YAMNet embeddings.

Steps: clips -> grouped split -> conditioned windows (runtime chain, pauses of cry/scream clips dropped)
-> augmented copies of the training windows (low-pass on every class, gain, shift, background mixing)
-> ``prepare_window`` -> YAMNet embeddings (ONNX, cached) -> class-weighted head with early stopping on
how few val Normal windows reach the val cries' alert probability -> temperature on val. The embeddings are
cached as one feature file, so retraining the head with other settings takes seconds.

    python -m training.train_yamnet [--manifest CSV|DIR] [--seed N] [--config config.yaml]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

import numpy as np

from monitor.command import add_config_option, setup_logging
from monitor.config import Config, load_config
from monitor.constants import LABELS, YAMNET_AUDIOSET_CLASSES, YAMNET_EMBEDDING_SIZE
from monitor.model_manifest import sha256_file
from monitor.paths import build_dir, default_manifest_csv
from monitor.preprocess import prepare_batch
from monitor.signal_helpers import softmax
from monitor.windows import hop_samples_from_seconds

from .augment import AugmentParams, augment_window
from .cache import save_npz_atomic
from .calibration import expected_calibration_error, fit_temperature
from .data import Clip, class_weights, clips_signature
from .early_stopping import (
    ALERT_COLUMNS,
    RANKING_KEEPS,
    check_stop_on,
    normal_alert_share,
    stopping_score,
    window_macro_f1,
)
from .metrics import classification_report, confusion_matrix
from .split import DEFAULT_SPLIT_SEED, dataset_split, split_summary
from .windows import WindowSet, build_window_set, concat_rows, gate_settings_used
from .yamnet_features import BaseModel, convert_yamnet, extract_embeddings

log = logging.getLogger(__name__)

HEAD_DIR_NAME = "yamnet_head"
WEIGHTS_FILE = "weights.npz"
METADATA_FILE = "metadata.json"
FEATURES_VERSION = 1
"""Part of the feature cache key: bump when feature building changes."""
AUGMENTED = "train_aug"
"""``FeatureSet.part`` of augmented training rows (clean rows carry their split name)."""


@dataclass(frozen=True)
class HeadConfig:
    """Head architecture and optimisation; training-only, so not part of the runtime config."""

    hidden: int = 256
    dropout: float = 0.3
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 80
    patience: int = 10
    augment_copies: int = 2
    scream_augment_copies: int = 6
    """Screams are few (74 clips): more augmented copies of each scream window."""
    threads: int = 1
    """Torch threads per head fit (members fit side by side, ``member_processes``)."""
    embedding_threads: int = 2
    """ONNX Runtime threads for embedding the training windows, the step's longest part after the fits."""
    augment: AugmentParams = field(default_factory=AugmentParams)
    audioset_inputs: bool = True
    """Feed the head YAMNet's own 521 AudioSet scores beside the embedding, so what AudioSet knows about pets,
    music and machines still counts (measured on val: see the README)."""
    embedding_dropout: float = 0.5
    """With AudioSet inputs: this share of the training rows also appears with its embedding replaced by the
    training mean (0 once standardised) and its AudioSet scores kept (``with_embedding_dropout``), so the head
    learns to decide from AudioSet's scores alone as well: they know laughter, pets and music from far more
    recordings than ours. On the tuning streams of three seeds each, it raised the recall reached within 0.1
    false alarms per hour (the README has the figures); 0 = off."""
    hard_negative_fraction: float = 0.05
    """After a first pass, this share of the Normal training windows that score highest for Crying/Screaming..."""
    hard_negative_weight: float = 1.0
    """... weighs this much more in a second pass (1 = no mining: on val, x4 on the top 5% cost window macro-F1
    0.839 -> 0.832 and did not reduce the clips that alarm; see the README)."""
    mixup_alpha: float = 0.0
    """With > 0, each batch is trained on mixtures of its rows instead (mixup: inputs, targets and weights blended
    by a share drawn from Beta(alpha, alpha)), so the head answers between its classes rather than with a confident
    cry for a laugh it never heard. Off: at 0.2 the head lost on val (window macro-F1 0.829 -> 0.802, clips 0.928
    -> 0.881) and on the tuning streams (the worse label's recall within 0.1 / 1 / 2 false alarms per hour 0.51 /
    0.68 / 0.75 -> 0.38 / 0.60 / 0.68), though test clips went 0.791 -> 0.827 (see the README)."""
    members: int = 3
    """Heads fitted with seeds ``seed``, ``seed + 1``, ...; the shipped head averages their logits
    (``merge_heads``: one head with the members' hidden units side by side, so export and runtime are unchanged).
    One head's alarms move with its seed about as much as with any change of recipe; on the tuning streams the
    mean of three reached more recall within every false-alarm budget up to 1 per hour than any of the three
    alone (the README has the figures)."""
    member_processes: int = 3
    """Members fitted at once, one process and one torch thread each: three on 2 cores take 1.5 times one fit."""
    stop_on: str = "alert_ranking"
    """What early stopping keeps the best epoch of (``training.early_stopping``): ``alert_ranking``, the mean share
    of val Normal windows that alert at the thresholds keeping ``ranking_keeps`` of the val cry and scream windows
    (lower is better), or ``macro_f1``, val window macro-F1 of the argmax. Alarms fire on the tail of the alert
    probability, which argmax accuracy does not watch: macro-F1 kept improving to epoch ~30 while the tail got
    worse after the first few epochs, on val and on test alike (the README has the figures)."""
    ranking_keeps: tuple[float, ...] = RANKING_KEEPS

    def __post_init__(self) -> None:
        check_stop_on(self.stop_on, "HeadConfig")


@dataclass
class FeatureSet:
    """One row per window: YAMNet outputs plus where the window came from."""

    embeddings: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    clip_index: np.ndarray
    active: np.ndarray
    part: np.ndarray
    """'train' / 'val' / 'test' for clean windows, ``AUGMENTED`` for augmented training copies."""

    def select(self, mask: np.ndarray) -> FeatureSet:
        return FeatureSet(*(getattr(self, f.name)[mask] for f in dataclasses.fields(self)))

    def training_rows(self) -> FeatureSet:
        return self.select(((self.part == "train") & self.active) | (self.part == AUGMENTED))


MIN_INPUT_SCALE = 1e-2
"""Inputs are standardised, but never scaled up by more than 1 / this: an AudioSet class that never sounds in
the training data (std ~ 0) would otherwise turn float rounding into large logit differences after export."""
AUDIOSET_LOG_FLOOR = 1e-4
"""AudioSet scores enter the head as log(score + this): a cat at 0.001 and at 0.1 should differ."""


def head_inputs(embeddings: np.ndarray, scores: np.ndarray | None, with_audioset: bool) -> np.ndarray:
    """The head's input rows: the embedding, and with ``with_audioset`` the log AudioSet scores after it."""
    if not with_audioset:
        return embeddings
    return np.concatenate([embeddings, np.log(scores + AUDIOSET_LOG_FLOOR)], axis=1).astype(np.float32)


@dataclass(frozen=True)
class HeadWeights:
    """inputs -> hidden (ReLU) -> 3, stored as numpy arrays so export and tests need no torch. The inputs are the
    1024-d embedding, or the embedding and the log AudioSet scores (told apart by ``w1``'s rows); input
    standardisation is folded into ``w1`` / ``b1``."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    @property
    def audioset_inputs(self) -> bool:
        return self.w1.shape[0] == YAMNET_EMBEDDING_SIZE + YAMNET_AUDIOSET_CLASSES

    def logits(self, embeddings: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
        inputs = head_inputs(embeddings, scores, self.audioset_inputs)
        hidden = np.maximum(inputs @ self.w1 + self.b1, 0.0)
        return (hidden @ self.w2 + self.b2).astype(np.float32)

    def save(self, path: Path) -> None:
        np.savez(path, **dataclasses.asdict(self))

    @classmethod
    def load(cls, path: Path) -> HeadWeights:
        with np.load(path) as data:
            return cls(**{f.name: data[f.name].astype(np.float32) for f in dataclasses.fields(cls)})


@dataclass
class TrainedHead:
    weights: HeadWeights
    temperature: float
    best_epochs: list[int]
    """Each member's best epoch, in seed order."""
    history: list[dict]


def default_head_dir() -> Path:
    return build_dir() / HEAD_DIR_NAME


# --- features ------------------------------------------------------------------------------------

def _split_of_clips(clips: list[Clip], split: dict[str, list[Clip]]) -> np.ndarray:
    where = {c.path: name for name, members in split.items() for c in members}
    return np.array([where.get(c.path, "") for c in clips])


def _augmented_windows(train: WindowSet, noise_bank: np.ndarray, copies: int, scream_copies: int,
                       params: AugmentParams, seed: int) -> WindowSet:
    rng = np.random.default_rng(seed)
    per_row = np.where(train.labels == LABELS.index("Screaming"), scream_copies, copies)
    rows = np.repeat(np.arange(len(train)), per_row)
    windows = np.stack([augment_window(train.windows[i], rng, noise_bank, params) for i in rows]) if len(rows) \
        else train.windows[:0]
    picked = train.select(rows)
    return WindowSet(windows, picked.labels, picked.clip_index, picked.groups, picked.active)


def _feature_key(clips: list[Clip], split_of_clip: np.ndarray, cfg: Config, head_cfg: HeadConfig, seed: int,
                 base: BaseModel) -> str:
    doc = {
        "version": FEATURES_VERSION,
        "clips": clips_signature(clips),
        "split": split_of_clip.tolist(),
        "preprocess": dataclasses.asdict(cfg.preprocess),
        "gate": gate_settings_used(cfg.gate),
        "hop": cfg.window.training_hop_seconds,
        "augment": dataclasses.asdict(head_cfg.augment),
        "copies": head_cfg.augment_copies,
        "scream_copies": head_cfg.scream_augment_copies,
        "seed": seed,
        "model": sha256_file(base.path),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _embed(windows: WindowSet, part: np.ndarray, cfg: Config, base: BaseModel, threads: int) -> FeatureSet:
    embeddings, scores = extract_embeddings(prepare_batch(windows.windows, cfg.preprocess), base, threads=threads,
                                            cache=False)
    return FeatureSet(embeddings, scores, windows.labels, windows.clip_index, windows.active, part)


def build_features(clips: list[Clip], split: dict[str, list[Clip]], cfg: Config, head_cfg: HeadConfig, seed: int,
                   base: BaseModel | None = None, progress: bool = True) -> tuple[FeatureSet, dict]:
    """Embeddings of every clean window plus the augmented training copies (cached), and timing figures."""
    base = base or convert_yamnet()
    split_of_clip = _split_of_clips(clips, split)
    cache = build_dir() / "features" / f"yamnet-{_feature_key(clips, split_of_clip, cfg, head_cfg, seed, base)}.npz"
    if cache.is_file():
        with np.load(cache) as data:
            features = FeatureSet(**{f.name: data[f.name] for f in dataclasses.fields(FeatureSet)})
            timing = json.loads(str(data["timing"]))
        log.info("features from cache %s", cache)
        return features, timing
    hop = hop_samples_from_seconds(cfg.window.training_hop_seconds)
    windows = build_window_set(clips, cfg.preprocess, hop, cfg.gate, progress=progress)
    part = split_of_clip[windows.clip_index]
    train_mask = part == "train"
    noise_bank = windows.windows[train_mask & (windows.labels == LABELS.index("Normal"))]
    augmented = _augmented_windows(windows.select(train_mask & windows.active), noise_bank,
                                   head_cfg.augment_copies, head_cfg.scream_augment_copies, head_cfg.augment, seed)
    started = time.perf_counter()
    clean = _embed(windows, part, cfg, base, head_cfg.embedding_threads)
    extra = _embed(augmented, np.full(len(augmented), AUGMENTED), cfg, base, head_cfg.embedding_threads)
    elapsed = time.perf_counter() - started
    n_windows = len(windows) + len(augmented)
    timing = {"windows_embedded": n_windows, "embedding_seconds": round(elapsed, 1),
              "ms_per_window": round(1000 * elapsed / max(n_windows, 1), 3)}
    features = concat_rows([clean, extra])
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_npz_atomic(cache, timing=json.dumps(timing), **{f.name: getattr(features, f.name)
                                                         for f in dataclasses.fields(FeatureSet)})
    return features, timing


# --- head training -------------------------------------------------------------------------------

def _fit(x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
         head_cfg: HeadConfig, seed: int, val_active: np.ndarray | None = None) -> tuple[HeadWeights, int, list[dict]]:
    """One class- and sample-weighted cross-entropy fit, Adam, early stopping on ``stopping_score`` (ties: lower
    val loss); ``val_active``: the val windows that carry their clip's label (all when None). ``x`` is standardised
    here; the scaling is folded into the returned weights."""
    val_active = np.ones(len(y_val), bool) if val_active is None else val_active
    import torch
    from torch import nn

    torch.manual_seed(seed)
    torch.set_num_threads(head_cfg.threads)
    mean, scale = x.mean(axis=0), np.maximum(x.std(axis=0), MIN_INPUT_SCALE)
    model = nn.Sequential(nn.Linear(x.shape[1], head_cfg.hidden), nn.ReLU(), nn.Dropout(head_cfg.dropout),
                          nn.Linear(head_cfg.hidden, len(LABELS)))
    optimiser = torch.optim.AdamW(model.parameters(), lr=head_cfg.learning_rate, weight_decay=head_cfg.weight_decay)
    class_weight = torch.from_numpy(class_weights(y).astype(np.float32))
    inputs = torch.from_numpy(((x - mean) / scale).astype(np.float32))
    targets = torch.from_numpy(y.astype(np.int64))
    weights = torch.from_numpy(sample_weight.astype(np.float32)) * class_weight[targets]
    val_inputs = torch.from_numpy(((x_val - mean) / scale).astype(np.float32))
    val_targets = torch.from_numpy(y_val.astype(np.int64))
    generator = torch.Generator().manual_seed(seed)
    best: tuple[float, float] = (-float("inf"), float("inf"))
    best_state, best_epoch, history = None, 0, []
    mix_rng = np.random.default_rng(seed)
    for epoch in range(1, head_cfg.max_epochs + 1):
        model.train()
        for batch in torch.randperm(len(targets), generator=generator).split(head_cfg.batch_size):
            optimiser.zero_grad()
            _batch_loss(model, inputs[batch], targets[batch], weights[batch], head_cfg.mixup_alpha, mix_rng,
                        generator).backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            val_logits = model(val_inputs)
            val_loss = float(nn.functional.cross_entropy(val_logits, val_targets, weight=class_weight))
        logits = val_logits.numpy()
        f1 = window_macro_f1(y_val, logits.argmax(axis=1))
        share = normal_alert_share(logits, y_val, val_active, head_cfg.ranking_keeps)
        score = stopping_score(f1, share, head_cfg.stop_on)
        history.append({"epoch": epoch, "val_loss": round(val_loss, 5), "val_macro_f1": round(f1, 5),
                        "val_score": round(score, 5)})
        if (score, -val_loss) > (best[0], -best[1]):
            best, best_epoch = (score, val_loss), epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= head_cfg.patience:
            break
    model.load_state_dict(best_state)
    first, last = model[0], model[3]
    w1 = first.weight.detach().numpy().T / scale[:, None]
    b1 = first.bias.detach().numpy() - (mean / scale) @ first.weight.detach().numpy().T
    weights_out = HeadWeights(w1.astype(np.float32), b1.astype(np.float32), last.weight.detach().numpy().T.copy(),
                              last.bias.detach().numpy().copy())
    log.info("head pass: best epoch %d of %d, val %s %.4f", best_epoch, len(history), head_cfg.stop_on,
             abs(best[0]))
    return weights_out, best_epoch, history


def _batch_loss(model, inputs, targets, weights, mixup_alpha: float, rng: np.random.Generator, generator):
    """Weighted cross-entropy of one batch; with ``mixup_alpha`` of the batch blended with a shuffle of itself
    (each row's loss and weight blended by the same share)."""
    import torch
    from torch import nn

    if mixup_alpha <= 0:
        losses = nn.functional.cross_entropy(model(inputs), targets, reduction="none")
        return (losses * weights).sum().div(weights.sum())
    share = float(rng.beta(mixup_alpha, mixup_alpha))
    partner = torch.randperm(len(targets), generator=generator)
    logits = model(share * inputs + (1 - share) * inputs[partner])
    ours = nn.functional.cross_entropy(logits, targets, reduction="none") * weights * share
    theirs = nn.functional.cross_entropy(logits, targets[partner], reduction="none") * weights[partner] * (1 - share)
    return (ours + theirs).sum().div((share * weights + (1 - share) * weights[partner]).sum())


def hard_negative_weights(labels: np.ndarray, alert_probability: np.ndarray, fraction: float,
                          weight: float) -> np.ndarray:
    """Per training row: ``weight`` for the ``fraction`` of Normal rows the first pass found most alarming (the
    meows, synth pads and machines a parent would be woken by), 1 elsewhere."""
    out = np.ones(len(labels), np.float64)
    normal = labels == LABELS.index("Normal")
    if weight == 1.0 or fraction <= 0 or not normal.any():
        return out
    cutoff = np.quantile(alert_probability[normal], 1.0 - fraction)
    out[normal & (alert_probability >= cutoff)] = weight
    return out


def with_embedding_dropout(train: FeatureSet, share: float, seed: int) -> FeatureSet:
    """``train`` and, after it, a copy of a random ``share`` of its rows whose embedding is the rows' mean
    embedding (what standardisation turns into zeros): the same labels and AudioSet scores, no embedding."""
    if share <= 0 or not len(train.labels):
        return train
    picked = train.select(np.random.default_rng(seed).random(len(train.labels)) < share)
    mean = train.embeddings.mean(axis=0, dtype=np.float64).astype(train.embeddings.dtype)
    blanked = dataclasses.replace(picked, embeddings=np.broadcast_to(mean, picked.embeddings.shape).copy())
    return concat_rows([train, blanked])


def merge_heads(members: Sequence[HeadWeights]) -> HeadWeights:
    """One head whose logits are the mean of the members' logits: their hidden units side by side, the output
    weights and biases divided by their count."""
    count = len(members)
    return HeadWeights(np.concatenate([m.w1 for m in members], axis=1), np.concatenate([m.b1 for m in members]),
                       np.concatenate([m.w2 for m in members], axis=0) / count,
                       (sum(m.b2 for m in members) / count).astype(np.float32))


def fit_member(train: FeatureSet, val: FeatureSet, head_cfg: HeadConfig,
               seed: int) -> tuple[HeadWeights, int, list[dict]]:
    """One head: fit on the training rows (with AudioSet inputs, plus their embedding-dropout copies); with mining,
    fit again with the hardest Normal rows weighted up."""
    if head_cfg.audioset_inputs:
        train = with_embedding_dropout(train, head_cfg.embedding_dropout, seed)
    x = head_inputs(train.embeddings, train.scores, head_cfg.audioset_inputs)
    x_val = head_inputs(val.embeddings, val.scores, head_cfg.audioset_inputs)
    weights, best_epoch, history = _fit(x, train.labels, np.ones(len(x)), x_val, val.labels, head_cfg, seed,
                                        val.active)
    if head_cfg.hard_negative_weight != 1.0 and head_cfg.hard_negative_fraction > 0:
        alert = softmax(weights.logits(train.embeddings, train.scores))[:, ALERT_COLUMNS].sum(axis=1)
        sample_weight = hard_negative_weights(train.labels, alert, head_cfg.hard_negative_fraction,
                                              head_cfg.hard_negative_weight)
        log.info("hard negatives: %d Normal training windows weighted x%g", int((sample_weight > 1).sum()),
                 head_cfg.hard_negative_weight)
        weights, best_epoch, second = _fit(x, train.labels, sample_weight, x_val, val.labels, head_cfg, seed,
                                           val.active)
        history = [*history, *({**h, "pass": 2} for h in second)]
    return weights, best_epoch, history


def _fit_members(train: FeatureSet, val: FeatureSet, head_cfg: HeadConfig,
                 seeds: list[int]) -> list[tuple[HeadWeights, int, list[dict]]]:
    """``fit_member`` per seed; several at once in fresh processes (spawned: forking a process whose torch already
    started its threads can hang), each seeded alone, so the result does not depend on how many run at once."""
    processes = min(len(seeds), head_cfg.member_processes)
    if processes <= 1:
        return [fit_member(train, val, head_cfg, seed) for seed in seeds]
    log.info("fitting %d heads, %d at a time", len(seeds), processes)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=context, initializer=setup_logging,
                             initargs=(logging.getLogger().getEffectiveLevel(),)) as pool:
        return list(pool.map(fit_member, repeat(train), repeat(val), repeat(head_cfg), seeds))


def train_head(train: FeatureSet, val: FeatureSet, head_cfg: HeadConfig, seed: int) -> TrainedHead:
    """``head_cfg.members`` heads (``fit_member``) merged into one (``merge_heads``); temperature on val."""
    fits = _fit_members(train, val, head_cfg, [seed + member for member in range(max(1, head_cfg.members))])
    weights = merge_heads([member_weights for member_weights, _, _ in fits])
    history = fits[0][2] if len(fits) == 1 else [{**h, "member": k} for k, (_, _, hist) in enumerate(fits)
                                                  for h in hist]
    temperature = fit_temperature(weights.logits(val.embeddings, val.scores), val.labels)
    log.info("head: %d member(s), temperature %.3f", len(fits), temperature)
    return TrainedHead(weights, temperature, [best_epoch for _, best_epoch, _ in fits], history)


# --- evaluation ----------------------------------------------------------------------------------

def clip_probabilities(probs: np.ndarray, clip_index: np.ndarray, active: np.ndarray) -> dict[int, np.ndarray]:
    """Per clip: mean window probabilities over its active windows, or over all its windows if none is active."""
    out: dict[int, np.ndarray] = {}
    for clip in np.unique(clip_index):
        rows = clip_index == clip
        chosen = rows & active if np.any(rows & active) else rows
        out[int(clip)] = probs[chosen].mean(axis=0)
    return out


def _report(labels: np.ndarray, probs: np.ndarray) -> dict:
    names = list(LABELS)
    cm = confusion_matrix([names[i] for i in labels], [names[i] for i in probs.argmax(axis=1)], LABELS)
    report = classification_report(cm, LABELS)
    return {"accuracy": round(report["accuracy"], 4), "macro_f1": round(report["macro_f1"], 4),
            "n": int(len(labels)), "confusion": cm.tolist()}


def evaluate_head(head: TrainedHead, features: FeatureSet, clips: list[Clip], part: str) -> dict:
    """Window-level (active windows) and clip-level metrics of one split, plus ECE before/after temperature."""
    rows = features.select(features.part == part)
    logits = head.weights.logits(rows.embeddings, rows.scores)
    probs = softmax(logits, head.temperature)
    active = rows.select(rows.active)
    active_logits = head.weights.logits(active.embeddings, active.scores)
    per_clip = clip_probabilities(probs, rows.clip_index, rows.active)
    clip_ids = sorted(per_clip)
    clip_labels = np.array([LABELS.index(clips[i].label) for i in clip_ids])
    return {
        "window": _report(active.labels, softmax(active_logits, head.temperature)),
        "clip": _report(clip_labels, np.stack([per_clip[i] for i in clip_ids])) if clip_ids else {},
        "ece_before": round(expected_calibration_error(softmax(active_logits), active.labels), 4),
        "ece_after": round(expected_calibration_error(softmax(active_logits, head.temperature), active.labels), 4),
    }


# --- orchestration -------------------------------------------------------------------------------

def save_head(head: TrainedHead, out_dir: Path, metadata: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    head.weights.save(out_dir / WEIGHTS_FILE)
    inputs = "yamnet embedding + log audioset scores" if head.weights.audioset_inputs else "yamnet embedding"
    doc = {"labels": list(LABELS), "input": inputs, "embedding_size": YAMNET_EMBEDDING_SIZE,
           "hidden": int(head.weights.w1.shape[1]), "temperature": head.temperature, "best_epoch": head.best_epochs,
           **metadata}
    (out_dir / METADATA_FILE).write_text(json.dumps(doc, indent=1), encoding="utf-8")


def load_head(head_dir: Path | None = None) -> tuple[HeadWeights, dict]:
    head_dir = Path(head_dir or default_head_dir())
    weights_path, meta_path = head_dir / WEIGHTS_FILE, head_dir / METADATA_FILE
    if not weights_path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"{head_dir}: no trained YAMNet head (run `python -m training.train_yamnet`)")
    weights = HeadWeights.load(weights_path)
    inputs = (YAMNET_EMBEDDING_SIZE, YAMNET_EMBEDDING_SIZE + YAMNET_AUDIOSET_CLASSES)
    if weights.w1.shape[0] not in inputs or weights.w2.shape[1] != len(LABELS):
        raise ValueError(f"{weights_path}: head shape {weights.w1.shape} -> {weights.w2.shape} does not match "
                         f"{' or '.join(map(str, inputs))} -> {len(LABELS)}")
    return weights, json.loads(meta_path.read_text(encoding="utf-8"))


def fit_and_evaluate(clips: list[Clip], split: dict[str, list[Clip]], cfg: Config, head_cfg: HeadConfig, seed: int,
                     base: BaseModel | None = None, progress: bool = True,
                     parts: tuple[str, ...] = ("val", "test")) -> tuple[TrainedHead, dict, dict]:
    """Features (cached) -> head -> (head, metrics per split in ``parts``, timing figures)."""
    features, timing = build_features(clips, split, cfg, head_cfg, seed, base, progress)
    started = time.perf_counter()
    head = train_head(features.training_rows(), features.select((features.part == "val") & features.active),
                      head_cfg, seed)
    timing = {**timing, "training_windows": int(len(features.training_rows().labels)),
              "head_training_seconds": round(time.perf_counter() - started, 1)}
    return head, {part: evaluate_head(head, features, clips, part) for part in parts}, timing


def run_training(manifest: Path, seed: int = DEFAULT_SPLIT_SEED, cfg: Config | None = None,
                 head_cfg: HeadConfig = HeadConfig(), out_dir: Path | None = None,
                 base: BaseModel | None = None, progress: bool = True) -> dict:
    """The whole branch; returns (and writes to ``out_dir``) the metadata with val/test metrics."""
    cfg = cfg or Config()
    data = dataset_split(manifest, seed)
    head, metrics, timing = fit_and_evaluate(data.clips, data.split, cfg, head_cfg, seed, base, progress)
    metadata = {
        "seed": seed,
        "manifest_sha256": data.manifest_sha256,
        "split_file": str(data.split_file),
        "split": split_summary(data.split),
        "head_config": dataclasses.asdict(head_cfg),
        "preprocess": dataclasses.asdict(cfg.preprocess),
        "gate": gate_settings_used(cfg.gate),
        "hop_seconds": cfg.window.training_hop_seconds,
        "timing": timing,
        "metrics": metrics,
        "history": head.history,
    }
    save_head(head, Path(out_dir or default_head_dir()), metadata)
    return metadata


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=default_manifest_csv(), help="manifest CSV or label folder")
    parser.add_argument("--seed", type=int, default=DEFAULT_SPLIT_SEED,
                        help="split seed, also seeding the head's training")
    add_config_option(parser)
    parser.add_argument("--copies", type=int, default=HeadConfig.augment_copies, help="augmented copies per window")
    parser.add_argument("--out", type=Path, default=None, help=f"head folder (default build/{HEAD_DIR_NAME})")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    cfg = load_config(args.config)
    metadata = run_training(args.manifest, args.seed, cfg, HeadConfig(augment_copies=args.copies), args.out)
    summary = {k: metadata[k] for k in ("split", "timing", "metrics")}
    for part in summary["metrics"].values():
        for level in ("window", "clip"):
            part[level].pop("confusion", None)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
