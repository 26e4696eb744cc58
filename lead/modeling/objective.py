"""The training objective of every method (docs/LEAD-METHOD.md, "Total loss").

    L = CE_student + [CE_teacher + KL(S || T)]  (teacher trained jointly)
        + KL(T || S)  (response, lead)  + L_layer  (lead)

Each process scores its LOCAL queries against the GLOBAL candidate set: the passage states the
loss needs (pooled per layer for a dual encoder, token states and their masks for ColBERT) are
gathered from every process, and the gather sends each process's loss gradient back to the
passages' owners (lead.modeling.distributed). The returned loss is this process's share, so
averaging losses and gradients over processes (as DistributedDataParallel does) reproduces one
process on the concatenated batch. With a cross-encoder (teacher, or the model trained alone)
every distribution covers only each query's own group, and nothing is gathered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lead.config import resolve
from lead.errors import ConfigError
from lead.losses import (
    ContrastiveLoss,
    LeadLayerLoss,
    ResponseKL,
    ReverseKL,
    gold_labels,
    teacher_layer_ce,
)
from lead.modeling import distributed
from lead.modeling.encoders import Batch, Encoder

METHODS = ("none", "response", "lead", "contrastive")
DISTILLING = ("response", "lead")


@dataclass
class ObjectiveOutput:
    """The loss to backpropagate, its detached parts (before coefficients) and layer weights."""

    loss: Tensor
    components: dict[str, Tensor]
    layer_weights: Tensor | None = None


@dataclass
class _Scores:
    """One model's score matrices: final, one per selected layer, and the gold columns."""

    final: Tensor
    layers: list[Tensor]
    labels: Tensor

    def detached(self) -> _Scores:
        return _Scores(self.final.detach(), [s.detach() for s in self.layers], self.labels)


class DistillationObjective(nn.Module):
    """Holds the student (or the model trained alone) and the teacher, and computes the loss.

    A frozen teacher (teacher_trainable false) is put in eval mode with requires_grad off,
    and stays in eval mode when the objective is switched to train mode.
    """

    def __init__(
        self,
        student: Encoder,
        teacher: Encoder | None,
        method: str,
        settings: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if method not in METHODS:
            raise ConfigError(f"method {method!r} is unknown; expected one of {METHODS}")
        distilling = method in DISTILLING
        if distilling and teacher is None:
            raise ConfigError(f"method {method!r} needs a teacher")
        settings = resolve("distillation", dict(settings or {}))
        self.method = method
        self.student = student
        self.teacher = teacher if distilling else None
        self.teacher_trainable = distilling and settings["teacher_trainable"]
        self.detach_targets = not self.teacher_trainable or settings["detach_teacher_targets"]
        kinds = {student.kind} | ({self.teacher.kind} if self.teacher else set())
        self.own_group = "cross" in kinds
        self.coefficients = self._active_terms(settings)
        if self.teacher is not None and not self.teacher_trainable:
            self.teacher.requires_grad_(False)
            self.teacher.eval()
        temperature = settings["temperature"]
        self.contrastive = ContrastiveLoss()
        self.response = ResponseKL(temperature)
        self.reverse = ReverseKL(temperature)
        self.layer_loss = LeadLayerLoss(
            temperature, settings["layer_temperature"], settings["reweight"]
        )

    def _active_terms(self, settings: Mapping[str, Any]) -> dict[str, float]:
        """Coefficient of each term this method computes; terms weighted 0 are skipped."""
        coefficients = dict(settings["coefficients"])
        if not settings["reweight"]:
            coefficients["layer"] *= settings["layer_coefficient"]
        names = ["student_ce"]
        if self.teacher_trainable:
            names += ["teacher_ce", "reverse_kl"]
        if self.method in DISTILLING:
            names.append("response_kl")
        if self.method == "lead":
            names.append("layer")
        active = {name: float(coefficients[name]) for name in names if coefficients[name] > 0}
        if not active:
            raise ConfigError(f"every loss term of method {self.method!r} has coefficient 0")
        return active

    def train(self, mode: bool = True) -> DistillationObjective:
        super().train(mode)
        if self.teacher is not None and not self.teacher_trainable:
            self.teacher.eval()
        return self

    def forward(
        self,
        student_q: Batch,
        student_p: Batch,
        teacher_q: Batch | None = None,
        teacher_p: Batch | None = None,
        layer_pairs: Sequence[tuple[int, int]] = (),
        group_size: int = 1,
    ) -> ObjectiveOutput:
        """Loss of a local micro-batch: B queries, B*group_size passages ordered by group."""
        pairs = list(layer_pairs) if "layer" in self.coefficients else []
        if "layer" in self.coefficients and not pairs:
            raise ValueError("method 'lead' needs at least one (teacher, student) layer pair")
        num_queries = student_q["input_ids"].shape[0]
        sizes = distributed.gather_sizes(num_queries, student_q["input_ids"].device)
        share = len(sizes) * num_queries / sum(sizes)
        offset = group_size * sum(sizes[: distributed.rank()])
        student = self._scores(
            self.student, student_q, student_p, [s for _, s in pairs], group_size, offset
        )
        values = {"student_ce": self.contrastive(student.final, student.labels)["loss"]}
        layer_weights = None
        if self.teacher is not None:
            if teacher_q is None or teacher_p is None:
                raise ValueError(f"method {self.method!r} needs the teacher's batches")
            with torch.set_grad_enabled(self.teacher_trainable and torch.is_grad_enabled()):
                teacher = self._scores(
                    self.teacher, teacher_q, teacher_p, [t for t, _ in pairs], group_size, offset
                )
            target = teacher.detached() if self.detach_targets else teacher
            if "teacher_ce" in self.coefficients:
                values["teacher_ce"] = self.contrastive(teacher.final, teacher.labels)["loss"]
            if "response_kl" in self.coefficients:
                values["response_kl"] = self.response(target.final, student.final)["loss"]
            if "reverse_kl" in self.coefficients:
                values["reverse_kl"] = self.reverse(target.final, student.final)["loss"]
            if pairs:
                layer_ce = distributed.global_mean(
                    teacher_layer_ce(teacher.layers, teacher.labels), num_queries
                )
                layer = self.layer_loss(
                    target.layers, student.layers, teacher.labels, layer_ce=layer_ce
                )
                values["layer"] = layer["loss"]
                layer_weights = layer["weights"]
        values = {name: value for name, value in values.items() if name in self.coefficients}
        loss = share * sum(self.coefficients[name] * value for name, value in values.items())
        components = {name: (share * value).detach() for name, value in values.items()}
        return ObjectiveOutput(loss, components, layer_weights)

    def _scores(
        self,
        model: Encoder,
        query_batch: Batch,
        passage_batch: Batch,
        layers: Sequence[int],
        group_size: int,
        offset: int,
    ) -> _Scores:
        num_queries = query_batch["input_ids"].shape[0]
        num_passages = passage_batch["input_ids"].shape[0]
        if num_passages != num_queries * group_size:
            raise ValueError(
                f"{num_queries} queries in groups of {group_size} need "
                f"{num_queries * group_size} passages, got {num_passages}"
            )
        device = query_batch["input_ids"].device
        if self.own_group:
            final, per_layer = model.score_groups(query_batch, passage_batch, group_size, layers)
            labels = torch.zeros(num_queries, dtype=torch.long, device=device)
        else:
            query = model.encode_query(query_batch, layers)
            passage = model.encode_passage(passage_batch, layers)
            passage_mask = None
            if passage.mask is not None:
                passage_mask = distributed.all_gather_with_grad(passage.mask)

            def score(q: Tensor, p: Tensor) -> Tensor:
                gathered = distributed.all_gather_with_grad(p)
                return model.compute_similarity(q, gathered, query.mask, passage_mask)

            final = score(query.final, passage.final)
            per_layer = {i: score(query.layers[i], passage.layers[i]) for i in sorted(set(layers))}
            labels = gold_labels(num_queries, group_size, offset, device=device)
        return _Scores(final, [per_layer[i] for i in layers], labels)
