"""The distillation losses (lead.losses.distillation), checked by hand, and the peers' recipes
against sentence-transformers' own losses.

Scores are logs of small integers, so every softmax is a simple fraction: softmax(log[1, 2, 1])
= [1/4, 1/2, 1/4]. The expected values below are worked out by hand in the comments.
"""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import TEXTS, make_model, make_tokenizer, spread_weights

from lead.losses import group_kl, lead_layer_loss, margin_mse, own_group, response_kl, reverse_kl

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


def test_a_target_probability_that_underflows_gives_no_nan_gradient():
    """Scores 120 apart: the far candidate's target probability is 0 in fp32. A jointly
    trained teacher (and the student, as reverse_kl's target) still gets a finite gradient."""
    for loss in (
        lambda t, s: response_kl(t, s),
        lambda t, s: reverse_kl(t, s),
        lambda t, s: lead_layer_loss([t], [s], torch.tensor([0, 1]))[0],
        lambda t, s: group_kl(t, s),
    ):
        teacher = torch.tensor([[0.0, 120.0, 3.0], [1.0, 2.0, 3.0]], requires_grad=True)
        student = torch.tensor([[0.0, -120.0, 1.0], [3.0, 2.0, 1.0]], requires_grad=True)
        value = loss(teacher, student)
        value.backward()
        assert torch.isfinite(value)
        assert torch.isfinite(teacher.grad).all() and torch.isfinite(student.grad).all()


def test_the_students_gradient_is_kl_divs_to_the_bit():
    """Reading the target's log from log_softmax changes no student update: the gradient on
    the student's scores equals F.kl_div's exactly."""
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(16, 64, generator=generator) * 30
    student = (torch.randn(16, 64, generator=generator) * 5).requires_grad_()
    response_kl(teacher, student, temperature=0.7).backward()
    ours = student.grad.clone()
    student.grad = None
    torch.nn.functional.kl_div(torch.log_softmax(student, dim=-1),
                               torch.softmax(teacher / 0.7, dim=-1),
                               reduction="batchmean").backward()
    assert torch.equal(ours, student.grad)


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


# --------------------------------------------------------------------------- peers' recipes
# Rows are each query's own group: its positive in column 0, its negatives after it.


def test_margin_mse_by_hand_averages_over_every_margin():
    # query 1: student margins (2-2, 2-0) = (0, 2), teacher (3-1, 3-2) = (2, 1): errors -2, 1
    # query 2: student (1-0, 1-1) = (1, 0), teacher (0, 0): errors 1, 0
    # mean over the 2 x 2 margins: (4 + 1 + 1 + 0) / 4 = 1.5 (not the per-query sum's mean, 3)
    teacher = torch.tensor([[3.0, 1.0, 2.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    student = torch.tensor([[2.0, 2.0, 0.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
    assert margin_mse(teacher, student).item() == pytest.approx(1.5, abs=1e-12)
    # margins only: shifting a query's scores changes nothing
    shifted = student + torch.tensor([[5.0], [-2.0]], dtype=torch.float64)
    assert margin_mse(teacher, shifted).item() == pytest.approx(1.5, abs=1e-12)
    # one negative: the squared error of the single margin, mean over queries: (4 + 1) / 2
    assert margin_mse(teacher[:, :2], student[:, :2]).item() == pytest.approx(2.5, abs=1e-12)


def test_group_kl_by_hand_with_sentence_transformers_temperature_handling():
    teacher, student = logs([1, 1, 2]), logs([1, 2, 1])
    # T = 1: KL([1/4, 1/4, 1/2] || [1/4, 1/2, 1/4]) = ln2 / 4, response_kl's value
    assert group_kl(teacher, student).item() == pytest.approx(LN2 / 4, abs=1e-12)
    assert group_kl(teacher, student).item() == pytest.approx(response_kl(teacher, student).item())
    # T = 2 divides BOTH sides: log[1, 1, 4] / 2 = log[1, 1, 2], log[1, 4, 1] / 2 = log[1, 2, 1],
    # the same KL ln2 / 4, times T² = 4: ln 2
    teacher_2, student_2 = logs([1, 1, 4]), logs([1, 4, 1])
    assert group_kl(teacher_2, student_2, temperature=2.0).item() == pytest.approx(LN2, abs=1e-12)
    # lead's response_kl at T = 2 divides the teacher only, with no factor:
    # KL([1/4, 1/4, 1/2] || [1/6, 4/6, 1/6]) = 1/4 ln(3/2) + 1/4 ln(3/8) + 1/2 ln 3
    response = math.log(3 / 2) / 4 + math.log(3 / 8) / 4 + math.log(3) / 2
    assert response_kl(teacher_2, student_2, temperature=2.0).item() == pytest.approx(
        response, abs=1e-12)
    # the one-sided overrides: the factor is the student's temperature squared
    assert group_kl(teacher_2, student, teacher_temperature=2.0).item() == pytest.approx(
        LN2 / 4, abs=1e-12)
    assert group_kl(teacher, student_2, student_temperature=2.0).item() == pytest.approx(
        LN2, abs=1e-12)
    # unscaled cosines at temperature 1/c are lead's c x cosine scores at 1, times 1/c²
    assert group_kl(teacher / 20, student / 20, temperature=0.05).item() == pytest.approx(
        group_kl(teacher, student).item() / 400, abs=1e-12)


def test_group_losses_need_a_negative_and_matching_groups():
    scores = torch.zeros(2, 3)
    for loss in (margin_mse, group_kl):
        with pytest.raises(ValueError, match="at least one negative"):
            loss(scores[:, :1], scores[:, :1])
        with pytest.raises(ValueError, match="same"):
            loss(scores, scores[:, :2])


QUERY_TEXTS = ["what does a student learn", "how do rivers reach the sea",
               "one vector per token"]
NEGATIVES = 2  # query j: TEXTS[3j] its positive, the next two its negatives (mod 8)


@pytest.fixture(scope="module")
def sentence_transformers_pair(tmp_path_factory, one_torch_thread):
    """A student and a teacher as sentence-transformers models (tiny random BERTs written by
    lead's `init: random`, which writes sentence-transformers' files), in float64."""
    from sentence_transformers import SentenceTransformer

    root = tmp_path_factory.mktemp("st")
    student = make_model(root / "student", make_tokenizer(root / "student-tok", vocab_size=90),
                         layers=2, hidden=16, pooling="mean")
    teacher = make_model(root / "teacher", make_tokenizer(root / "teacher-tok", vocab_size=140,
                                                          lowercase=False),
                         layers=3, hidden=24, pooling="mean", seed=1)
    for seed, path in enumerate((student, teacher)):
        spread_weights(path, seed, std=0.1)
    return tuple(SentenceTransformer(str(path), device="cpu").double().eval()
                 for path in (student, teacher))


def _columns(model):
    """sentence-transformers' input: one feature batch per column (query, positive, negatives),
    fresh each call (the model writes its outputs into them)."""
    groups = [[TEXTS[(3 * j + k) % len(TEXTS)] for k in range(1 + NEGATIVES)]
              for j in range(len(QUERY_TEXTS))]
    columns = [QUERY_TEXTS] + [[group[k] for group in groups] for k in range(1 + NEGATIVES)]
    return [model.preprocess(column) for column in columns]


def _own_group_scores(model, normalize: bool = False):
    """lead's route: the (B, B*g) score matrix of the queries against every passage of the
    batch, group by group, sliced to each query's own group -> (B, g)."""
    embeddings = [model(features)["sentence_embedding"] for features in _columns(model)]
    if normalize:
        embeddings = [torch.nn.functional.normalize(e, dim=-1) for e in embeddings]
    queries = embeddings[0]
    passages = torch.stack(embeddings[1:], dim=1).flatten(0, 1)  # row j*g + k: query j's k-th
    return own_group(queries @ passages.T, 1 + NEGATIVES)


def _student_grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _labels(teacher, similarity):
    """The teacher's scores as sentence-transformers' examples compute labels: each column's
    pairwise similarity with the queries, stacked -> (B, 1 + n)."""
    embeddings = [teacher(features)["sentence_embedding"] for features in _columns(teacher)]
    return torch.stack([similarity(embeddings[0], column) for column in embeddings[1:]], dim=1)


# sentence_transformers.losses is a deprecated alias of this module (the same classes).
@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_margin_mse_is_sentence_transformers_margin_mse_loss(sentence_transformers_pair,
                                                             similarity):
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss
    from sentence_transformers.util import pairwise_cos_sim, pairwise_dot_score

    student, teacher = sentence_transformers_pair
    cosine = similarity == "cosine"
    similarity_fct = pairwise_cos_sim if cosine else pairwise_dot_score  # dot: its default
    with torch.no_grad():
        labels = _labels(teacher, similarity_fct)
        teacher_scores = _own_group_scores(teacher, normalize=cosine)
    torch.testing.assert_close(teacher_scores, labels, rtol=0, atol=1e-12)
    loss = MarginMSELoss(student, similarity_fct=similarity_fct)
    theirs = loss(_columns(student), labels)
    ours = margin_mse(teacher_scores, _own_group_scores(student, normalize=cosine))
    assert theirs.item() > 1e-6  # a real difference between the models' margins
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6, rel=0)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-9)  # fp64: far closer still
    # labels given as the teacher's margins, the other form it takes: the same loss
    margins = labels[:, :1] - labels[:, 1:]
    assert loss(_columns(student), margins).item() == pytest.approx(theirs.item(), abs=1e-12)
    # and the same gradient in the student
    want = _student_grads(student, loss(_columns(student), labels))
    got = _student_grads(student, margin_mse(teacher_scores,
                                             _own_group_scores(student, normalize=cosine)))
    assert got.keys() == want.keys() and want
    for name, grad in got.items():
        torch.testing.assert_close(grad, want[name], rtol=1e-6, atol=1e-9, msg=name)


@pytest.mark.parametrize(
    ("options", "ours"),
    [
        ({}, {}),
        ({"temperature": 2.0}, {"temperature": 2.0}),
        ({"temperature": 0.5}, {"temperature": 0.5}),
        ({"student_temperature": 0.5, "teacher_temperature": 3.0},
         {"student_temperature": 0.5, "teacher_temperature": 3.0}),
    ],
)
def test_group_kl_is_sentence_transformers_distill_kl_div_loss(sentence_transformers_pair,
                                                                options, ours):
    from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss
    from sentence_transformers.util import pairwise_dot_score

    student, teacher = sentence_transformers_pair
    with torch.no_grad():
        labels = _labels(teacher, pairwise_dot_score)
        teacher_scores = _own_group_scores(teacher)
    loss = DistillKLDivLoss(student, **options)  # dot product: its default similarity
    theirs = loss(_columns(student), labels)
    value = group_kl(teacher_scores, _own_group_scores(student), **ours)
    assert theirs.item() > 1e-4
    assert value.item() == pytest.approx(theirs.item(), abs=1e-6, rel=0)
    assert value.item() == pytest.approx(theirs.item(), rel=1e-9)
    want = _student_grads(student, loss(_columns(student), labels))
    got = _student_grads(student, group_kl(teacher_scores, _own_group_scores(student), **ours))
    assert got.keys() == want.keys() and want
    for name, grad in got.items():
        torch.testing.assert_close(grad, want[name], rtol=1e-6, atol=1e-9, msg=name)
