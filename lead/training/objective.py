"""The training objective of every method (docs/method.md, "Total loss").

    L = CE_student + [CE_teacher + KL(S || T)]  (teacher trained jointly)
        + KL(T || S)  (response, lead)  + L_layer  (lead)

Each process scores its LOCAL queries against the GLOBAL candidate set: the passage states the
loss needs (pooled per layer for a dual encoder, token states and their masks for ColBERT) are
gathered from every process, and the gather sends each process's loss gradient back to the
passages' owners (lead.distributed). Averaging gradients over processes then gives the
full-batch gradient when each process's loss is weighted by G x its share of the queries
(gradient_scale: exact), or 1/G of it, as the release's DDP training does, when weighted by its
share alone (release). With a cross-encoder (teacher, or the model trained alone) every
distribution covers only each query's own group, and nothing is gathered.

The teacher's scores come from the live teacher, or, for a frozen dual-encoder teacher, from
its cached per-layer vectors (lead.training.teacher_cache), which give the same scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lead import distributed
from lead.config import resolve
from lead.errors import ConfigError
from lead.losses import (
    contrastive_loss,
    gold_labels,
    lead_layer_loss,
    response_kl,
    reverse_kl,
    teacher_layer_ce,
)
from lead.modeling.encoders import Batch, Encoder, Reps

# The methods a distillation job can run, and "contrastive": one model trained alone (warm-up).
METHODS = ("none", "response", "lead")
DISTILLING = ("response", "lead")
CONTRASTIVE = "contrastive"
TERMS = ("student_ce", "teacher_ce", "response_kl", "reverse_kl", "layer")

# A live teacher's token batch, or a cached teacher's (N, L, d) pooled vectors of every layer.
TeacherInput = Batch | Tensor


@dataclass
class ObjectiveOutput:
    """The loss to backpropagate, its detached parts (before coefficients, each the mean over
    the global batch once averaged over processes) and the layer weights."""

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
        *,
        gradient_scale: str = "release",
    ):
        super().__init__()
        if method not in (*METHODS, CONTRASTIVE):
            raise ConfigError(f"method {method!r} is unknown; expected one of {METHODS}")
        distilling = method in DISTILLING
        if distilling and teacher is None:
            raise ConfigError(f"method {method!r} needs a teacher")
        settings = resolve("distillation", dict(settings or {}))
        self.method = method
        self.student = student
        self.teacher = teacher if distilling else None
        self.teacher_trainable = distilling and settings["teacher_trainable"]
        self.detach_targets = settings["detach_teacher_targets"]
        self.exact = gradient_scale == "exact"
        kinds = {student.kind} | ({self.teacher.kind} if self.teacher else set())
        self.own_group = "cross" in kinds
        self.own_layer_similarity = settings["layer_similarity"] == "model"
        self.temperature = settings["temperature"]
        self.layer_temperature = settings["layer_temperature"]
        self.reweight = settings["reweight"]
        self.coefficients = self._active_terms(settings)
        if self.teacher is not None and not self.teacher_trainable:
            self.teacher.requires_grad_(False)
            self.teacher.eval()

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
        teacher_q: TeacherInput | None = None,
        teacher_p: TeacherInput | None = None,
        layer_pairs: Sequence[tuple[int, int]] = (),
        group_size: int = 1,
    ) -> ObjectiveOutput:
        """Loss of a local micro-batch: B queries, B*group_size passages ordered by group.

        The teacher's inputs are token batches (the live teacher runs) or its cached Reps.
        """
        pairs = list(layer_pairs) if "layer" in self.coefficients else []
        if "layer" in self.coefficients and not pairs:
            raise ValueError("method 'lead' needs at least one (teacher, student) layer pair")
        num_queries = student_q["input_ids"].shape[0]
        sizes = distributed.gather_sizes(num_queries, student_q["input_ids"].device)
        share = num_queries / sum(sizes)  # this process's part of the global mean
        offset = group_size * sum(sizes[: distributed.rank()])
        student = self._scores(
            self.student, student_q, student_p, [s for _, s in pairs], group_size, offset
        )
        values = {"student_ce": contrastive_loss(student.final, student.labels)}
        layer_weights = None
        if self.teacher is not None:
            if teacher_q is None or teacher_p is None:
                raise ValueError(f"method {self.method!r} needs the teacher's batches")
            with torch.set_grad_enabled(self.teacher_trainable and torch.is_grad_enabled()):
                teacher = self._scores(
                    self.teacher, teacher_q, teacher_p, [t for t, _ in pairs], group_size, offset
                )
            # detach_teacher_targets: the student's terms send no gradient into the teacher,
            # the teacher's own terms still train it.
            target = teacher.detached() if self.detach_targets else teacher
            learner = student.detached() if self.detach_targets else student
            if "teacher_ce" in self.coefficients:
                values["teacher_ce"] = contrastive_loss(teacher.final, teacher.labels)
            if "response_kl" in self.coefficients:
                values["response_kl"] = response_kl(
                    target.final, student.final, temperature=self.temperature
                )
            if "reverse_kl" in self.coefficients:
                values["reverse_kl"] = reverse_kl(
                    teacher.final, learner.final, temperature=self.temperature
                )
            if pairs:
                values["layer"], layer_weights = lead_layer_loss(
                    target.layers, student.layers, teacher.labels,
                    temperature=self.temperature, layer_temperature=self.layer_temperature,
                    reweight=self.reweight,
                    teacher_ce=distributed.global_mean(
                        teacher_layer_ce(teacher.layers, teacher.labels), num_queries
                    ),
                )
        values = {name: value for name, value in values.items() if name in self.coefficients}
        weighted = sum(self.coefficients[name] * value for name, value in values.items())
        world = len(sizes)
        loss = (world * share if self.exact else share) * weighted
        components = {name: (world * share * value).detach() for name, value in values.items()}
        return ObjectiveOutput(loss, components, layer_weights)

    def _scores(
        self,
        model: Encoder,
        queries: TeacherInput,
        passages: TeacherInput,
        layers: Sequence[int],
        group_size: int,
        offset: int,
    ) -> _Scores:
        cached = isinstance(queries, Tensor)
        num_queries = queries.shape[0] if cached else queries["input_ids"].shape[0]
        num_passages = passages.shape[0] if cached else passages["input_ids"].shape[0]
        if num_passages != num_queries * group_size:
            raise ValueError(
                f"{num_queries} queries in groups of {group_size} need "
                f"{num_queries * group_size} passages, got {num_passages}"
            )
        device = queries.device if cached else queries["input_ids"].device
        if self.own_group:
            if cached:
                raise ValueError("cached teacher vectors cannot score own groups (cross-encoders)")
            final, per_layer = model.score_groups(
                queries, passages, group_size, layers,
                own_layer_similarity=self.own_layer_similarity,
            )
            labels = torch.zeros(num_queries, dtype=torch.long, device=device)
            return _Scores(final, [per_layer[i] for i in layers], labels)
        query = _cached(model, queries) if cached else model.encode_query(queries, layers)
        passage = _cached(model, passages) if cached else model.encode_passage(passages, layers)
        passage_mask = None
        if passage.mask is not None:
            passage_mask = distributed.all_gather_with_grad(passage.mask)

        def gathered(p: Tensor) -> Tensor:
            return distributed.all_gather_with_grad(p)

        final = model.compute_similarity(query.final, gathered(passage.final), query.mask,
                                         passage_mask)
        per_layer = {
            i: model.layer_similarity(query.layers[i], gathered(passage.layers[i]), query.mask,
                                      passage_mask, own=self.own_layer_similarity)
            for i in sorted(set(layers))
        }
        labels = gold_labels(num_queries, group_size, offset, device=device)
        return _Scores(final, [per_layer[i] for i in layers], labels)


def _cached(model: Encoder, vectors: Tensor) -> Reps:
    """The Reps a dual encoder would give for texts whose (N, L, d) pooled layers are cached."""
    return Reps(
        final=model.represent(vectors[:, -1]),
        layers={i: vectors[:, i - 1] for i in range(1, vectors.shape[1] + 1)},
    )
