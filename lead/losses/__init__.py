"""Retrieval and distillation losses: pure functions over score matrices.

The maths lives here, testable on hand-made tensors; the training objective
(lead.training.objective) calls these functions and logs each term by name. The contrastive
loss (all training) and the distillation losses live in separate modules.
"""

from lead.losses.contrastive import contrastive_loss, full_precision, gold_labels, own_group
from lead.losses.distillation import (
    layer_weights,
    lead_layer_loss,
    response_kl,
    reverse_kl,
    teacher_layer_ce,
)

__all__ = [
    "contrastive_loss",
    "full_precision",
    "gold_labels",
    "layer_weights",
    "lead_layer_loss",
    "own_group",
    "response_kl",
    "reverse_kl",
    "teacher_layer_ce",
]
