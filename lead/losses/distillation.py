"""Distillation losses: response-based KL, LEAD's re-weighted layer loss, and the peers'
recipes of sentence-transformers (MarginMSE, DistillKLDiv) over each query's own group.

Conventions of lead's own losses (docs/method.md): the teacher distribution is
softmax(S_T / T), the student log-distribution log_softmax(S_S); the temperature is applied to
the target side only, with no T² factor; KL is summed over candidates and averaged over queries
(kl_div's "batchmean"; `kl_divergence`). The peers' losses compute what sentence-transformers
computes instead (`group_kl`: the temperature on both sides and a T² factor), each documented
where it differs.
Everything is computed in at least fp32, whatever precision the encoders ran in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lead.losses.contrastive import contrastive_loss, full_precision


def kl_divergence(target_logits: Tensor, log_q: Tensor) -> Tensor:
    """KL(softmax(target_logits) || exp(log_q)), summed over candidates and averaged over rows
    (kl_div's "batchmean").

    The target's log is log_softmax, not log(softmax) as F.kl_div takes it: a candidate whose
    probability underflows to 0 (scores 104 apart in fp32, common for raw layer states) adds
    0 either way, but log(0) turns the target's gradient into NaN, and a jointly trained
    teacher (or the student, as reverse_kl's target) receives that gradient. The gradient on
    log_q is F.kl_div's to the bit.
    """
    target = F.softmax(target_logits, dim=-1)
    return (target * (F.log_softmax(target_logits, dim=-1) - log_q)).sum() / log_q.shape[0]


def response_kl(
    teacher_scores: Tensor, student_scores: Tensor, *, temperature: float = 1.0
) -> Tensor:
    """KL(softmax(S_T / T) || softmax(S_S)): the student learns the teacher's distribution."""
    log_q = F.log_softmax(full_precision(student_scores), dim=-1)
    return kl_divergence(full_precision(teacher_scores) / temperature, log_q)


def reverse_kl(
    teacher_scores: Tensor, student_scores: Tensor, *, temperature: float = 1.0
) -> Tensor:
    """KL(softmax(S_S / T) || softmax(S_T)): the jointly trained teacher learns from the student.

    The response KL with the roles swapped, as the release computes it: the temperature goes
    to the side that is the target, here the student.
    """
    return response_kl(student_scores, teacher_scores, temperature=temperature)


def teacher_layer_ce(teacher_scores: Sequence[Tensor], labels: Tensor) -> Tensor:
    """The teacher's own contrastive loss at each selected layer (no temperature), a constant."""
    return torch.stack([contrastive_loss(s.detach(), labels) for s in teacher_scores])


def layer_weights(layer_ce: Tensor, layer_temperature: float) -> Tensor:
    """softmax(-ce / tau_w): layers where the teacher ranks well get more weight."""
    return torch.softmax(-layer_ce.detach() / layer_temperature, dim=0)


def lead_layer_loss(
    teacher_scores: Sequence[Tensor],
    student_scores: Sequence[Tensor],
    labels: Tensor,
    *,
    temperature: float = 1.0,
    layer_temperature: float = 10.0,
    reweight: bool = True,
    teacher_ce: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """LEAD's layer loss: Σ_i w_i KL(softmax(S_T^i / T) || softmax(S_S^i)), and the weights.

    w = softmax(-ce / layer_temperature) over the k pairs, ce_i = the teacher's CE at its layer
    (labels = gold columns); the weights carry no gradient. `teacher_ce` replaces the CE of
    these rows when it must cover more queries (every process's, under data parallelism).
    reweight=False: a plain sum, weights all ones; the layer coefficient multiplies outside.
    """
    if len(teacher_scores) != len(student_scores) or not teacher_scores:
        raise ValueError(
            f"need the same non-zero number of teacher and student layers, got "
            f"{len(teacher_scores)} and {len(student_scores)}"
        )
    kls = torch.stack(
        [
            response_kl(t, s, temperature=temperature)
            for t, s in zip(teacher_scores, student_scores, strict=True)
        ]
    )
    if reweight:
        ce = teacher_layer_ce(teacher_scores, labels) if teacher_ce is None else teacher_ce
        weights = layer_weights(ce.to(kls.dtype), layer_temperature)
    else:
        weights = torch.ones_like(kls).detach()
    return (weights * kls).sum(), weights


def _group_scores(teacher_scores: Tensor, student_scores: Tensor) -> tuple[Tensor, Tensor]:
    """Both (B, g) matrices of own-group scores in at least fp32, checked: g >= 2."""
    if teacher_scores.shape != student_scores.shape or teacher_scores.dim() != 2:
        raise ValueError(
            f"need teacher and student scores of the same (queries, group) shape, got "
            f"{tuple(teacher_scores.shape)} and {tuple(student_scores.shape)}"
        )
    if teacher_scores.shape[1] < 2:
        raise ValueError(
            f"each query's group needs its positive and at least one negative, got groups of "
            f"{teacher_scores.shape[1]}"
        )
    return full_precision(teacher_scores), full_precision(student_scores)


def margin_mse(teacher_scores: Tensor, student_scores: Tensor) -> Tensor:
    """MarginMSE over each query's own group: mean over queries q and negatives n of
    ((S(q, pos) - S(q, n)) - (T(q, pos) - T(q, n)))².

    Each row is one query's group, its positive in column 0 and its negatives after it. This
    is sentence-transformers' MarginMSELoss (its `nn.MSELoss()`, a mean over the B x n
    margins, one per negative) with the scores given here as its student similarities and
    the teacher's margins as its labels. It detaches the labels; here the teacher side keeps
    its gradient, as every lead term does, and the objective detaches it when the teacher is
    frozen or `detach_teacher_targets` is on.
    """
    teacher, student = _group_scores(teacher_scores, student_scores)
    return F.mse_loss(student[:, :1] - student[:, 1:], teacher[:, :1] - teacher[:, 1:])


def group_kl(
    teacher_scores: Tensor,
    student_scores: Tensor,
    *,
    temperature: float = 1.0,
    student_temperature: float | None = None,
    teacher_temperature: float | None = None,
) -> Tensor:
    """sentence-transformers' DistillKLDivLoss over each query's own group:
    T_S² · KL(softmax(T / T_T) || softmax(S / T_S)), summed over the group's candidates and
    averaged over queries ("batchmean").

    Each row is one query's group (positive and negatives, no in-batch candidates). T_S and
    T_T default to `temperature`, as sentence-transformers' `student_temperature` and
    `teacher_temperature` do. Unlike lead's `response_kl` the temperature also divides the
    student's scores and the loss is scaled by T_S²; at temperature 1 the two conventions
    agree. sentence-transformers detaches its labels (the teacher's scores); see `margin_mse`.
    """
    student_t = temperature if student_temperature is None else student_temperature
    teacher_t = temperature if teacher_temperature is None else teacher_temperature
    teacher, student = _group_scores(teacher_scores, student_scores)
    log_q = F.log_softmax(student / student_t, dim=-1)
    return kl_divergence(teacher / teacher_t, log_q) * student_t**2
