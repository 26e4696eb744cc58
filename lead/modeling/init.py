"""A model's initial directory: the backbone its `init` names (lead.modeling.spec), with the
scoring it inherits, saved as a lead model directory.

`keep_layers` keeps a subset of blocks, the DistilBERT way of starting a shallower student. A
trained tokenizer replaces the model's own, with word embeddings re-initialised for its
vocabulary. `init: random` builds the backbone from `architecture` with the tokenizer's
vocabulary. Everything random is drawn from `seed`, so the same settings give byte-identical
directories.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from lead.errors import ConfigError, one_line
from lead.modeling.encoders import HEAD_FILE, build_encoder
from lead.modeling.spec import EncoderSpec, read_json, resolve_model_settings, source_dir

log = logging.getLogger(__name__)


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
    vocabulary = vocabulary_dir(settings, tokenizer_dir)
    if source is None and vocabulary is None:
        raise ConfigError("model.init 'random' needs a vocabulary: model.tokenizer.from (e.g. "
                          "package:bert-tiny) or model.tokenizer.train")
    tokenizer = _load_tokenizer(vocabulary or source)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if source is None:
            backbone = _random_backbone(settings["architecture"], tokenizer, spec)
        else:
            backbone = _pretrained_backbone(source)
            if vocabulary is not None and vocabulary != source:
                _new_vocabulary(backbone, tokenizer)
        if settings["keep_layers"]:
            keep_blocks(backbone, settings["keep_layers"])
        query_backbone = None if spec.shared_towers else copy.deepcopy(backbone)
        encoder = build_encoder(spec, backbone, tokenizer, query_backbone)
        if source is not None and encoder.kind == "dual" and encoder.head is not None:
            _dense_weights(source, encoder)
        elif source is not None and encoder.head is not None:
            _pretrained_head(source, encoder)
    return encoder.save(out_dir, made_by="init-model")


def vocabulary_dir(settings: Mapping[str, Any], trained: str | Path | None) -> Path | None:
    """Where the model's tokenizer comes from when it is not its init's own: a tokenizer
    trained here (`trained`) or the source `tokenizer.from` names."""
    chosen = settings["tokenizer"]["from"]
    if trained is not None and chosen is not None:
        raise ConfigError("model.tokenizer: `from` and `train` exclude each other")
    if trained is not None:
        return Path(trained)
    if chosen == "random":
        raise ConfigError("model.tokenizer.from 'random': a vocabulary comes from a model source")
    return source_dir(chosen) if chosen is not None else None


# Where checkpoints keep the head a lead model of that kind has: a sequence-classification
# model's one-logit classifier (a cross-encoder), ColBERT's projection (colbert-ir, PyLate).
PRETRAINED_HEADS = {
    "cross": ("classifier.weight", "classifier.bias"),
    "colbert": ("linear.weight",),
}


def _pretrained_head(source: Path, encoder: nn.Module) -> None:
    """Start the head from the init's own, when it has one of the head's shape; otherwise it
    keeps its documented initialisation (and the log says so)."""
    names = PRETRAINED_HEADS.get(encoder.kind, ())
    found = _checkpoint_tensors(source, names)
    own = dict(zip(("weight", "bias"), names, strict=False))
    state = encoder.head.state_dict()
    if set(found) != set(names) or any(found[own[key]].shape != state[key].shape
                                       for key in state if key in own):
        if found:
            log.info("%s: its head (%s) does not fit a %s head of shape %s: the head starts "
                     "fresh", source, ", ".join(f"{k} {tuple(v.shape)}" for k, v in found.items()),
                     encoder.kind, tuple(state["weight"].shape))
        return
    encoder.head.load_state_dict({key: found[name].float() for key, name in own.items()})
    log.info("%s: the %s head starts from the init's %s", source, encoder.kind, ", ".join(names))


def _dense_weights(source: Path, encoder: nn.Module) -> None:
    """The dense layers' weights: a lead directory's head file, or each Dense module's own
    weights in a sentence-transformers folder (module order)."""
    if (source / HEAD_FILE).is_file():
        encoder.head.load_state_dict(load_file(source / HEAD_FILE))
        return
    modules = sorted(read_json(source / "modules.json", []), key=lambda m: m.get("idx", 0))
    folders = [source / str(m.get("path", "")) for m in modules
               if str(m.get("type", "")).endswith("Dense")]
    for layer, folder in zip(encoder.head, folders, strict=True):
        names = ("linear.weight", "linear.bias") if layer.linear.bias is not None \
            else ("linear.weight",)
        found = _checkpoint_tensors(folder, names)
        if set(found) != set(names):
            raise ConfigError(f"{folder}: a Dense module without its weights ({', '.join(names)})")
        try:
            layer.linear.load_state_dict(
                {name.removeprefix("linear."): value.float() for name, value in found.items()})
        except RuntimeError as err:
            raise ConfigError(f"{folder}: the weights do not fit its config.json: "
                              f"{one_line(err)}") from err


def _checkpoint_tensors(source: Path, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The named tensors of a Hugging Face checkpoint folder (safetensors, sharded or not, or
    pytorch_model.bin), those it has."""
    from safetensors import safe_open

    index = read_json(source / "model.safetensors.index.json", {}).get("weight_map", {})
    files = {name: source / index[name] for name in names if name in index}
    if not index and (source / "model.safetensors").is_file():
        files = dict.fromkeys(names, source / "model.safetensors")
    found = {}
    for name, path in files.items():
        with safe_open(str(path), framework="pt") as tensors:
            if name in tensors.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                found[name] = tensors.get_tensor(name)
    if not files and (source / "pytorch_model.bin").is_file():
        state = _torch_weights(source / "pytorch_model.bin")
        found = {name: state[name] for name in names
                 if isinstance(state.get(name), torch.Tensor)}
    return found



def _load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot load a tokenizer: {one_line(err)}") from err


def _pretrained_backbone(path: Path) -> nn.Module:
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot load the model: {one_line(err)}") from err


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


def _torch_weights(path: Path) -> dict[str, torch.Tensor]:
    """A pickled state dict, loaded with torch's weights-only unpickler (never arbitrary code)."""
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise ConfigError(f"{path}: not a weights-only PyTorch state dict ({one_line(err)}); "
                          "save the weights as safetensors") from err
    if not isinstance(state, dict):  # a bare tensor, a list, a number
        raise ConfigError(f"{path}: is a pickled {type(state).__name__}, not a state dict "
                          "(names mapped to tensors); save the weights as safetensors")
    return state
