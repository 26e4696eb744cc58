"""Encoders over any Hugging Face model: dual encoder, ColBERT and cross-encoder.

Every encoder exposes the pooled (dual), token-level (ColBERT) or [CLS]-scored (cross) state
of each Transformer block, because LEAD aligns intermediate layers. "Layer i" is the output of
block i, 1-based: hidden_states[i]; hidden_states[0] is the embedding output and not a layer.
Layer counts and sizes come from the model config, never from a model's name.

A model is scored the way it was trained: its `similarity` (dot or cosine) and `scale` (the
inverse temperature a cosine model was trained with) are part of its description, inherited
from its initialisation (lead.modeling.spec). Scores, MaxSim and everything built on them are
computed in fp32 even when the encoders run under bf16 autocast.

A model directory holds the backbone (save_pretrained, safetensors), its tokenizer, lead.json
(how to use it: kind, pooling, similarity, towers, max lengths) and, for a shared-tower dual
encoder, the sentence-transformers files (lead.modeling.export).
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from lead.errors import ConfigError, one_line
from lead.io import atomic_path, share_as_umask_allows
from lead.losses.contrastive import own_group
from lead.modeling.export import write_sentence_transformers
from lead.modeling.spec import EncoderSpec

QUERY_TOWER_DIR = "query_model"
HEAD_FILE = "lead_head.safetensors"
# The release's ColBERT markers: [Q] and [D] take the place of [CLS].
COLBERT_MARKERS = {"query": "[unused1]", "passage": "[unused2]"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")

Batch = dict[str, Tensor]


@dataclass
class Reps:
    """A batch of texts at the final layer and at the requested layers (1-based).

    dual: final (N, d) the model's representation (pooled last block, L2-normalised for a
    cosine model); layers[i] (N, d) the raw pooled block i; mask None.
    colbert: final (N, T, d') L2-normalised token vectors of the last block (projected when
    the model has a projection); layers[i] (N, T, h) raw token states of block i, the last
    block included; mask (N, T) the positions MaxSim covers.
    """

    final: Tensor
    layers: dict[int, Tensor] = field(default_factory=dict)
    mask: Tensor | None = None


def collate(token_ids: Sequence[Sequence[int]], pad_id: int) -> Batch:
    """Pad token id lists to the longest one: {"input_ids", "attention_mask"} (N, T) longs."""
    if not token_ids or any(len(row) == 0 for row in token_ids):
        raise ValueError("collate needs at least one row and no empty row")
    width = max(len(row) for row in token_ids)
    input_ids = torch.full((len(token_ids), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(token_ids), width), dtype=torch.long)
    for i, row in enumerate(token_ids):
        input_ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        attention_mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def fp32_scores(function):
    """Run a scoring method with autocast off, on fp32 (or fp64) inputs."""

    def wrapper(self, *tensors: Tensor | None, **options: Any) -> Tensor:
        device = next((t.device.type for t in tensors if t is not None), "cpu")
        with torch.autocast(device, enabled=False):
            return function(self, *(_full(t) for t in tensors), **options)

    wrapper.__doc__ = function.__doc__
    wrapper.__name__ = function.__name__
    return wrapper


def _full(tensor: Tensor | None) -> Tensor | None:
    if tensor is None or not tensor.is_floating_point():
        return tensor
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


class Encoder(nn.Module):
    """A Hugging Face backbone (one, or one per tower) used as a retrieval model."""

    kind: ClassVar[str]

    def __init__(self, backbone: nn.Module, tokenizer: Any, spec: EncoderSpec,
                 query_backbone: nn.Module | None = None):
        super().__init__()
        if spec.kind != self.kind:
            raise ConfigError(f"a {type(self).__name__} cannot be built for kind {spec.kind!r}")
        if spec.shared_towers != (query_backbone is None):
            raise ConfigError("shared_towers must match whether a separate query tower is given")
        self.backbone = backbone
        self.query_backbone = query_backbone
        self.tokenizer = tokenizer
        self.spec = spec
        self.head: nn.Module | None = None  # weights beyond the backbone, saved in HEAD_FILE
        config = backbone.config
        self.num_layers: int = config.num_hidden_layers
        self.hidden_size: int = config.hidden_size
        pad_id = tokenizer.pad_token_id
        self.pad_id: int = pad_id if pad_id is not None else (config.pad_token_id or 0)
        for tower in (backbone, query_backbone):
            if tower is not None:
                _freeze_unused_pooler(tower)

    @property
    def embedding_dim(self) -> int:
        """The size of one final vector (what the encode stage writes)."""
        return self.hidden_size

    def check_layers(self, layers: Sequence[int]) -> None:
        for layer in layers:
            if not 1 <= layer <= self.num_layers:
                raise ConfigError(
                    f"layer {layer} does not exist: this model has Transformer blocks "
                    f"1..{self.num_layers} (the embedding output is not a layer)"
                )

    def _hidden_states(self, backbone: nn.Module, batch: Batch) -> tuple[Tensor, ...]:
        """Every block's output: index i is block i, index 0 the embedding output."""
        accepted = inspect.signature(backbone.forward).parameters
        inputs = {name: value for name, value in batch.items() if name in accepted}
        states = backbone(**inputs, output_hidden_states=True).hidden_states
        if len(states) != self.num_layers + 1:
            raise ConfigError(
                f"the backbone returned {len(states)} hidden states, expected "
                f"{self.num_layers + 1} (embeddings + {self.num_layers} blocks)"
            )
        return states

    def encode_query(self, batch: Batch, layers: Sequence[int] = ()) -> Reps:
        tower = self.backbone if self.query_backbone is None else self.query_backbone
        return self._encode(tower, batch, layers, "query")

    def encode_passage(self, batch: Batch, layers: Sequence[int] = ()) -> Reps:
        return self._encode(self.backbone, batch, layers, "passage")

    def _encode(self, backbone: nn.Module, batch: Batch, layers: Sequence[int], role: str) -> Reps:
        raise ConfigError(f"a {self.kind} model has no query or passage representation; "
                          "use score_groups")

    def compute_similarity(
        self, q: Tensor, p: Tensor, q_mask: Tensor | None = None, p_mask: Tensor | None = None
    ) -> Tensor:
        """Final-layer scores of every query against every passage (fp32)."""
        raise ConfigError(f"a {self.kind} model scores pairs jointly; use score_groups")

    def layer_similarity(
        self, q: Tensor, p: Tensor, q_mask: Tensor | None = None, p_mask: Tensor | None = None,
        *, own: bool = True,
    ) -> Tensor:
        """Scores at an intermediate layer (fp32); `own`: with the model's own similarity and
        scale (distillation.layer_similarity: model), else raw dot products (`dot`)."""
        raise ConfigError(f"a {self.kind} model scores pairs jointly; use score_groups")

    def score_groups(
        self, query_batch: Batch, passage_batch: Batch, group_size: int, layers: Sequence[int] = (),
        *, own_layer_similarity: bool = True,
    ) -> tuple[Tensor, dict[int, Tensor]]:
        """Scores of each query's own group: (B, g) finally and at each requested layer."""
        query = self.encode_query(query_batch, layers)
        passage = self.encode_passage(passage_batch, layers)
        mask_q, mask_p = query.mask, passage.mask
        final = own_group(self.compute_similarity(query.final, passage.final, mask_q, mask_p),
                          group_size)
        per_layer = {
            i: own_group(self.layer_similarity(query.layers[i], passage.layers[i], mask_q, mask_p,
                                               own=own_layer_similarity), group_size)
            for i in layers
        }
        return final, per_layer

    def save(self, out_dir: str | Path, *, made_by: str | None = None) -> Path:
        """Write a complete model directory atomically (an existing one is replaced), marked
        as the output of the command `made_by` when a command writes it."""
        out_dir = Path(out_dir)
        with atomic_path(out_dir, directory=True, made_by=made_by) as tmp:
            tmp.mkdir()
            self.backbone.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            if self.query_backbone is not None:
                self.query_backbone.save_pretrained(tmp / QUERY_TOWER_DIR)
            if self.head is not None:
                state = self.head.state_dict()
                save_file({k: v.detach().cpu().contiguous() for k, v in state.items()},
                          tmp / HEAD_FILE)
            self.spec.write(tmp)
            if self.kind == "dual" and self.query_backbone is None:
                write_sentence_transformers(self, tmp)
            share_as_umask_allows(tmp)
        return out_dir


class DualEncoder(Encoder):
    """Pooled block outputs, scored by a dot product or, for cosine models, scale x cosine.

    A model with dense layers (a sentence-transformers folder's Dense modules) passes its
    pooled last block through them, as sentence-transformers does, before normalising; the
    intermediate layers' pooled states are scored without them (they were trained on the last
    block's output only)."""

    kind = "dual"

    def __init__(self, backbone: nn.Module, tokenizer: Any, spec: EncoderSpec,
                 query_backbone: nn.Module | None = None):
        super().__init__(backbone, tokenizer, spec, query_backbone)
        if spec.dense:
            self.head = dense_layers(spec.dense)

    @property
    def embedding_dim(self) -> int:
        return self.spec.embedding_dim or self.hidden_size

    def _encode(self, backbone: nn.Module, batch: Batch, layers: Sequence[int], role: str) -> Reps:
        self.check_layers(layers)
        states = self._hidden_states(backbone, batch)
        mask = batch["attention_mask"]
        return Reps(
            final=self.represent(self.pool(states[-1], mask)),
            layers={i: self.pool(states[i], mask) for i in layers},
        )

    def pool(self, states: Tensor, mask: Tensor) -> Tensor:
        if self.spec.pooling == "cls":
            return states[:, 0]
        weights = mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def represent(self, pooled: Tensor) -> Tensor:
        """The final vector of a pooled last block: through the dense layers, if any, and unit
        length for a cosine model."""
        return self._unit(self.head(pooled) if self.head is not None else pooled)

    def _unit(self, vectors: Tensor) -> Tensor:
        return F.normalize(vectors, dim=-1) if self.spec.similarity == "cosine" else vectors

    @fp32_scores
    def compute_similarity(
        self, q: Tensor, p: Tensor, q_mask: Tensor | None = None, p_mask: Tensor | None = None
    ) -> Tensor:
        return self.spec.scale * (q @ p.T)

    @fp32_scores
    def layer_similarity(
        self, q: Tensor, p: Tensor, q_mask: Tensor | None = None, p_mask: Tensor | None = None,
        *, own: bool = True,
    ) -> Tensor:
        if not own:
            return q @ p.T
        return self.spec.scale * (self._unit(q) @ self._unit(p).T)


ACTIVATION_MODULES: dict[str, type[nn.Module]] = {
    "Identity": nn.Identity, "Tanh": nn.Tanh, "ReLU": nn.ReLU, "GELU": nn.GELU,
    "Sigmoid": nn.Sigmoid,
}


def dense_layers(layers: Sequence[Mapping[str, Any]]) -> nn.Sequential:
    """sentence-transformers' Dense modules: each a linear layer then its activation. Module i
    is `i.linear` (`i.linear.weight`, `i.linear.bias` in the head file)."""
    return nn.Sequential(*(
        nn.Sequential(OrderedDict(
            linear=nn.Linear(layer["in_features"], layer["out_features"], bias=layer["bias"]),
            activation=ACTIVATION_MODULES[layer["activation"]](),
        ))
        for layer in layers
    ))


class ColbertEncoder(Encoder):
    """MaxSim over token vectors, as released: L2-normalised last-block tokens (no projection
    unless `colbert_dim` is set), raw block states in between and at the last block for the
    layer loss, [unused1]/[unused2] markers in place of [CLS], and queries padded with attended
    [MASK] tokens up to the query length (MaxSim then sums over every query position)."""

    kind = "colbert"

    def __init__(self, backbone: nn.Module, tokenizer: Any, spec: EncoderSpec,
                 query_backbone: nn.Module | None = None):
        super().__init__(backbone, tokenizer, spec, query_backbone)
        if spec.colbert_dim is not None:
            self.head = nn.Linear(self.hidden_size, spec.colbert_dim, bias=False)
        self.marker_ids = {}
        if spec.colbert_markers:
            self.marker_ids = {role: _token_id(tokenizer, token, "colbert_markers")
                               for role, token in COLBERT_MARKERS.items()}
        self.mask_id = None
        if spec.colbert_query_augmentation:
            self.mask_id = _token_id(tokenizer, tokenizer.mask_token or "[MASK]",
                                     "colbert_query_augmentation")

    @property
    def embedding_dim(self) -> int:
        return self.spec.colbert_dim or self.hidden_size

    def _encode(self, backbone: nn.Module, batch: Batch, layers: Sequence[int], role: str) -> Reps:
        self.check_layers(layers)
        batch = self.prepare(batch, role)
        states = self._hidden_states(backbone, batch)
        last = states[-1] if self.head is None else self.head(states[-1])
        return Reps(
            final=F.normalize(last, dim=-1),
            layers={i: states[i] for i in layers},
            mask=batch["attention_mask"],
        )

    def prepare(self, batch: Batch, role: str) -> Batch:
        """The release's input: the role's marker at position 0; queries padded with attended
        [MASK] tokens to `query_max_length`."""
        input_ids, mask = batch["input_ids"].clone(), batch["attention_mask"].clone()
        if role in self.marker_ids:
            input_ids[:, 0] = self.marker_ids[role]
        if role == "query" and self.mask_id is not None:
            width = max(self.spec.query_max_length, input_ids.shape[1])
            extra = width - input_ids.shape[1]
            input_ids = F.pad(input_ids, (0, extra), value=self.pad_id)
            mask = F.pad(mask, (0, extra), value=0)
            input_ids = input_ids.masked_fill(mask == 0, self.mask_id)
            mask = torch.ones_like(mask)
        return {**batch, "input_ids": input_ids, "attention_mask": mask}

    @fp32_scores
    def compute_similarity(
        self, q: Tensor, p: Tensor, q_mask: Tensor | None = None, p_mask: Tensor | None = None
    ) -> Tensor:
        if q_mask is None or p_mask is None:
            raise ValueError("MaxSim needs the query and passage attention masks")
        return maxsim(q, p, q_mask, p_mask)

    @fp32_scores
    def layer_similarity(
        self, q: Tensor, p: Tensor, q_mask: Tensor | None = None, p_mask: Tensor | None = None,
        *, own: bool = True,
    ) -> Tensor:
        if q_mask is None or p_mask is None:
            raise ValueError("MaxSim needs the query and passage attention masks")
        return maxsim(q, p, q_mask, p_mask)


def maxsim(q: Tensor, p: Tensor, q_mask: Tensor, p_mask: Tensor) -> Tensor:
    """Σ over query positions of the max over real passage tokens of the dot product.

    q (Nq, Tq, d), p (Np, Tp, d), masks 1 where a position counts -> (Nq, Np). Passage padding
    never wins the max; query positions with mask 0 add nothing.
    """
    token_scores = torch.einsum("qtd,pud->qptu", q, p)
    padding = ~p_mask.bool()[None, :, None, :]
    token_scores = token_scores.masked_fill(padding, torch.finfo(token_scores.dtype).min)
    best = token_scores.amax(dim=-1)
    return (best * q_mask.to(best.dtype)[:, None, :]).sum(dim=-1)


class CrossEncoder(Encoder):
    """Scores [CLS] q [SEP] title [SEP] text [SEP] with a linear head on [CLS], at every block
    alike; as released, token type ids are all zero and the head starts from N(0, 0.02)."""

    kind = "cross"

    def __init__(self, backbone: nn.Module, tokenizer: Any, spec: EncoderSpec,
                 query_backbone: nn.Module | None = None):
        super().__init__(backbone, tokenizer, spec, query_backbone)
        self.head = nn.Linear(self.hidden_size, 1)
        nn.init.normal_(self.head.weight, mean=0.0, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.max_length: int | None = getattr(backbone.config, "max_position_embeddings", None)

    def score_groups(
        self, query_batch: Batch, passage_batch: Batch, group_size: int, layers: Sequence[int] = (),
        *, own_layer_similarity: bool = True,
    ) -> tuple[Tensor, dict[int, Tensor]]:
        self.check_layers(layers)
        num_queries = query_batch["input_ids"].shape[0]
        pairs = join_pairs(
            query_batch, passage_batch, group_size, self.pad_id, self.max_length,
            segments=self.spec.cross_token_types == "segments",
        )
        states = self._hidden_states(self.backbone, pairs)

        def scores(block: Tensor) -> Tensor:
            with torch.autocast(block.device.type, enabled=False):
                return self.head(_full(block[:, 0])).view(num_queries, group_size)

        return scores(states[-1]), {i: scores(states[i]) for i in layers}


def join_pairs(
    query_batch: Batch,
    passage_batch: Batch,
    group_size: int,
    pad_id: int,
    max_length: int | None = None,
    *,
    segments: bool = False,
) -> Batch:
    """[CLS] q [SEP] p [SEP] for each query and each passage of its group.

    Both sides were tokenized alone as [CLS] text [SEP] (a titled passage as [CLS] title [SEP]
    text [SEP]); the passage's leading [CLS] is dropped. token_type_ids are all 0 (the
    release), or with `segments` 0 on the query part and 1 on the passage part. A pair longer
    than `max_length` loses passage tokens before its final [SEP].
    """
    queries = _rows(query_batch)
    passages = _rows(passage_batch)
    if len(passages) != len(queries) * group_size:
        raise ValueError(
            f"{len(queries)} queries in groups of {group_size} need "
            f"{len(queries) * group_size} passages, got {len(passages)}"
        )
    joined, types = [], []
    for index, passage in enumerate(passages):
        query = queries[index // group_size]
        body = passage[1:]
        if max_length is not None and len(query) + len(body) > max_length:
            body = body[: max_length - len(query) - 1] + body[-1:]
        joined.append(query + body)
        types.append([0] * len(query) + [int(segments)] * len(body))
    batch = collate(joined, pad_id)
    token_types = torch.zeros_like(batch["input_ids"])
    for i, row in enumerate(types):
        token_types[i, : len(row)] = torch.as_tensor(row)
    batch["token_type_ids"] = token_types
    return {name: value.to(query_batch["input_ids"].device) for name, value in batch.items()}


def _rows(batch: Batch) -> list[list[int]]:
    lengths = batch["attention_mask"].sum(dim=1).long().tolist()
    return [row[:n] for row, n in zip(batch["input_ids"].tolist(), lengths, strict=True)]


def _token_id(tokenizer: Any, token: str, option: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ConfigError(
            f"the tokenizer has no {token!r} token, which ColBERT's {option} needs (the "
            f"release's markers come from BERT's vocabulary); set {option}: false"
        )
    return int(token_id)


ENCODERS: dict[str, type[Encoder]] = {
    cls.kind: cls for cls in (DualEncoder, ColbertEncoder, CrossEncoder)
}


def build_encoder(
    spec: EncoderSpec, backbone: nn.Module, tokenizer: Any, query_backbone: nn.Module | None = None
) -> Encoder:
    """An encoder of `spec.kind`; heads it owns start from their documented initialisation."""
    return ENCODERS[spec.kind](backbone, tokenizer, spec, query_backbone)


def load_encoder(model_dir: str | Path) -> Encoder:
    """Load a model directory written by Encoder.save (reads lead.json)."""
    from transformers import AutoModel, AutoTokenizer

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ConfigError(f"{model_dir}: model directory not found")
    spec = EncoderSpec.read(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"{model_dir / 'config.json'}: missing; not a Hugging Face model")
    if not any((model_dir / name).is_file() for name in _TOKENIZER_FILES):
        raise ConfigError(
            f"{model_dir}: no tokenizer (expected one of {', '.join(_TOKENIZER_FILES)})"
        )
    towers = [model_dir]  # the passage (or only) tower, then a separate query tower
    if not spec.shared_towers:
        towers.append(model_dir / QUERY_TOWER_DIR)
        if not (towers[1] / "config.json").is_file():
            raise ConfigError(f"{towers[1]}: missing query tower (shared_towers is false)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        loaded = [AutoModel.from_pretrained(tower, dtype=torch.float32, output_loading_info=True)
                  for tower in towers]
    except Exception as err:
        raise ConfigError(
            f"{model_dir}: cannot load the model or tokenizer ({type(err).__name__}: "
            f"{one_line(err)}); "
            "a truncated or empty model.safetensors, or a config.json that does not fit the "
            "weights? Rebuild the directory"
        ) from err
    for tower, (_, loading) in zip(towers, loaded, strict=True):
        _check_weights_fit(tower, loading)
    backbone = loaded[0][0]
    query_backbone = loaded[1][0] if len(loaded) > 1 else None
    encoder = build_encoder(spec, backbone, tokenizer, query_backbone)
    if encoder.head is not None:
        head_path = model_dir / HEAD_FILE
        if not head_path.is_file():
            raise ConfigError(f"{head_path}: missing; a {spec.kind} model needs its head")
        try:
            encoder.head.load_state_dict(load_file(head_path))
        except Exception as err:
            raise ConfigError(f"{head_path}: does not fit the model or is corrupt: "
                              f"{one_line(err)}") from err
    return encoder


def _check_weights_fit(directory: Path, loading: Mapping[str, Any]) -> None:
    """Refuse weights that config.json does not describe exactly: Hugging Face would draw a
    missing weight at random and drop an unexpected one, and the model would load as another
    (a config.json edited after saving, or one of another model)."""
    for kind in ("missing_keys", "unexpected_keys"):
        keys = sorted(loading.get(kind) or ())
        if keys:
            raise ConfigError(
                f"{directory / 'config.json'}: does not fit the weights beside it "
                f"({len(keys)} {kind.replace('_', ' ')}, e.g. {keys[0]!r}); a config.json "
                "edited after saving, or of another model? Rebuild the directory"
            )


def _freeze_unused_pooler(backbone: nn.Module) -> None:
    """BERT-style poolers are never used here; frozen, they need no gradient under DDP."""
    pooler = getattr(backbone, "pooler", None)
    if isinstance(pooler, nn.Module):
        pooler.requires_grad_(False)
