"""Encoders over any Hugging Face model: dual encoder, ColBERT and cross-encoder.

Every encoder exposes the pooled (dual), token-level (ColBERT) or [CLS]-scored (cross) state
of each Transformer block, because LEAD aligns intermediate layers. "Layer i" is the output of
block i, 1-based: hidden_states[i]; hidden_states[0] is the embedding output and not a layer.
Layer counts and sizes come from the model config, never from a model's name.

A model directory holds the backbone (save_pretrained, safetensors), its tokenizer, lead.json
(how to use it: kind, pooling, towers, max lengths) and, for a shared-tower dual encoder, the
sentence-transformers files, so `SentenceTransformer(dir)` gives the same embeddings.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from lead.errors import ConfigError
from lead.io import atomic_path
from lead.losses import own_group

LEAD_CONFIG = "lead.json"
QUERY_TOWER_DIR = "query_model"
HEAD_FILE = "lead_head.safetensors"
KINDS = ("dual", "colbert", "cross")
POOLINGS = ("cls", "mean")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")

Batch = dict[str, Tensor]


@dataclass(frozen=True)
class EncoderSpec:
    """How a backbone is used (the content of lead.json)."""

    kind: str = "dual"
    pooling: str = "cls"
    shared_towers: bool = True
    query_max_length: int = 32
    passage_max_length: int = 256
    colbert_dim: int = 128

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"model kind {self.kind!r} is unknown; expected one of {KINDS}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling {self.pooling!r} is unknown; expected one of {POOLINGS}")

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> EncoderSpec:
        """Pick the spec's fields out of a (resolved) teacher/student config section."""
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


@dataclass
class Reps:
    """A batch of texts at the final layer and at the requested layers (1-based).

    dual: final (N, d) pooled last block; layers[i] (N, d) pooled block i; mask None.
    colbert: final (N, T, d') projected, L2-normalised tokens; layers[i] (N, T, h) raw token
    states of block i (the last block's entry is `final`); mask (N, T) attention mask.
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
        return self._encode(tower, batch, layers)

    def encode_passage(self, batch: Batch, layers: Sequence[int] = ()) -> Reps:
        return self._encode(self.backbone, batch, layers)

    def _encode(self, backbone: nn.Module, batch: Batch, layers: Sequence[int]) -> Reps:
        raise ConfigError(f"a {self.kind} model has no query or passage representation; "
                          "use score_groups")

    def compute_similarity(
        self, q: Tensor, p: Tensor, q_mask: Tensor | None = None, p_mask: Tensor | None = None
    ) -> Tensor:
        raise ConfigError(f"a {self.kind} model scores pairs jointly; use score_groups")

    def score_groups(
        self, query_batch: Batch, passage_batch: Batch, group_size: int, layers: Sequence[int] = ()
    ) -> tuple[Tensor, dict[int, Tensor]]:
        """Scores of each query's own group: (B, g) finally and at each requested layer."""
        query = self.encode_query(query_batch, layers)
        passage = self.encode_passage(passage_batch, layers)
        mask_q, mask_p = query.mask, passage.mask

        def grouped(q: Tensor, p: Tensor) -> Tensor:
            return own_group(self.compute_similarity(q, p, mask_q, mask_p), group_size)

        per_layer = {i: grouped(query.layers[i], passage.layers[i]) for i in layers}
        return grouped(query.final, passage.final), per_layer

    def save(self, out_dir: str | Path) -> Path:
        """Write a complete model directory atomically (an existing one is replaced)."""
        out_dir = Path(out_dir)
        with atomic_path(out_dir) as tmp:
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
            self._write_sentence_transformers(tmp)
        return out_dir

    def _write_sentence_transformers(self, model_dir: Path) -> None:
        """Only a shared-tower dual encoder is one sentence-transformers model."""


class DualEncoder(Encoder):
    """Pooled block outputs scored by a plain dot product (no projection, no normalisation)."""

    kind = "dual"

    def _encode(self, backbone: nn.Module, batch: Batch, layers: Sequence[int]) -> Reps:
        self.check_layers(layers)
        states = self._hidden_states(backbone, batch)
        mask = batch["attention_mask"]
        return Reps(
            final=self.pool(states[-1], mask),
            layers={i: self.pool(states[i], mask) for i in layers},
        )

    def pool(self, states: Tensor, mask: Tensor) -> Tensor:
        if self.spec.pooling == "cls":
            return states[:, 0]
        weights = mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def compute_similarity(
        self, q: Tensor, p: Tensor, q_mask: Tensor | None = None, p_mask: Tensor | None = None
    ) -> Tensor:
        return q @ p.T

    def _write_sentence_transformers(self, model_dir: Path) -> None:
        if self.query_backbone is not None:
            return
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling",
             "type": "sentence_transformers.models.Pooling"},
        ]
        pooling = {
            "word_embedding_dimension": self.hidden_size,
            "pooling_mode_cls_token": self.spec.pooling == "cls",
            "pooling_mode_mean_tokens": self.spec.pooling == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        }
        transformer = {"max_seq_length": self.spec.passage_max_length, "do_lower_case": False}
        _write_json(model_dir / "modules.json", modules)
        (model_dir / "1_Pooling").mkdir()
        _write_json(model_dir / "1_Pooling" / "config.json", pooling)
        _write_json(model_dir / "sentence_bert_config.json", transformer)


class ColbertEncoder(Encoder):
    """MaxSim over token vectors: projected and L2-normalised finally, raw in between."""

    kind = "colbert"

    def __init__(self, backbone: nn.Module, tokenizer: Any, spec: EncoderSpec,
                 query_backbone: nn.Module | None = None):
        super().__init__(backbone, tokenizer, spec, query_backbone)
        self.head = nn.Linear(self.hidden_size, spec.colbert_dim, bias=False)

    def _encode(self, backbone: nn.Module, batch: Batch, layers: Sequence[int]) -> Reps:
        self.check_layers(layers)
        states = self._hidden_states(backbone, batch)
        final = F.normalize(self.head(states[-1]), dim=-1)
        per_layer = {i: final if i == self.num_layers else states[i] for i in layers}
        return Reps(final=final, layers=per_layer, mask=batch["attention_mask"])

    def compute_similarity(
        self, q: Tensor, p: Tensor, q_mask: Tensor | None = None, p_mask: Tensor | None = None
    ) -> Tensor:
        if q_mask is None or p_mask is None:
            raise ValueError("MaxSim needs the query and passage attention masks")
        return maxsim(q, p, q_mask, p_mask)


def maxsim(q: Tensor, p: Tensor, q_mask: Tensor, p_mask: Tensor) -> Tensor:
    """Σ over real query tokens of the max over real passage tokens of the dot product.

    q (Nq, Tq, d), p (Np, Tp, d), masks 1 for real tokens -> (Nq, Np). Passage padding never
    wins the max; query padding adds nothing.
    """
    token_scores = torch.einsum("qtd,pud->qptu", q, p)
    padding = ~p_mask.bool()[None, :, None, :]
    token_scores = token_scores.masked_fill(padding, torch.finfo(token_scores.dtype).min)
    best = token_scores.amax(dim=-1)
    return (best * q_mask.to(best.dtype)[:, None, :]).sum(dim=-1)


class CrossEncoder(Encoder):
    """Scores [CLS] q [SEP] p [SEP] with a linear head on [CLS], at every block alike."""

    kind = "cross"

    def __init__(self, backbone: nn.Module, tokenizer: Any, spec: EncoderSpec,
                 query_backbone: nn.Module | None = None):
        super().__init__(backbone, tokenizer, spec, query_backbone)
        self.head = nn.Linear(self.hidden_size, 1)
        self.max_length: int | None = getattr(backbone.config, "max_position_embeddings", None)

    def score_groups(
        self, query_batch: Batch, passage_batch: Batch, group_size: int, layers: Sequence[int] = ()
    ) -> tuple[Tensor, dict[int, Tensor]]:
        self.check_layers(layers)
        num_queries = query_batch["input_ids"].shape[0]
        pairs = join_pairs(
            query_batch, passage_batch, group_size, self.pad_id, self.max_length,
        )
        states = self._hidden_states(self.backbone, pairs)

        def scores(block: Tensor) -> Tensor:
            return self.head(block[:, 0]).view(num_queries, group_size)

        return scores(states[-1]), {i: scores(states[i]) for i in layers}


def join_pairs(
    query_batch: Batch,
    passage_batch: Batch,
    group_size: int,
    pad_id: int,
    max_length: int | None = None,
) -> Batch:
    """[CLS] q [SEP] p [SEP] for each query and each passage of its group.

    Both sides were tokenized alone as [CLS] text [SEP]; the passage's leading [CLS] is dropped.
    token_type_ids are 0 on the query part and 1 on the passage part. A pair longer than
    `max_length` loses passage tokens before its final [SEP].
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
        types.append([0] * len(query) + [1] * len(body))
    batch = collate(joined, pad_id)
    token_types = torch.zeros_like(batch["input_ids"])
    for i, row in enumerate(types):
        token_types[i, : len(row)] = torch.as_tensor(row)
    batch["token_type_ids"] = token_types
    return {name: value.to(query_batch["input_ids"].device) for name, value in batch.items()}


def _rows(batch: Batch) -> list[list[int]]:
    lengths = batch["attention_mask"].sum(dim=1).long().tolist()
    return [row[:n] for row, n in zip(batch["input_ids"].tolist(), lengths, strict=True)]


ENCODERS: dict[str, type[Encoder]] = {
    cls.kind: cls for cls in (DualEncoder, ColbertEncoder, CrossEncoder)
}


def build_encoder(
    spec: EncoderSpec, backbone: nn.Module, tokenizer: Any, query_backbone: nn.Module | None = None
) -> Encoder:
    """An encoder of `spec.kind`; heads it owns start from torch's default initialisation."""
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
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        backbone = AutoModel.from_pretrained(model_dir, dtype=torch.float32)
        query_backbone = None
        if not spec.shared_towers:
            query_dir = model_dir / QUERY_TOWER_DIR
            if not (query_dir / "config.json").is_file():
                raise ConfigError(f"{query_dir}: missing query tower (shared_towers is false)")
            query_backbone = AutoModel.from_pretrained(query_dir, dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{model_dir}: cannot load the model or tokenizer: {err}") from err
    encoder = build_encoder(spec, backbone, tokenizer, query_backbone)
    if encoder.head is not None:
        head_path = model_dir / HEAD_FILE
        if not head_path.is_file():
            raise ConfigError(f"{head_path}: missing; a {spec.kind} model needs its head")
        try:
            encoder.head.load_state_dict(load_file(head_path))
        except RuntimeError as err:
            raise ConfigError(f"{head_path}: does not fit the model: {err}") from err
    return encoder


def _freeze_unused_pooler(backbone: nn.Module) -> None:
    """BERT-style poolers are never used here; frozen, they need no gradient under DDP."""
    pooler = getattr(backbone, "pooler", None)
    if isinstance(pooler, nn.Module):
        pooler.requires_grad_(False)


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")
