"""The contrastive loss and its labels (lead.losses.contrastive), checked by hand.

Scores are logs of small integers, so every softmax is a simple fraction: softmax(log[1, 2, 1])
= [1/4, 1/2, 1/4]. The expected values below are worked out by hand in the comments.
"""

from __future__ import annotations

import math

import pytest
import torch

from lead.losses import contrastive_loss, gold_labels, own_group, response_kl

LN2, LN3 = math.log(2), math.log(3)


def logs(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).log()


def test_gold_labels_point_at_each_group_positive_after_the_offset():
    # 3 queries, groups of 4 (1 positive + 3 negatives), this process's passages start at 8
    assert gold_labels(3, 4).tolist() == [0, 4, 8]
    assert gold_labels(3, 4, offset=8).tolist() == [8, 12, 16]


def test_own_group_keeps_each_query_block():
    scores = torch.arange(12.0).view(2, 6)  # 2 queries, groups of 3
    assert own_group(scores, 3).tolist() == [[0.0, 1.0, 2.0], [9.0, 10.0, 11.0]]
    with pytest.raises(ValueError, match="expected 8 candidates"):
        own_group(scores, 4)


def test_contrastive_loss_by_hand():
    # row 1: p = [1/4, 1/2, 1/4], gold 1 -> -ln(1/2) = ln 2
    # row 2: p = [1/6, 2/6, 3/6], gold 0 -> -ln(1/6) = ln 6
    scores = logs([1, 2, 1], [1, 2, 3])
    expected = (LN2 + math.log(6)) / 2  # 1.2424533
    loss = contrastive_loss(scores, torch.tensor([1, 0]))
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_losses_of_bf16_scores_are_computed_in_fp32():
    # bf16 cannot hold 8.01 (it rounds to 8.0): a loss computed in bf16 would see ties
    scores = torch.tensor([[8.01, 8.0, 0.0]]).to(torch.bfloat16)
    teacher = torch.tensor([[8.03, 8.0, 0.0]]).to(torch.bfloat16)
    for value in (contrastive_loss(scores, torch.tensor([0])), response_kl(teacher, scores)):
        assert value.dtype == torch.float32
