"""Retrieval models over any Hugging Face backbone.

- spec.py: a model's description (lead.json, inherited scoring, depth), without torch
- encoders.py: dual encoder, ColBERT and cross-encoder, with their per-layer scores
- init.py: a model's initial directory; export.py: the files other libraries read
"""
