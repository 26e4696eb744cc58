"""Retrieval models: dual encoder, ColBERT and cross-encoder over any Hugging Face backbone."""

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

__all__ = [
    "ColbertEncoder",
    "CrossEncoder",
    "DualEncoder",
    "Encoder",
    "EncoderSpec",
    "Reps",
    "collate",
    "load_encoder",
]
