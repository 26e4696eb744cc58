"""Retrieval and distillation losses: pure functions over score matrices.

The maths lives here, testable on hand-made tensors; the training objectives
(lead.training.objective, lead.training.distillation) call these functions and log each term
by name. The contrastive loss (all training) and the distillation losses live in separate
modules, and this package loads each only when one of its functions is asked for: stages
that do not distil never import the distillation losses, so the workflow, which reruns a stage
when code it imports changes, reruns only distillations when those change.
"""

from importlib import import_module

_EXPORTS = {
    "contrastive_loss": "contrastive",
    "full_precision": "contrastive",
    "gold_labels": "contrastive",
    "own_group": "contrastive",
    "group_kl": "distillation",
    "layer_weights": "distillation",
    "lead_layer_loss": "distillation",
    "margin_mse": "distillation",
    "response_kl": "distillation",
    "reverse_kl": "distillation",
    "teacher_layer_ce": "distillation",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lead.losses' has no attribute {name!r}")
    return getattr(import_module(f"lead.losses.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
