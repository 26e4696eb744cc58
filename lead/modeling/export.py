"""What a lead model directory carries so that other libraries score it exactly as lead does.

A shared-tower dual encoder is also a sentence-transformers model: Transformer, Pooling (the
model's own cls or mean pooling) and, for a cosine model, Normalize; its similarity function
is recorded in config_sentence_transformers.json. sentence-transformers has one maximum length
for every text, so the passage length is written there; lead.json records both lengths, and
queries longer than the query length are the only texts the two libraries cut differently.
lead encodes a titled passage as the pair (title, text), i.e. `[CLS] title [SEP] text [SEP]`
with the text's token type ids 1; pass the pair the same way to score titled passages alike.

ColBERT and cross-encoder directories are lead's own format (see docs/method.md for why no
PyLate or sentence-transformers CrossEncoder layout: the release's ColBERT replaces [CLS] by its
markers and has no projection, and its cross-encoder head reads the raw [CLS] state, not BERT's
tanh pooler, neither of which those layouts express).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from lead.modeling.spec import EncoderSpec

MODEL_CARD = "README.md"


def write_sentence_transformers(encoder, model_dir: Path) -> None:
    """modules.json, the pooling and normalisation modules and the similarity function."""
    spec = encoder.spec
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"},
    ]
    if spec.similarity == "cosine":
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        (model_dir / "2_Normalize").mkdir()
    pooling = {
        "word_embedding_dimension": encoder.hidden_size,
        "pooling_mode_cls_token": spec.pooling == "cls",
        "pooling_mode_mean_tokens": spec.pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    versions = {}
    for package, key in (("sentence-transformers", "sentence_transformers"),
                         ("transformers", "transformers"), ("torch", "pytorch")):
        try:
            versions[key] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    settings = {
        "model_type": "SentenceTransformer",
        "__version__": versions,
        "prompts": {},
        "default_prompt_name": None,
        "similarity_fn_name": spec.similarity,
    }
    _write_json(model_dir / "modules.json", modules)
    (model_dir / "1_Pooling").mkdir()
    _write_json(model_dir / "1_Pooling" / "config.json", pooling)
    _write_json(model_dir / "sentence_bert_config.json",
                {"max_seq_length": spec.passage_max_length, "do_lower_case": False})
    _write_json(model_dir / "config_sentence_transformers.json", settings)


def write_model_card(model_dir: Path, *, name: str, facts: Mapping[str, Any]) -> None:
    """A README.md describing how the model was made and how to score it."""
    spec = EncoderSpec.read(model_dir)
    lines = [
        f"# {name}",
        "",
        "Trained with lead, LEAD distillation for dense retrieval (docs/method.md).",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {_cell(value)} |" for key, value in facts.items()),
        f"| kind | {spec.kind} |",
        f"| pooling | {spec.pooling} |",
        f"| similarity | {spec.similarity} (scale {spec.scale:g}) |",
        f"| max length | queries {spec.query_max_length}, passages {spec.passage_max_length} "
        "tokens |",
        "",
        ("Titled passages are encoded as the pair (title, text): `[CLS] title [SEP] text [SEP]`."
         if spec.titles == "pair" else "Titled passages are encoded as the text `title text`."),
    ]
    if spec.kind == "dual" and spec.shared_towers:
        lines += [
            "",
            "```python",
            "from sentence_transformers import SentenceTransformer",
            f"model = SentenceTransformer({str(model_dir.name)!r})  # scores as lead does",
            "```",
        ]
    (model_dir / MODEL_CARD).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_cell(v)}" for k, v in value.items())
    return str(value).replace("|", "\\|")


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")
