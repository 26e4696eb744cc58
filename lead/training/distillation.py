"""The distillation objective of every method (docs/method.md, "Total loss").

    L = CE_student + [CE_teacher + KL(S || T)]  (teacher trained jointly)
        + KL(T || S)  (response, lead)  + L_layer  (lead)
        + MarginMSE over each query's own group  (marginmse)
        + KL(T || S) over each query's own group, as sentence-transformers computes it  (groupkl)

The teacher's scores come from the live teacher, or, for a frozen dual-encoder teacher, from
its cached per-layer vectors (lead.training.data.TeacherCache), which give the same scores. The
scoring, gathering and gradient scale are lead.training.objective's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lead import distributed
from lead.config import resolve
from lead.errors import ConfigError
from lead.losses.contrastive import contrastive_loss, own_group
from lead.losses.distillation import (
    group_kl,
    lead_layer_loss,
    margin_mse,
    response_kl,
    reverse_kl,
    teacher_layer_ce,
)
from lead.methods import DISTILLING, GROUP_TERMS, METHODS, TERMS, terms_of
from lead.modeling.encoders import Encoder
from lead.training.layers import LayerSelector
from lead.training.objective import Batching, Inputs, Objective, Scores


class DistillationObjective(Objective):
    """Holds the student and the teacher, and computes the method's loss.

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
        selector: LayerSelector | None = None,
    ):
        if method not in METHODS:
            raise ConfigError(f"method {method!r} is unknown; expected one of {list(METHODS)}")
        distilling = method in DISTILLING
        if distilling and teacher is None:
            raise ConfigError(f"method {method!r} needs a teacher")
        settings = resolve("distillation", dict(settings or {}))
        super().__init__(student, teacher if distilling else None,
                         gradient_scale=gradient_scale,
                         own_layer_similarity=settings["layer_similarity"] == "model")
        self.method = method
        self.selector = selector
        self.teacher_trainable = distilling and settings["teacher_trainable"]
        self.detach_targets = settings["detach_teacher_targets"]
        self.temperature = settings["temperature"]
        self.layer_temperature = settings["layer_temperature"]
        self.reweight = settings["reweight"]
        self.coefficients = self._active_terms(settings)
        if self.teacher is not None and not self.teacher_trainable:
            self.teacher.requires_grad_(False)
            self.teacher.eval()

    @classmethod
    def needs_teacher(cls, job: Any) -> bool:
        return job.method in DISTILLING

    @classmethod
    def build(cls, job: Any, student: Encoder, teacher: Encoder | None) -> DistillationObjective:
        if (set(METHODS[job.method].terms) & set(GROUP_TERMS)
                and job.optimisation["negatives_per_query"] < 1):
            raise ConfigError(
                f"method {job.method!r} compares each query's positive with its hard negatives: "
                "it needs optimisation.negatives_per_query >= 1"
            )
        selector = None
        if "layer" in METHODS[job.method].terms:
            selector = LayerSelector.from_settings(
                job.distillation["layers"], teacher.num_layers, student.num_layers,
                seed=job.optimisation["seed"],
            )
        return cls(student, teacher, job.method, job.distillation,
                   gradient_scale=job.optimisation["gradient_scale"], selector=selector)

    def layer_pairs(self, step: int) -> list[tuple[int, int]]:
        return self.selector.pairs(step) if self.selector is not None else []

    def trainees(self) -> dict[str, nn.Module]:
        trained = {"student": self.student}
        if self.teacher_trainable:
            trained["teacher"] = self.teacher
        return trained

    def _active_terms(self, settings: Mapping[str, Any]) -> dict[str, float]:
        """Coefficient of each term this method computes; terms weighted 0 are skipped."""
        coefficients = dict(settings["coefficients"])
        if not settings["reweight"]:
            coefficients["layer"] *= settings["layer_coefficient"]
        names = terms_of(self.method, self.teacher_trainable)
        active = {name: float(coefficients[name]) for name in names if coefficients[name] > 0}
        if not active:
            raise ConfigError(f"every loss term of method {self.method!r} has coefficient 0")
        return active

    def train(self, mode: bool = True) -> DistillationObjective:
        super().train(mode)
        if self.teacher is not None and not self.teacher_trainable:
            self.teacher.eval()
        return self

    def terms(self, student: Scores, teacher_q: Inputs | None, teacher_p: Inputs | None,
              pairs: list[tuple[int, int]], batching: Batching
              ) -> tuple[dict[str, Tensor], Tensor | None]:
        if "layer" in self.coefficients and not pairs:
            raise ValueError("method 'lead' needs at least one (teacher, student) layer pair")
        if set(self.coefficients) & set(GROUP_TERMS) and batching.group_size < 2:
            raise ValueError(f"method {self.method!r} needs at least one hard negative per query")
        values = {"student_ce": contrastive_loss(student.final, student.labels)}
        if self.teacher is None:
            return values, None
        if teacher_q is None or teacher_p is None:
            raise ValueError(f"method {self.method!r} needs the teacher's batches")
        with torch.set_grad_enabled(self.teacher_trainable and torch.is_grad_enabled()):
            teacher = self.scores(self.teacher, teacher_q, teacher_p, [t for t, _ in pairs],
                                  batching)
        # detach_teacher_targets: the student's terms send no gradient into the teacher, the
        # teacher still trains on its own terms (its CE, the reverse KL to the student).
        target = teacher.detached() if self.detach_targets else teacher
        learner = student.detached() if self.detach_targets else student
        if "teacher_ce" in self.coefficients:
            values["teacher_ce"] = contrastive_loss(teacher.final, teacher.labels)
        if "response_kl" in self.coefficients:
            values["response_kl"] = response_kl(target.final, student.final,
                                                temperature=self.temperature)
        if "reverse_kl" in self.coefficients:
            values["reverse_kl"] = reverse_kl(teacher.final, learner.final,
                                              temperature=self.temperature)
        if set(self.coefficients) & set(GROUP_TERMS):
            target_group = self._own_groups(target.final, batching)
            student_group = self._own_groups(student.final, batching)
            if "margin_mse" in self.coefficients:
                values["margin_mse"] = margin_mse(target_group, student_group)
            if "group_kl" in self.coefficients:
                values["group_kl"] = group_kl(target_group, student_group,
                                              temperature=self.temperature)
        layer_weights = None
        if "layer" in self.coefficients:
            values["layer"], layer_weights = lead_layer_loss(
                target.layers, student.layers, teacher.labels,
                temperature=self.temperature, layer_temperature=self.layer_temperature,
                reweight=self.reweight,
                teacher_ce=distributed.global_mean(
                    teacher_layer_ce(teacher.layers, teacher.labels), batching.num_queries
                ),
            )
        return {name: values[name] for name in TERMS if name in values}, layer_weights

    def _own_groups(self, scores: Tensor, batching: Batching) -> Tensor:
        """Each local query's scores of its own group, positive first: (B, g).

        Scores against the global candidates are sliced to this process's passages (columns
        offset .. offset + B*g, which keep their gradient) and then to each query's group; a
        pair with a cross-encoder is already scored by own groups.
        """
        if self.own_group:
            return scores
        width = batching.num_queries * batching.group_size
        return own_group(scores[:, batching.offset : batching.offset + width],
                         batching.group_size)
