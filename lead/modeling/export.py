"""What a lead model directory carries so that other libraries score it exactly as lead does.

A shared-tower dual encoder is also a sentence-transformers model: Transformer, Pooling (the
model's own cls or mean pooling), its Dense layers if it has any and, for a cosine model,
Normalize; its similarity function and its query and passage prompts (as `prompts.query` and
`prompts.document`, which encode_query and encode_document apply) are recorded in
config_sentence_transformers.json. sentence-transformers has one maximum length
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
import re
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from lead.modeling.spec import EncoderSpec

MODEL_CARD = "README.md"


def write_sentence_transformers(encoder, model_dir: Path) -> None:
    """modules.json (Transformer, Pooling, the Dense layers, Normalize for a cosine model), each
    module's files, the similarity function and the prompts sentence-transformers' encode_query
    and encode_document apply."""
    from safetensors.torch import save_file

    spec = encoder.spec
    paths = ["", "1_Pooling", *(f"{2 + i}_Dense" for i in range(len(spec.dense)))]
    types = ["Transformer", "Pooling", *("Dense" for _ in spec.dense)]
    if spec.similarity == "cosine":
        paths.append(f"{len(paths)}_Normalize")
        types.append("Normalize")
    modules = [{"idx": i, "name": str(i), "path": path,
                "type": f"sentence_transformers.models.{kind}"}
               for i, (path, kind) in enumerate(zip(paths, types, strict=True))]
    for path in paths[1:]:
        (model_dir / path).mkdir()
    pooling = {
        "word_embedding_dimension": encoder.hidden_size,
        "pooling_mode_cls_token": spec.pooling == "cls",
        "pooling_mode_mean_tokens": spec.pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    _write_json(model_dir / "1_Pooling" / "config.json", pooling)
    for i, layer in enumerate(spec.dense):
        folder = model_dir / paths[2 + i]
        activation = "linear.Identity" if layer["activation"] == "Identity" \
            else f"activation.{layer['activation']}"
        _write_json(folder / "config.json", {
            "in_features": layer["in_features"], "out_features": layer["out_features"],
            "bias": layer["bias"], "activation_function": f"torch.nn.modules.{activation}"})
        weights = encoder.head[i].linear.state_dict()
        save_file({f"linear.{k}": v.detach().cpu().contiguous() for k, v in weights.items()},
                  folder / "model.safetensors")
    versions = {}
    for package, key in (("sentence-transformers", "sentence_transformers"),
                         ("transformers", "transformers"), ("torch", "pytorch")):
        try:
            versions[key] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    prompts = {name: text for name, text in (("query", spec.query_prompt),
                                              ("document", spec.passage_prompt)) if text}
    settings = {
        "model_type": "SentenceTransformer",
        "__version__": versions,
        "prompts": prompts,
        "default_prompt_name": None,
        "similarity_fn_name": spec.similarity,
    }
    _write_json(model_dir / "modules.json", modules)
    _write_json(model_dir / "sentence_bert_config.json",
                {"max_seq_length": spec.passage_max_length, "do_lower_case": False})
    _write_json(model_dir / "config_sentence_transformers.json", settings)


# Hub ids of the packaged checkpoints (lead.modeling.spec.PACKAGED_MODELS), for a card's
# base_model, and the licences they were published under.
PACKAGED_HUB_IDS = {
    "package:minilm": ("sentence-transformers/all-MiniLM-L6-v2", "apache-2.0"),
    "package:mpnet": ("sentence-transformers/all-mpnet-base-v2", "apache-2.0"),
}


def write_model_card(model_dir: Path, *, name: str, facts: Mapping[str, Any],
                     base_model: str | None = None) -> None:
    """A README.md: the Hugging Face metadata header (library, pipeline tag, base model,
    licence), how the model was made and how to score it. `name` is the folder's final name
    (the card is written before the folder is renamed into place); paths in `facts` are
    reduced to their last component, so a card never names the machine it was made on."""
    spec = EncoderSpec.read(model_dir)
    sentence_transformers = spec.kind == "dual" and spec.shared_towers
    hub_id, licence = _base(base_model)
    header = ["---"]
    if sentence_transformers:
        header += ["library_name: sentence-transformers", "pipeline_tag: sentence-similarity"]
    header += ["tags:", *(f"- {tag}" for tag in (
        ["sentence-transformers", "feature-extraction"] if sentence_transformers else [])
        + ["dense-retrieval" if spec.kind == "dual" else f"{spec.kind}-retrieval", "lead",
           "knowledge-distillation"])]
    if hub_id:
        header.append(f"base_model: {hub_id}")
    header += [f"license: {licence}", "---", ""]
    lines = [
        *header,
        f"# {name}",
        "",
        "Trained with lead, LEAD distillation for dense retrieval (docs/method.md).",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {_cell(_public(value))} |" for key, value in facts.items()),
        f"| kind | {spec.kind} |",
        f"| pooling | {spec.pooling} |",
        f"| similarity | {spec.similarity} (scale {spec.scale:g}) |",
        f"| max length | queries {spec.query_max_length}, passages {spec.passage_max_length} "
        "tokens |",
        *([f"| prompts | query {spec.query_prompt!r}, passage {spec.passage_prompt!r} |"]
          if spec.query_prompt or spec.passage_prompt else []),
        "",
        ("Titled passages are encoded as the pair (title, text): `[CLS] title [SEP] text [SEP]`."
         if spec.titles == "pair" else "Titled passages are encoded as the text `title text`."),
    ]
    if licence == "other":
        lines += ["", "Licence: that of the base model and of the training data."]
    if sentence_transformers:
        lines += [
            "",
            "```python",
            "from sentence_transformers import SentenceTransformer",
            f"model = SentenceTransformer({name!r})  # this folder; scores as lead does",
            "queries = model.encode_query([...])",
            "passages = model.encode_document([...])",
            "```",
        ]
    (model_dir / MODEL_CARD).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _base(init: str | None) -> tuple[str | None, str]:
    """The hub id a card names as base model (a packaged checkpoint's, or an init that is a
    hub id), and its licence when known."""
    if init in PACKAGED_HUB_IDS:
        return PACKAGED_HUB_IDS[init]
    if init and re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", init) and not Path(init).exists():
        return init, "other"
    return None, "other"


def _public(value: Any) -> Any:
    """A value fit for a card: a filesystem path (absolute, or naming something that exists)
    becomes its last component."""
    if isinstance(value, Path) or (isinstance(value, str) and (
            value.startswith("/") or ("/" in value and Path(value).exists()))):
        return Path(value).name
    return value


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_cell(v)}" for k, v in value.items())
    return str(value).replace("|", "\\|")


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")
