"""Retrieval and distillation losses: pure functions over score matrices, one class per loss.

The maths lives in the functions (testable on hand-made tensors); the nn.Module classes only
hold settings and return their named components, so the objective can log each part. The
contrastive loss (all training) and the distillation losses live in separate modules, so that
editing a distillation loss reruns the distillation jobs only.
"""

from lead.losses.contrastive import ContrastiveLoss, contrastive_loss, gold_labels, own_group
from lead.losses.distillation import (
    LeadLayerLoss,
    ResponseKL,
    ReverseKL,
    layer_weights,
    lead_layer_loss,
    response_kl,
    reverse_kl,
    teacher_layer_ce,
    weighted_layer_loss,
)

__all__ = [
    "ContrastiveLoss",
    "LeadLayerLoss",
    "ResponseKL",
    "ReverseKL",
    "contrastive_loss",
    "gold_labels",
    "layer_weights",
    "lead_layer_loss",
    "own_group",
    "response_kl",
    "reverse_kl",
    "teacher_layer_ce",
    "weighted_layer_loss",
]
