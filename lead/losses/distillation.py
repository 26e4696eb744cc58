"""Distillation losses: response-based KL and LEAD's re-weighted layer loss.

Conventions (LEAD-METHOD.md): the teacher distribution is softmax(S_T / T), the student
log-distribution log_softmax(S_S); the temperature is applied to the target side only, with no
T² factor; KL is summed over candidates and averaged over queries (kl_div "batchmean").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lead.losses.contrastive import contrastive_loss


def response_kl(
    teacher_scores: Tensor, student_scores: Tensor, *, temperature: float = 1.0
) -> Tensor:
    """KL(softmax(S_T / T) || softmax(S_S)): the student learns the teacher's distribution."""
    return F.kl_div(
        F.log_softmax(student_scores, dim=-1),
        F.softmax(teacher_scores / temperature, dim=-1),
        reduction="batchmean",
    )


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


def weighted_layer_loss(
    teacher_scores: Sequence[Tensor],
    student_scores: Sequence[Tensor],
    layer_ce: Tensor | None,
    *,
    temperature: float = 1.0,
    layer_temperature: float = 10.0,
    reweight: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Σ_i w_i KL_i given each teacher layer's CE (global under data parallelism).

    Returns (loss, weights, per-layer KL detached). With `reweight` off the weights are ones
    and `layer_ce` may be None.
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
        if layer_ce is None:
            raise ValueError("re-weighting needs the teacher's per-layer CE")
        weights = layer_weights(layer_ce, layer_temperature)
    else:
        weights = torch.ones_like(kls).detach()
    return (weights * kls).sum(), weights, kls.detach()


def lead_layer_loss(
    teacher_scores: Sequence[Tensor],
    student_scores: Sequence[Tensor],
    labels: Tensor,
    *,
    temperature: float = 1.0,
    layer_temperature: float = 10.0,
    reweight: bool = True,
) -> tuple[Tensor, Tensor]:
    """LEAD's layer loss: Σ_i w_i KL(softmax(S_T^i / T) || softmax(S_S^i)), and the weights.

    w = softmax(-ce / layer_temperature) over the k pairs, ce_i = the teacher's CE at its layer
    (labels = gold columns); weights carry no gradient. reweight=False: plain sum, weights ones.
    The layer coefficient multiplies outside.
    """
    layer_ce = teacher_layer_ce(teacher_scores, labels) if reweight else None
    loss, weights, _ = weighted_layer_loss(
        teacher_scores,
        student_scores,
        layer_ce,
        temperature=temperature,
        layer_temperature=layer_temperature,
        reweight=reweight,
    )
    return loss, weights


class ResponseKL(nn.Module):
    """Response-based distillation: KL(teacher || student) of the final scores."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, teacher_scores: Tensor, student_scores: Tensor) -> dict[str, Tensor]:
        return {"loss": response_kl(teacher_scores, student_scores, temperature=self.temperature)}


class ReverseKL(nn.Module):
    """KL(student || teacher): the signal a jointly trained teacher gets from the student."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, teacher_scores: Tensor, student_scores: Tensor) -> dict[str, Tensor]:
        return {"loss": reverse_kl(teacher_scores, student_scores, temperature=self.temperature)}


class LeadLayerLoss(nn.Module):
    """LEAD's re-weighted sum of per-layer KL divergences.

    `layer_ce` may be passed in when the teacher's per-layer CE must cover more queries than
    these rows (data parallelism: the mean over every process's queries).
    """

    def __init__(
        self, temperature: float = 1.0, layer_temperature: float = 10.0, reweight: bool = True
    ):
        super().__init__()
        self.temperature = temperature
        self.layer_temperature = layer_temperature
        self.reweight = reweight

    def forward(
        self,
        teacher_scores: Sequence[Tensor],
        student_scores: Sequence[Tensor],
        labels: Tensor,
        layer_ce: Tensor | None = None,
    ) -> dict[str, Tensor]:
        if layer_ce is None:
            layer_ce = teacher_layer_ce(teacher_scores, labels)
        loss, weights, kls = weighted_layer_loss(
            teacher_scores,
            student_scores,
            layer_ce,
            temperature=self.temperature,
            layer_temperature=self.layer_temperature,
            reweight=self.reweight,
        )
        return {"loss": loss, "weights": weights, "kl": kls, "teacher_ce": layer_ce.detach()}
