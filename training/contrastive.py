"""Self-supervised pretraining of the compact Wav2Vec2 encoder with wav2vec 2.0's own objective.

Spans of the encoder's frames are masked, and from its context the transformer must pick each masked frame's
quantised feature out of distractors drawn from the same window (contrastive loss), while a diversity term
keeps the codebook in use. No label and no teacher: the alternative to distillation from YAMNet that issue 12
asks to measure (``python -m training.train_wav2vec2 --pretrain contrastive``). Built on transformers'
``Wav2Vec2ForPreTraining`` sharing the classifier's encoder, so what it learns is what fine-tuning starts from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import Wav2Vec2ForPreTraining, Wav2Vec2Model
from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

from .pretraining import PretrainSettings


@dataclass(frozen=True)
class ContrastiveSettings(PretrainSettings):
    """Sized for 24 frames per window (40 ms each), not the paper's 20 ms frames of long utterances."""

    mask_prob: float = 0.5
    """Share of frames that start a masked span (spans overlap, so fewer end up masked)."""
    mask_length: int = 3
    min_masks: int = 2
    negatives: int = 16
    """Distractors per masked frame, from the same window's other frames."""
    codevector_groups: int = 2
    codevectors_per_group: int = 64
    codevector_dim: int = 128
    proj_codevector_dim: int = 128
    gumbel_start: float = 2.0
    gumbel_end: float = 0.5
    """The quantiser's Gumbel-softmax temperature falls from start to end over the run (exponentially)."""
    diversity_weight: float = 0.1
    logits_temperature: float = 0.1


class ContrastiveObjective(nn.Module):
    """The contrastive pretraining loss of ``encoder``; its quantiser and projections are the extra parameters."""

    def __init__(self, encoder: Wav2Vec2Model, settings: ContrastiveSettings):
        super().__init__()
        config = encoder.config.__class__.from_dict({
            **encoder.config.to_dict(),
            "num_codevector_groups": settings.codevector_groups,
            "num_codevectors_per_group": settings.codevectors_per_group,
            "codevector_dim": settings.codevector_dim, "proj_codevector_dim": settings.proj_codevector_dim,
            "num_negatives": settings.negatives, "diversity_loss_weight": settings.diversity_weight,
            "contrastive_logits_temperature": settings.logits_temperature})
        self.pretraining = Wav2Vec2ForPreTraining(config)
        self.pretraining.wav2vec2 = encoder  # shared: pretraining trains the classifier's own encoder
        self.settings = settings

    @property
    def encoder(self) -> Wav2Vec2Model:
        return self.pretraining.wav2vec2

    def extra_parameters(self) -> list[nn.Parameter]:
        shared = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.pretraining.parameters() if id(p) not in shared]

    def loss(self, inputs: torch.Tensor, rows: np.ndarray, progress: float) -> torch.Tensor:
        """Mean loss per masked frame at ``progress`` (0..1) of the run; ``rows`` is unused (no targets)."""
        s = self.settings
        self.pretraining.set_gumbel_temperature(s.gumbel_start * (s.gumbel_end / s.gumbel_start) ** progress)
        frames = int(self.encoder._get_feat_extract_output_lengths(inputs.shape[1]))
        shape = (inputs.shape[0], frames)
        masked = _compute_mask_indices(shape, s.mask_prob, s.mask_length, min_masks=s.min_masks)
        negatives = _sample_negative_indices(shape, s.negatives, mask_time_indices=masked)
        out = self.pretraining(inputs, mask_time_indices=torch.from_numpy(masked),
                               sampled_negative_indices=torch.from_numpy(negatives))
        return out.loss / max(int(masked.sum()), 1)
