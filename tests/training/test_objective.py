"""The contrastive objective (lead.training.objective) of a cross-encoder trained alone."""

from __future__ import annotations

import torch
from tiny_models import TEXTS, batch

from lead.losses import contrastive_loss
from lead.modeling.encoders import load_encoder
from lead.training.objective import Objective

GROUP = 2


QUERIES = ["what does a student learn", "how do rivers reach the sea", "one vector per token"]
PASSAGES = TEXTS[:6]  # 3 queries x (1 positive + 1 negative)


def test_contrastive_training_of_a_cross_encoder_alone(models):
    model = load_encoder(models["cross"])
    objective = Objective(model).eval()
    queries, passages = batch(model, QUERIES), batch(model, PASSAGES)
    output = objective(queries, passages, group_size=GROUP)
    with torch.no_grad():
        scores, _ = model.score_groups(queries, passages, GROUP)
    expected = contrastive_loss(scores, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(output.loss.detach(), expected)
