"""Tiny, hub-free models for the modeling tests: a WordPiece tokenizer trained on a few
sentences and random-weight Transformers built through lead's own `init: random` path."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from lead.modeling.encoders import collate
from lead.modeling.init import init_model

TEXTS = [
    "dense retrieval maps queries and passages to vectors",
    "a small student learns from a large teacher",
    "liberal feature based distillation aligns intermediate layers",
    "the teacher scores every passage in the batch",
    "cats sleep on warm mats in the afternoon",
    "rivers flow to the sea through green valleys",
    "the cross encoder reads the query and the passage together",
    "late interaction keeps one vector per token",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused1]", "[unused2]"]
# `init: random` settings of a 3-block, 16-wide model (the tokenizer gives the vocabulary)
RANDOM = {
    "init": "random",
    "architecture": {"num_hidden_layers": 3, "hidden_size": 16, "intermediate_size": 32},
}


def make_tokenizer(path: Path, vocab_size: int = 120, lowercase: bool = True) -> Path:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(
        TEXTS, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL)
    )
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    wrapped.save_pretrained(path)
    return path


def make_model(
    path: Path,
    tokenizer: Path,
    *,
    kind: str = "dual",
    layers: int = 2,
    hidden: int = 16,
    pooling: str = "cls",
    shared_towers: bool = True,
    model_type: str = "bert",
    colbert_dim: int | None = None,
    seed: int = 0,
    **spec,
) -> Path:
    settings = {
        "init": "random",
        "kind": kind,
        "pooling": pooling,
        "shared_towers": shared_towers,
        "colbert_dim": colbert_dim,
        **spec,
        "architecture": {
            "model_type": model_type,
            "num_hidden_layers": layers,
            "hidden_size": hidden,
            "num_attention_heads": 2,
            "intermediate_size": 2 * hidden,
        },
    }
    return init_model(settings, path, tokenizer_dir=tokenizer, seed=seed)


def batch(encoder, texts: list[str]) -> dict:
    """Texts tokenized alone ([CLS] text [SEP]) and padded, as the pipeline's token files."""
    ids = encoder.tokenizer(texts)["input_ids"]
    return collate(ids, encoder.pad_id)


def spread_weights(model_dir: Path, seed: int, std: float = 0.3) -> Path:
    """Redraw every weight matrix with a large std and save again.

    Freshly initialised Transformers give almost identical vectors to every text (scores
    within 1e-4 of each other); spread weights make score distributions and gradients that a
    test can tell apart.
    """
    import torch

    from lead.modeling.encoders import load_encoder

    encoder = load_encoder(model_dir)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in encoder.parameters():
            if parameter.dim() >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    encoder.save(model_dir)
    return model_dir
