"""Retrieval models (dual encoder, ColBERT, cross-encoder), layer selection and the objective."""

from lead.modeling.encoders import (
    ColbertEncoder,
    CrossEncoder,
    DualEncoder,
    Encoder,
    EncoderSpec,
    Reps,
    collate,
    load_encoder,
)
from lead.modeling.layers import LayerSelector
from lead.modeling.objective import DistillationObjective, ObjectiveOutput

__all__ = [
    "ColbertEncoder",
    "CrossEncoder",
    "DistillationObjective",
    "DualEncoder",
    "Encoder",
    "EncoderSpec",
    "LayerSelector",
    "ObjectiveOutput",
    "Reps",
    "collate",
    "load_encoder",
]
