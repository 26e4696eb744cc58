"""The loss of one training step: the contrastive objective every model trains with, and the
scoring the distillation objective (lead.training.distillation) builds on.

Each process scores its LOCAL queries against the GLOBAL candidate set: the passage states the
loss needs (pooled per layer for a dual encoder, token states and their masks for ColBERT) are
gathered from every process, and the gather sends each process's loss gradient back to the
passages' owners (lead.distributed). Averaging gradients over processes then gives the
full-batch gradient when each process's loss is weighted by G x its share of the queries
(gradient_scale: exact), or 1/G of it, as the release's DDP training does, when weighted by its
share alone (release). With a cross-encoder every distribution covers only each query's own
group, and nothing is gathered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lead import distributed
from lead.losses.contrastive import contrastive_loss, gold_labels
from lead.modeling.encoders import Batch, Encoder, Reps

# A live model's token batch, or a cached teacher's (N, L, d) pooled vectors of every layer.
Inputs = Batch | Tensor


@dataclass
class ObjectiveOutput:
    """The loss to backpropagate, its detached parts (before coefficients, each the mean over
    the global batch once averaged over processes) and the layer weights."""

    loss: Tensor
    components: dict[str, Tensor]
    layer_weights: Tensor | None = None


@dataclass
class Scores:
    """One model's score matrices: final, one per selected layer, and the gold columns."""

    final: Tensor
    layers: list[Tensor]
    labels: Tensor

    def detached(self) -> Scores:
        return Scores(self.final.detach(), [s.detach() for s in self.layers], self.labels)


@dataclass(frozen=True)
class Batching:
    """Where this process's micro-batch sits in the global batch."""

    num_queries: int
    group_size: int
    share: float  # this process's queries / all processes' queries
    offset: int  # column of this process's first passage in the gathered candidate set
    world_size: int


class Objective(nn.Module):
    """The contrastive loss of one model (the warm-up's), and the scoring subclasses reuse.

    Subclasses add terms by overriding `terms`; `coefficients` names the terms and weights.
    """

    def __init__(self, student: Encoder, teacher: Encoder | None = None, *,
                 gradient_scale: str = "release", own_layer_similarity: bool = True):
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.exact = gradient_scale == "exact"
        kinds = {student.kind} | ({teacher.kind} if teacher is not None else set())
        self.own_group = "cross" in kinds
        self.own_layer_similarity = own_layer_similarity
        self.coefficients = {"student_ce": 1.0}

    @classmethod
    def needs_teacher(cls, job: Any) -> bool:
        return False

    @classmethod
    def build(cls, job: Any, student: Encoder, teacher: Encoder | None) -> Objective:
        """The objective of a training job (lead.training.job.TrainingJob)."""
        return cls(student, gradient_scale=job.optimisation["gradient_scale"])

    def layer_pairs(self, step: int) -> list[tuple[int, int]]:
        """The (teacher, student) layer pairs of optimizer step `step` (none here)."""
        return []

    def trainees(self) -> dict[str, nn.Module]:
        """The models this objective trains, by name."""
        return {"student": self.student}

    def forward(
        self,
        student_q: Batch,
        student_p: Batch,
        teacher_q: Inputs | None = None,
        teacher_p: Inputs | None = None,
        layer_pairs: Sequence[tuple[int, int]] = (),
        group_size: int = 1,
    ) -> ObjectiveOutput:
        """Loss of a local micro-batch: B queries, B*group_size passages ordered by group."""
        num_queries = student_q["input_ids"].shape[0]
        sizes = distributed.gather_sizes(num_queries, student_q["input_ids"].device)
        batching = Batching(num_queries, group_size, num_queries / sum(sizes),
                            group_size * sum(sizes[: distributed.rank()]), len(sizes))
        pairs = list(layer_pairs)
        student = self.scores(self.student, student_q, student_p, [s for _, s in pairs],
                              batching)
        values, layer_weights = self.terms(student, teacher_q, teacher_p, pairs, batching)
        values = {name: value for name, value in values.items() if name in self.coefficients}
        weighted = sum(self.coefficients[name] * value for name, value in values.items())
        scale = batching.world_size * batching.share
        loss = (scale if self.exact else batching.share) * weighted
        components = {name: (scale * value).detach() for name, value in values.items()}
        return ObjectiveOutput(loss, components, layer_weights)

    def terms(self, student: Scores, teacher_q: Inputs | None, teacher_p: Inputs | None,
              pairs: list[tuple[int, int]], batching: Batching
              ) -> tuple[dict[str, Tensor], Tensor | None]:
        """The loss terms by name, and the layer weights (None without a layer loss)."""
        return {"student_ce": contrastive_loss(student.final, student.labels)}, None

    def scores(self, model: Encoder, queries: Inputs, passages: Inputs, layers: Sequence[int],
               batching: Batching) -> Scores:
        """A model's scores of the local queries against the global candidates."""
        cached = isinstance(queries, Tensor)
        num_queries = queries.shape[0] if cached else queries["input_ids"].shape[0]
        num_passages = passages.shape[0] if cached else passages["input_ids"].shape[0]
        group_size = batching.group_size
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
            return Scores(final, [per_layer[i] for i in layers], labels)
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
        labels = gold_labels(num_queries, group_size, batching.offset, device=device)
        return Scores(final, [per_layer[i] for i in layers], labels)


def _cached(model: Encoder, vectors: Tensor) -> Reps:
    """The Reps a dual encoder would give for texts whose (N, L, d) pooled layers are cached."""
    return Reps(
        final=model.represent(vectors[:, -1]),
        layers={i: vectors[:, i - 1] for i in range(1, vectors.shape[1] + 1)},
    )
