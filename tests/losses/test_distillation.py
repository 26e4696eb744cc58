"""The distillation losses (lead.losses.distillation), checked by hand.

Scores are logs of small integers, so every softmax is a simple fraction: softmax(log[1, 2, 1])
= [1/4, 1/2, 1/4]. The expected values below are worked out by hand in the comments.
"""

from __future__ import annotations

import math

import pytest
import torch

from lead.losses import lead_layer_loss, response_kl, reverse_kl

LN2, LN3 = math.log(2), math.log(3)


def logs(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).log()


def test_response_kl_by_hand_with_temperature_on_the_teacher_side():
    # teacher log[1, 1, 4] / T=2 = log[1, 1, 2] -> p_T = [1/4, 1/4, 1/2]
    # student log[1, 2, 1] -> p_S = [1/4, 1/2, 1/4]
    # KL = 1/4 ln(1) + 1/4 ln(1/2) + 1/2 ln(2) = ln2 / 4 = 0.1732868 (one query: batchmean = sum)
    teacher, student = logs([1, 1, 4]), logs([1, 2, 1])
    loss = response_kl(teacher, student, temperature=2.0)
    assert loss.item() == pytest.approx(LN2 / 4, abs=1e-12)  # not T² * ln2/4: no T² factor
    # at T=1 the same scores give p_T = [1/6, 1/6, 4/6] and
    # KL = 1/6 ln(2/3) + 1/6 ln(1/3) + 2/3 ln(8/3)
    at_one = math.log(2 / 3) / 6 + math.log(1 / 3) / 6 + 2 / 3 * math.log(8 / 3)
    assert response_kl(teacher, student).item() == pytest.approx(at_one, abs=1e-12)


def test_kl_averages_over_queries():
    # query 1 as above (ln2/4); query 2 identical distributions (0) -> batchmean = ln2/8
    teacher = logs([1, 1, 2], [1, 2, 3])
    student = logs([1, 2, 1], [1, 2, 3])
    assert response_kl(teacher, student).item() == pytest.approx(LN2 / 8, abs=1e-12)


def test_reverse_kl_by_hand_with_temperature_on_the_student_target():
    # KL(p_S || p_T) with p_S = [1/4, 1/2, 1/4], p_T = [1/4, 1/4, 1/2]:
    # 1/4 ln 1 + 1/2 ln 2 + 1/4 ln(1/2) = ln2 / 4
    teacher, student = logs([1, 1, 2]), logs([1, 2, 1])
    assert reverse_kl(teacher, student).item() == pytest.approx(LN2 / 4, abs=1e-12)
    # the temperature divides the target's scores: student log[1, 4, 1] / 2 = log[1, 2, 1]
    doubled = logs([1, 4, 1])
    assert reverse_kl(teacher, doubled, temperature=2.0).item() == pytest.approx(
        LN2 / 4, abs=1e-12
    )


# Two selected layers, one query with the positive in column 2.
# Teacher layer 1: log[1, 1, 2] -> p = [1/4, 1/4, 1/2], its own CE = -ln(1/2) = ln 2
# Teacher layer 2: log[1, 1, 1] -> uniform, its own CE = ln 3
# Student layer 1: log[1, 2, 1] -> [1/4, 1/2, 1/4]: KL_1 = ln2 / 4 (as above)
# Student layer 2: log[1, 1, 2] -> [1/4, 1/4, 1/2]:
#     KL_2 = 1/3 ln(4/3) + 1/3 ln(4/3) + 1/3 ln(2/3) = 1/3 ln(32/27)
TEACHER_LAYERS = [logs([1, 1, 2]), logs([1, 1, 1])]
STUDENT_LAYERS = [logs([1, 2, 1]), logs([1, 1, 2])]
LABELS = torch.tensor([2])
KL_1, KL_2 = LN2 / 4, math.log(32 / 27) / 3


def test_lead_layer_loss_by_hand_with_layer_temperature_one():
    # w = softmax(-[ln2, ln3] / 1) ∝ [1/2, 1/3] -> [3/5, 2/5]
    loss, weights = lead_layer_loss(
        TEACHER_LAYERS, STUDENT_LAYERS, LABELS, layer_temperature=1.0
    )
    assert weights.tolist() == pytest.approx([3 / 5, 2 / 5], abs=1e-12)
    assert loss.item() == pytest.approx(3 / 5 * KL_1 + 2 / 5 * KL_2, abs=1e-12)


def test_lead_layer_loss_by_hand_with_the_release_layer_temperature():
    # w ∝ [2^-0.1, 3^-0.1] = [0.93303299, 0.89595846] -> [0.51013524, 0.48986476]
    loss, weights = lead_layer_loss(TEACHER_LAYERS, STUDENT_LAYERS, LABELS)
    assert weights.tolist() == pytest.approx([0.51013524, 0.48986476], abs=1e-7)
    assert loss.item() == pytest.approx(0.51013524 * KL_1 + 0.48986476 * KL_2, abs=1e-7)


def test_lead_layer_loss_without_reweighting_is_a_plain_sum():
    loss, weights = lead_layer_loss(TEACHER_LAYERS, STUDENT_LAYERS, LABELS, reweight=False)
    assert weights.tolist() == [1.0, 1.0]
    assert loss.item() == pytest.approx(KL_1 + KL_2, abs=1e-12)


def test_lead_layer_temperature_applies_to_the_teacher_distribution_only():
    # teacher layers doubled with T = 2 give the same distributions, hence the same KL;
    # the weights use the teacher's CE WITHOUT temperature, so they change.
    doubled = [2 * s for s in TEACHER_LAYERS]  # log[1, 1, 4] and log[1, 1, 1]
    loss, weights = lead_layer_loss(
        doubled, STUDENT_LAYERS, LABELS, temperature=2.0, layer_temperature=1.0
    )
    # CE of log[1, 1, 4] at gold 2 = -ln(4/6) = ln 1.5; of uniform = ln 3
    # w ∝ [1/1.5, 1/3] = [2/3, 1/3]
    assert weights.tolist() == pytest.approx([2 / 3, 1 / 3], abs=1e-12)
    assert loss.item() == pytest.approx(2 / 3 * KL_1 + 1 / 3 * KL_2, abs=1e-12)


def test_layer_weights_carry_no_gradient_but_the_kl_does():
    teacher = [s.clone().requires_grad_() for s in TEACHER_LAYERS]
    student = [s.clone().requires_grad_() for s in STUDENT_LAYERS]
    loss, weights = lead_layer_loss(teacher, student, LABELS)
    assert not weights.requires_grad
    loss.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in teacher + student)
    # d loss / d teacher scores comes from the KL terms only: with the weights held fixed,
    # the gradient equals that of the fixed-weight sum
    fixed = [s.clone().requires_grad_() for s in TEACHER_LAYERS]
    reference = sum(
        w * response_kl(t, s) for w, t, s in zip(weights, fixed, STUDENT_LAYERS, strict=True)
    )
    reference.backward()
    for got, want in zip(teacher, fixed, strict=True):
        torch.testing.assert_close(got.grad, want.grad)


def test_a_teacher_ce_over_more_queries_replaces_the_local_one():
    # the CE of every process's queries (data parallelism) decides the weights:
    # w ∝ softmax(-[ln3, ln2]) = [1/3, 1/2] -> [2/5, 3/5]
    given = torch.tensor([LN3, LN2], dtype=torch.float64)
    loss, weights = lead_layer_loss(
        TEACHER_LAYERS, STUDENT_LAYERS, LABELS, layer_temperature=1.0, teacher_ce=given
    )
    assert weights.tolist() == pytest.approx([2 / 5, 3 / 5], abs=1e-12)
    assert loss.item() == pytest.approx(2 / 5 * KL_1 + 3 / 5 * KL_2, abs=1e-12)


def test_lead_layer_loss_needs_matching_layer_lists():
    with pytest.raises(ValueError, match="same non-zero number"):
        lead_layer_loss(TEACHER_LAYERS, STUDENT_LAYERS[:1], LABELS)
