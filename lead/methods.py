"""The distillation methods, as data: their names, the loss terms each one trains with, and
what the report compares.

Torch-free on purpose: the command line, the plan (which jobs, which read the teacher's layer
cache) and the report read it without loading a model. The maths of each term is in
lead.losses; lead.training.distillation computes the terms a method names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    terms: tuple[str, ...]  # the student's loss terms, its contrastive loss first
    summary: str

    @property
    def distils(self) -> bool:
        """Whether the method reads the teacher (every term but the student's own)."""
        return self.terms != ("student_ce",)


METHODS = {
    method.name: method
    for method in (
        Method("none", ("student_ce",), "the student's contrastive loss alone"),
        Method("response", ("student_ce", "response_kl"),
               "+ KL(teacher || student) of the final scores over the batch's candidates"),
        Method("lead", ("student_ce", "response_kl", "layer"),
               "+ LEAD's re-weighted KL at k (teacher, student) layer pairs"),
        # The recipes a user would otherwise run (sentence-transformers' distillation losses),
        # over each query's own group: its positive and its hard negatives.
        Method("marginmse", ("student_ce", "margin_mse"),
               "+ MarginMSE: the MSE of the student's and the teacher's margins "
               "s(q, pos) - s(q, neg), one per hard negative"),
        Method("groupkl", ("student_ce", "group_kl"),
               "+ KL(teacher || student) over each query's own positive and negatives"),
    )
}
DISTILLING = tuple(name for name, method in METHODS.items() if method.distils)
# A jointly trained teacher's own terms (distillation.teacher_trainable), added to any method
# that distils.
JOINT_TERMS = ("teacher_ce", "reverse_kl")
# Every loss term, in the order of the training log's columns; each has a coefficient under
# distillation.coefficients.
TERMS = ("student_ce", "teacher_ce", "response_kl", "margin_mse", "group_kl", "reverse_kl",
         "layer")
# Terms over each query's own group (positive and hard negatives): they need at least one
# negative per query (optimisation.negatives_per_query >= 1).
GROUP_TERMS = ("margin_mse", "group_kl")

# The report tests LEAD against each baseline present, and every variant against LEAD.
LEAD = "lead"
BASELINES = ("response", "none", "marginmse", "groupkl")


def terms_of(method: str, teacher_trainable: bool) -> tuple[str, ...]:
    """The terms a method computes, the jointly trained teacher's included."""
    own = METHODS[method].terms
    if teacher_trainable and METHODS[method].distils:
        return tuple(term for term in TERMS if term in own or term in JOINT_TERMS)
    return own
