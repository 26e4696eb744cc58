"""A synthetic retrieval world for the training tests: a corpus of topics, queries, groups
and two tiny BERTs with tokenizers of their own (teacher: WordPiece, student: Unigram, so
teacher and student share no vocabulary), and the `distill` command line over it."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from lead import schemas
from lead.config import dumps
from lead.io import write_table
from lead.training.checkpoint import CHECKPOINT_FILE
from lead.training.data import Groups, ModelTokens, TokenTable, TrainingData

SYLLABLES = [a + b for a in "bdfkmst" for b in "aeiou"]
TOPICS, PASSAGES_PER_TOPIC = 8, 10


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))


def _write_world(root: Path) -> dict[str, Path]:
    """Corpus, train/dev queries, dev qrels and groups where a query shares its topic's words."""
    rng = random.Random(0)
    topic_words = [[_word(rng) for _ in range(12)] for _ in range(TOPICS)]
    common = [_word(rng) for _ in range(20)]
    doc_ids, texts, topic_of = [], [], {}
    for number in range(TOPICS * PASSAGES_PER_TOPIC):
        topic = number % TOPICS
        doc_id = f"d{number}"
        words = rng.sample(topic_words[topic], 6) + rng.sample(common, 6)
        rng.shuffle(words)
        doc_ids.append(doc_id)
        texts.append(" ".join(words))
        topic_of[doc_id] = topic
    by_topic = {t: [d for d in doc_ids if topic_of[d] == t] for t in range(TOPICS)}
    paths = {name: root / f"{name}.parquet" for name in
             ("corpus", "train_queries", "dev_queries", "dev_qrels", "groups")}
    write_table(pa.table({"doc_id": doc_ids, "title": [""] * len(doc_ids), "text": texts},
                         schemas.CORPUS), paths["corpus"])

    def query(topic: int) -> str:
        return " ".join(rng.sample(topic_words[topic], 3))

    train_ids, train_texts, groups = [], [], []
    for number in range(48):
        topic = number % TOPICS
        query_id = f"q{number}"
        train_ids.append(query_id)
        train_texts.append(query(topic))
        others = [d for d in doc_ids if topic_of[d] != topic]
        groups.append({"query_id": query_id, "positives": rng.sample(by_topic[topic], 2),
                       "negatives": rng.sample(others, 6)})
    write_table(pa.table({"query_id": train_ids, "text": train_texts}, schemas.QUERIES),
                paths["train_queries"])
    write_table(pa.Table.from_pylist(groups, schemas.GROUPS), paths["groups"])
    dev_ids = [f"v{t}" for t in range(TOPICS)]
    write_table(pa.table({"query_id": dev_ids, "text": [query(t) for t in range(TOPICS)]},
                         schemas.QUERIES), paths["dev_queries"])
    qrels = [(f"v{t}", d, 1) for t in range(TOPICS) for d in by_topic[t][:3]]
    write_table(pa.table({"query_id": [q for q, _, _ in qrels], "doc_id": [d for _, d, _ in qrels],
                          "relevance": pa.array([r for _, _, r in qrels], pa.int32())},
                         schemas.QRELS), paths["dev_qrels"])
    return paths


def _model(root: Path, corpus: Path, name: str, tokenizer_type: str, layers: int, hidden: int):
    """A tiny random BERT dual encoder with its own trained tokenizer, as a model directory."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from lead.modeling.encoders import build_encoder
    from lead.modeling.spec import EncoderSpec
    from lead.tokenization import train_tokenizer

    tokenizer_dir = root / f"{name}-tokenizer"
    train_tokenizer(corpus, tokenizer_dir, type=tokenizer_type, vocab_size=150, lowercase=True)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(len(name))
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=64,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        pad_token_id=tokenizer.pad_token_id,
    )
    spec = EncoderSpec(kind="dual", pooling="mean", query_max_length=16, passage_max_length=40)
    build_encoder(spec, BertModel(config), tokenizer).save(root / name)
    return root / name, tokenizer_dir


def make_world(root: Path) -> dict[str, Path]:
    """The world's files under `root`, with each model's tokens of corpus and queries."""
    from lead.tokenization import tokenize_file

    paths = _write_world(root)
    for role, kind, layers, hidden in (("teacher", "wordpiece", 3, 32),
                                       ("student", "unigram", 2, 16)):
        paths[role], tokenizer = _model(root, paths["corpus"], role, kind, layers, hidden)
        for source, length in (("corpus", 40), ("train_queries", 16), ("dev_queries", 16)):
            paths[f"{role}_{source}_tokens"] = root / f"{role}-{source}-tokens.parquet"
            tokenize_file(tokenizer, paths[source], paths[f"{role}_{source}_tokens"],
                          max_length=length)
    return paths


def optimisation(**overrides) -> dict:
    return {"steps": 24, "learning_rate": 5e-3, "teacher_learning_rate": 2e-3,
            "warmup_ratio": 0.1, "batch_size": 4, "negatives_per_query": 3,
            "eval_every": 8, "checkpoint_every": 8, "log_every": 1, "eval_depth": 20,
            "dev_pool_size": 40, "seed": 5, **overrides}


def distill_argv(world, out: Path, method: str = "lead", groups: Path | None = None,
                  teacher: Path | None = None, student: Path | None = None,
                  **settings) -> list[str]:
    distillation = {"optimisation": optimisation(**settings.pop("optimisation", {})),
                    "layers": {"k": 2}, **settings}
    return [
        "distill", "--method", method, "--settings", dumps({"distillation": distillation}),
        "--teacher", str(teacher or world["teacher"]),
        "--student", str(student or world["student"]),
        "--teacher-corpus-tokens", str(world["teacher_corpus_tokens"]),
        "--teacher-query-tokens", str(world["teacher_train_queries_tokens"]),
        "--student-corpus-tokens", str(world["student_corpus_tokens"]),
        "--student-query-tokens", str(world["student_train_queries_tokens"]),
        "--groups", str(groups or world["groups"]),
        "--dev-query-tokens", str(world["student_dev_queries_tokens"]),
        "--dev-qrels", str(world["dev_qrels"]),
        "--out", str(out / "model"), "--log", str(out / "log.parquet"),
        "--checkpoint-dir", str(out / "checkpoints"), "--keep-checkpoint",
    ]


def read_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def read_checkpoint(out: Path) -> dict:
    return torch.load(out / "checkpoints" / CHECKPOINT_FILE, weights_only=True)


def training_data(world, batch_size=4, negatives=3, seed=5, rank=0, world_size=1, groups=None):
    from lead.modeling.encoders import load_encoder

    models = {}
    for role in ("teacher", "student"):
        models[role] = ModelTokens(
            TokenTable.read(world[f"{role}_train_queries_tokens"]),
            TokenTable.read(world[f"{role}_corpus_tokens"]),
            load_encoder(world[role]).pad_id,
        )
    return TrainingData(Groups.read(groups or world["groups"], negatives), models,
                        batch_size=batch_size, negatives_per_query=negatives, seed=seed,
                        rank=rank, world_size=world_size)


def read_log(out: Path):
    return pq.read_table(out / "log.parquet").to_pandas()


TIMING = ["examples_per_s", "seconds_per_step", "memory_mb"]
