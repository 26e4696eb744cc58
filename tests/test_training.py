"""The training loop: data, distillation end to end, resume, data parallelism, bad input.

Everything runs on tiny random BERTs with tokenizers trained here on a synthetic corpus
(teacher: WordPiece, student: Unigram, so teacher and student share no vocabulary).
"""

from __future__ import annotations

import contextlib
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from lead import schemas
from lead.__main__ import main
from lead.config import dumps, resolve
from lead.errors import DataError
from lead.io import write_table
from lead.training import optim
from lead.training.checkpoint import CHECKPOINT_FILE
from lead.training.data import Groups, ModelTokens, TokenTable, TrainingData
from lead.training.optim import linear_schedule
from lead.training.validation import candidate_pool

REPO = Path(__file__).resolve().parents[1]
SYLLABLES = [a + b for a in "bdfkmst" for b in "aeiou"]
TOPICS, PASSAGES_PER_TOPIC = 8, 10


# ------------------------------------------------------------------------------ test world


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


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    from lead.tokenization import tokenize_file

    root = tmp_path_factory.mktemp("world")
    paths = _write_world(root)
    for role, kind, layers, hidden in (("teacher", "wordpiece", 3, 32),
                                       ("student", "unigram", 2, 16)):
        paths[role], tokenizer = _model(root, paths["corpus"], role, kind, layers, hidden)
        for source, length in (("corpus", 40), ("train_queries", 16), ("dev_queries", 16)):
            paths[f"{role}_{source}_tokens"] = root / f"{role}-{source}-tokens.parquet"
            tokenize_file(tokenizer, paths[source], paths[f"{role}_{source}_tokens"],
                          max_length=length)
    return paths


def _optimisation(**overrides) -> dict:
    return {"steps": 24, "learning_rate": 5e-3, "teacher_learning_rate": 2e-3,
            "warmup_ratio": 0.1, "batch_size": 4, "negatives_per_query": 3,
            "eval_every": 8, "checkpoint_every": 8, "log_every": 1, "eval_depth": 20,
            "dev_pool_size": 40, "seed": 5, **overrides}


def _distill_argv(world, out: Path, method: str = "lead", groups: Path | None = None,
                  teacher: Path | None = None, student: Path | None = None,
                  **settings) -> list[str]:
    distillation = {"optimisation": _optimisation(**settings.pop("optimisation", {})),
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


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def _checkpoint(out: Path) -> dict:
    return torch.load(out / "checkpoints" / CHECKPOINT_FILE, weights_only=True)


def _training_data(world, batch_size=4, negatives=3, seed=5, rank=0, world_size=1, groups=None):
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


# ------------------------------------------------------------------------------ data


def test_batches_hold_each_query_positive_first_then_its_negatives_in_both_tokenizations(world):
    data = _training_data(world)
    groups = pq.read_table(world["groups"]).to_pylist()
    student, teacher = data.models["student"], data.models["teacher"]
    examples = data.examples(0)
    passage_ids = [data.groups.positive_ids[p].as_py() for _, p, _ in examples]
    for (group, positive, negatives), expected in zip(examples, passage_ids, strict=True):
        assert data.groups.positive_ids[positive].as_py() in groups[group]["positives"]
        assert expected in groups[group]["positives"]
        assert {data.groups.negative_ids[n].as_py() for n in negatives} <= set(
            groups[group]["negatives"])
        assert len(set(negatives.tolist())) == 3  # enough negatives: drawn without replacement
    batch = data.micro_batch(0)
    for name, tokens in (("student", student), ("teacher", teacher)):
        ids = batch[name].passages["input_ids"]
        assert ids.shape[0] == 4 * (1 + 3)
        for j, doc_id in enumerate(passage_ids):
            row = tokens.corpus.rows(pa.array([doc_id]), "test")[0]
            expected = tokens.corpus.token_ids([row])[0]
            assert ids[j * 4, : len(expected)].tolist() == expected  # positive at column j*(1+n)
    # Same seed and counter -> same batch; another epoch -> another order.
    again = _training_data(world).micro_batch(0)
    same = again["student"].passages["input_ids"]
    assert torch.equal(same, batch["student"].passages["input_ids"])
    epoch_two = data.examples(data.batches_per_epoch)
    assert [g for g, _, _ in epoch_two] != [g for g, _, _ in examples]


def test_two_ranks_split_one_global_batch_between_them(world):
    single = _training_data(world, batch_size=4)
    ranks = [_training_data(world, batch_size=2, rank=r, world_size=2) for r in range(2)]
    whole = sorted(g for g, _, _ in single.examples(0))
    assert sorted(g for r in ranks for g, _, _ in r.examples(0)) == whole


def test_negatives_are_drawn_with_replacement_when_a_group_has_too_few(world, tmp_path):
    groups = pq.read_table(world["groups"]).to_pylist()
    for group in groups:
        group["negatives"] = group["negatives"][:2]
    path = tmp_path / "groups.parquet"
    write_table(pa.Table.from_pylist(groups, schemas.GROUPS), path)
    data = _training_data(world, negatives=5, groups=path)
    assert all(len(negatives) == 5 for _, _, negatives in data.examples(0))


def test_an_empty_group_is_an_error_naming_the_query_and_the_file(world, tmp_path):
    groups = pq.read_table(world["groups"]).to_pylist()
    groups[3]["negatives"] = []
    path = tmp_path / "groups.parquet"
    write_table(pa.Table.from_pylist(groups, schemas.GROUPS), path)
    with pytest.raises(DataError, match=r"groups\.parquet.*'q3'.*negatives"):
        Groups.read(path, negatives_per_query=3)
    assert len(Groups.read(path, negatives_per_query=0)) == 48  # no negatives needed
    groups[3]["positives"] = []
    write_table(pa.Table.from_pylist(groups, schemas.GROUPS), path)
    with pytest.raises(DataError, match=r"'q3'.*positives"):
        Groups.read(path, negatives_per_query=0)


def test_a_passage_missing_from_a_models_tokens_names_the_file_and_id(world, tmp_path):
    groups = pq.read_table(world["groups"]).to_pylist()
    groups[0]["negatives"][0] = "nowhere"
    path = tmp_path / "groups.parquet"
    write_table(pa.Table.from_pylist(groups, schemas.GROUPS), path)
    with pytest.raises(DataError, match=r"teacher-corpus-tokens\.parquet.*'nowhere'"):
        _training_data(world, groups=path)


def test_dev_pool_is_judged_passages_plus_a_seeded_sample():
    judged = np.array([3, 50, 97])
    pool = candidate_pool(100, judged, 10, seed=1)
    assert len(pool) == 10 and set(judged) <= set(pool.tolist())
    assert np.array_equal(pool, candidate_pool(100, judged, 10, seed=1))
    assert np.array_equal(candidate_pool(8, judged[:1], 10, seed=1), np.arange(8))


def test_learning_rate_warms_up_then_decays_linearly_to_zero():
    factors = [linear_schedule(step, 2, 10) for step in range(11)]
    assert factors[:3] == [0.0, 0.5, 1.0]
    assert factors[-1] == 0.0
    assert np.allclose(np.diff(factors[2:]), -1 / 8)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_precision_autocasts_on_a_cpu_with_native_bf16_and_is_fp32_elsewhere(
    monkeypatch, caplog, native
):
    monkeypatch.setattr(optim, "cpu_has_native_bf16", lambda: native)
    layer, x = torch.nn.Linear(4, 4), torch.randn(2, 4)
    with optim.autocast_for(torch.device("cpu"), "bf16")():
        out = layer(x)
    assert out.dtype == (torch.bfloat16 if native else torch.float32)
    assert ("no native bf16" in caplog.text) != native
    with optim.autocast_for(torch.device("cpu"), "fp32")():
        assert layer(x).dtype == torch.float32


# ------------------------------------------------------------------------------ end to end


def _log(out: Path):
    return pq.read_table(out / "log.parquet").to_pandas()


TIMING = ["examples_per_s", "seconds_per_step", "memory_mb"]


@pytest.fixture(scope="module")
def lead_run(world, tmp_path_factory) -> Path:
    """An uninterrupted `distill --method lead` run through the CLI."""
    out = tmp_path_factory.mktemp("lead-run")
    assert main(_distill_argv(world, out)) == 0
    return out


@pytest.mark.slow
def test_lead_distillation_between_different_tokenizers_lowers_the_loss(world, lead_run):
    from transformers import AutoModel

    from lead.modeling.encoders import load_encoder

    log = _log(lead_run)
    assert log["step"].tolist() == list(range(0, 25))  # step 0: the initial model's dev row
    steps = log[log["step"] > 0]
    for column in ("loss", "student_ce", "teacher_ce", "response_kl", "reverse_kl", "layer",
                   "lr", "teacher_lr", "grad_norm", "teacher_grad_norm", *TIMING):
        assert steps[column].notna().all(), column
    assert all(len(pairs) == 2 and all(t >= 1 and s >= 1 for t, s in pairs)
               for pairs in steps["layers"])
    assert all(abs(sum(w) - 1) < 1e-5 for w in steps["layer_weights"])
    assert steps["loss"].iloc[-6:].mean() < steps["loss"].iloc[:6].mean() - 0.2
    evaluated = log.dropna(subset=["dev_RR@10"])
    assert evaluated["step"].tolist() == [0, 8, 16, 24]
    # The saved model is the best one on dev, and loads both ways.
    best = evaluated["dev_RR@10"].idxmax()
    assert _checkpoint(lead_run)["progress"]["best_step"] == log["step"][best]
    assert AutoModel.from_pretrained(lead_run / "model").config.num_hidden_layers == 2
    encoder = load_encoder(lead_run / "model")
    assert encoder.kind == "dual" and encoder.hidden_size == 16
    assert (lead_run / "model" / "modules.json").is_file()


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_weights_and_log(world, lead_run, tmp_path):
    argv = _distill_argv(world, tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "lead", *argv], cwd=REPO, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = tmp_path / "checkpoints" / CHECKPOINT_FILE
    while not checkpoint.exists() and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = torch.load(checkpoint, weights_only=True)["progress"]["step"]
    assert killed_at < 24 and len(_log(tmp_path)) >= killed_at  # the log is written first

    assert main(argv) == 0  # resumes
    expected, resumed = _weights(lead_run / "model"), _weights(tmp_path / "model")
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)
    first, second = _checkpoint(lead_run), _checkpoint(tmp_path)
    for model in ("student", "teacher"):
        for name, tensor in first["models"][model].items():
            assert torch.equal(tensor, second["models"][model][name]), (model, name)
    assert _states_equal(first["optimizers"], second["optimizers"])
    assert _log(lead_run).drop(columns=TIMING).equals(_log(tmp_path).drop(columns=TIMING))


def _states_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_states_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_states_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.slow
def test_two_gloo_processes_take_the_same_steps_as_one_process_on_the_whole_batch(
    world, tmp_path
):
    """Loss, pre-clip gradient norms (clipping active) and weights after 2 steps of 2
    accumulated micro-batches, and the dev metrics of the sharded evaluation (with the exact
    gradient scale; tests/test_distributed.py checks the release's 1/G)."""
    settings = {"steps": 2, "checkpoint_every": 1, "eval_every": 2, "max_grad_norm": 0.5,
                "gradient_accumulation": 2, "gradient_scale": "exact"}
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(_distill_argv(world, one, optimisation={**settings, "batch_size": 4})) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "--", "lead",  # "--": torchrun would take --log
               *_distill_argv(world, two, optimisation={**settings, "batch_size": 2})]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    log_one, log_two = _log(one), _log(two)
    assert (log_one["grad_norm"].dropna() > 0.5).all()  # clipping happened
    numbers = [c for c in log_one.columns if c not in (*TIMING, "layers", "layer_weights", "step")]
    assert np.allclose(log_one[numbers].to_numpy(float), log_two[numbers].to_numpy(float),
                       rtol=1e-5, atol=1e-6, equal_nan=True)
    layers = [pq.read_table(out / "log.parquet").column("layers").to_pylist() for out in (one, two)]
    assert layers[0] == layers[1]
    for model in ("student", "teacher"):
        a, b = _checkpoint(one)["models"][model], _checkpoint(two)["models"][model]
        for name in a:
            assert torch.allclose(a[name], b[name], rtol=1e-5, atol=1e-6), (model, name)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "settings", "columns"),
    [
        ("none", {}, {"loss", "student_ce"}),
        ("response", {"teacher_trainable": False}, {"loss", "student_ce", "response_kl"}),
    ],
)
def test_baselines_train_only_what_their_method_says(world, tmp_path, method, settings, columns):
    optimisation = {"steps": 3, "eval_every": 3, "checkpoint_every": 3}
    assert main(_distill_argv(world, tmp_path, method, optimisation=optimisation, **settings)) == 0
    log = _log(tmp_path)
    losses = set(log.columns) - {"step", "lr", "grad_norm", "layers", "layer_weights", *TIMING}
    assert {c for c in losses if not c.startswith("dev_")} == columns
    assert set(_checkpoint(tmp_path)["models"]) == {"student"}  # the teacher is not trained
    assert log["layers"].dropna().map(len).eq(0).all() and log["layers"].notna().sum() == 3


# ------------------------------------------------------------------------------ bad input


def _poison_from_step(monkeypatch, step: int) -> None:
    """Make the objective's loss NaN from optimizer step `step` on (one micro-batch a step)."""
    from lead.training.objective import Objective

    original = Objective.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= step:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(Objective, "forward", forward)


def _train_argv(world, out: Path, **optimisation) -> list[str]:
    settings = {"optimisation": _optimisation(**{"steps": 12, "checkpoint_every": 4,
                                                 "eval_every": 4, **optimisation})}
    return [
        "warmup", "--settings", dumps(settings), "--model", str(world["student"]),
        "--corpus-tokens", str(world["student_corpus_tokens"]),
        "--query-tokens", str(world["student_train_queries_tokens"]),
        "--groups", str(world["groups"]),
        "--dev-query-tokens", str(world["student_dev_queries_tokens"]),
        "--dev-qrels", str(world["dev_qrels"]),
        "--out", str(out / "model"), "--log", str(out / "log.parquet"),
        "--checkpoint-dir", str(out / "checkpoints"), "--keep-checkpoint",
    ]


@pytest.mark.slow
def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(
    world, tmp_path, monkeypatch, capsys
):
    _poison_from_step(monkeypatch, 6)
    assert main(_train_argv(world, tmp_path)) == 2
    error = capsys.readouterr().err
    assert "non-finite loss" in error and "at step 6" in error
    checkpoint = tmp_path / "checkpoints" / CHECKPOINT_FILE
    assert torch.load(checkpoint, weights_only=True)["progress"]["step"] == 4
    assert not (tmp_path / "model").exists()
    monkeypatch.undo()
    assert main(_train_argv(world, tmp_path)) == 0  # resumes from step 4 and finishes
    assert _log(tmp_path)["step"].tolist() == list(range(0, 13))
    assert (tmp_path / "model" / "lead.json").is_file()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"layers": {"k": 3}}, r"layers\.k = 3"),
        ({"layers": {"strategy": "pairs", "pairs": [[4, 1]]}}, r"pairs entry \[4, 1\]"),
        ({"optimisation": {"batch_size": 100}}, r"fewer than one global batch"),
    ],
)
def test_a_config_that_does_not_fit_the_models_or_data_fails_before_training(
    world, tmp_path, capsys, settings, message
):
    assert main(_distill_argv(world, tmp_path, **settings)) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "log.parquet").exists()


def test_a_model_directory_without_tokenizer_or_not_matching_the_config_fails(
    world, tmp_path, capsys
):
    broken = tmp_path / "teacher"
    shutil.copytree(world["teacher"], broken)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (broken / name).unlink(missing_ok=True)
    assert main(_distill_argv(world, tmp_path, teacher=broken)) == 2
    assert "no tokenizer" in capsys.readouterr().err
    argv = _distill_argv(world, tmp_path)
    argv[argv.index("--settings") + 1] = dumps(
        {"student": {"init": "random", "pooling": "cls"}, "distillation": {"layers": {"k": 2}}}
    )
    assert main(argv) == 2
    assert "pooling is 'mean', the config says 'cls'" in capsys.readouterr().err


def test_lead_takes_its_layer_scores_from_the_same_forward_pass_as_response(world):
    """LEAD costs no extra encoder forward: one per model for queries and one for passages."""
    from lead.distributed import Processes
    from lead.modeling.encoders import load_encoder
    from lead.training.distillation import DistillationObjective
    from lead.training.loop import train_step
    from lead.training.optim import make_trainee

    data = _training_data(world)
    counts = {}
    for method, pairs in (("response", []), ("lead", [(2, 1), (3, 2)])):
        student, teacher = load_encoder(world["student"]), load_encoder(world["teacher"])
        calls = []
        for model in (student, teacher):
            model.backbone.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        objective = DistillationObjective(student, teacher, method, {})
        opt = resolve("distillation", {"optimisation": _optimisation()})["optimisation"]
        trainees = [make_trainee("student", student, opt, 1e-3),
                    make_trainee("teacher", teacher, opt, 1e-3)]
        train_step(objective, trainees, [data.micro_batch(0)], pairs, group_size=4,
                   autocast=contextlib.nullcontext, procs=Processes(0, 1, torch.device("cpu")),
                   accumulation=1)
        counts[method] = len(calls)
    assert counts == {"response": 4, "lead": 4}


# ------------------------------------------------------------------------------ validation


def _dev_set(world, pool_size=40):
    from lead.training.validation import load_dev_set

    return load_dev_set(world["student_dev_queries_tokens"], world["dev_qrels"],
                        world["student_corpus_tokens"], pool_size, seed=3)


def _scoring(batch_size=7, rank=0, world_size=1):
    from lead.training.validation import Scoring

    return Scoring(torch.device("cpu"), contextlib.nullcontext, batch_size, rank, world_size)


def test_dev_evaluation_ranks_the_pool_as_brute_force_does(world):
    from lead.evaluation.evaluate import evaluate_run
    from lead.modeling.encoders import collate, load_encoder
    from lead.training.validation import dev_metrics

    encoder = load_encoder(world["student"])
    dev = _dev_set(world)
    measures = ["RR@10", "R@20"]
    got = dev_metrics(encoder, dev, depth=20, measures=measures, scoring=_scoring(), seed=3)
    with torch.no_grad():
        def embed(encode, table, rows):
            return encode(collate(table.token_ids(rows), encoder.pad_id)).final

        query_rows = np.array(sorted(dev.judged))
        scores = (embed(encoder.encode_query, dev.queries, query_rows)
                  @ embed(encoder.encode_passage, dev.corpus, dev.pool).T).numpy()
    run = [(dev.queries.ids[int(q)].as_py(), dev.corpus.ids[int(p)].as_py(), float(s))
           for q, row in zip(query_rows, scores, strict=True)
           for p, s in zip(dev.pool, row, strict=True)]
    import pandas as pd

    summary, _ = evaluate_run(pd.DataFrame(run, columns=["query_id", "doc_id", "score"]),
                              dev.qrels, measures=measures)
    assert got == pytest.approx(dict(zip(summary["measure"], summary["value"], strict=True)),
                                abs=1e-9)
    assert len(dev.pool) == 40 and set(dev.qrels["doc_id"]) <= {
        dev.corpus.ids[int(p)].as_py() for p in dev.pool}


@pytest.mark.parametrize("kind", ["colbert", "cross"])
def test_dev_evaluation_scores_colbert_and_cross_encoder_models(world, tmp_path, kind):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from lead.modeling.encoders import build_encoder
    from lead.modeling.spec import EncoderSpec
    from lead.training.validation import dev_metrics

    tokenizer = AutoTokenizer.from_pretrained(world["student"])
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    spec = EncoderSpec(kind=kind, colbert_dim=8, colbert_markers=False)  # a trained vocabulary
    encoder = build_encoder(spec, BertModel(config), tokenizer)
    metrics = dev_metrics(encoder, _dev_set(world), depth=12, measures=["RR@10", "R@12"],
                             scoring=_scoring(), seed=3)
    assert set(metrics) == {"RR@10", "R@12"} and all(0 <= v <= 1 for v in metrics.values())
    if kind == "cross":  # every query reranks its judged passages among its 12 candidates
        assert metrics["R@12"] == 1.0


# ------------------------------------------------------------------------------ new behaviour


@pytest.mark.slow
def test_the_initial_model_is_kept_when_training_only_hurts(world, lead_run, tmp_path):
    """From a trained student, a learning rate that wrecks it: no dev evaluation beats step
    0's, so the saved model is the initial one, weight for weight."""
    optimisation = {"steps": 8, "eval_every": 4, "checkpoint_every": 4, "learning_rate": 0.3,
                    "warmup_ratio": 0.0}
    trained = lead_run / "model"
    assert main(_distill_argv(world, tmp_path, "none", student=trained,
                              optimisation=optimisation)) == 0
    log = _log(tmp_path).dropna(subset=["dev_RR@10"])
    assert log["step"].tolist() == [0, 4, 8]
    assert (log["dev_RR@10"].iloc[1:] < log["dev_RR@10"].iloc[0]).all()
    assert _checkpoint(tmp_path)["progress"]["best_step"] == 0
    initial, saved = _weights(trained), _weights(tmp_path / "model")
    assert all(torch.equal(initial[name], saved[name]) for name in initial)
    card = (tmp_path / "model" / "README.md").read_text()
    assert "selected at step | 0 of 8" in card and "none" in card


@pytest.mark.slow
def test_a_jointly_trained_teachers_dev_metric_is_logged(world, tmp_path):
    argv = _distill_argv(world, tmp_path, optimisation={"steps": 4, "eval_every": 2,
                                                        "checkpoint_every": 4})
    argv.remove("--keep-checkpoint")
    argv += ["--teacher-dev-query-tokens", str(world["teacher_dev_queries_tokens"])]
    assert main(argv) == 0
    assert not (tmp_path / "checkpoints").exists()  # nothing resumes a finished run
    log = _log(tmp_path).dropna(subset=["dev_RR@10"])
    assert log["step"].tolist() == [0, 2, 4]
    assert log["teacher_dev_RR@10"].notna().all()
    assert log["teacher_dev_RR@10"].tolist() != log["dev_RR@10"].tolist()


@pytest.mark.slow
def test_a_frozen_teacher_read_from_its_layer_cache_trains_the_student_as_the_live_one(
    world, tmp_path
):
    from lead.config import resolve
    from lead.teacher_cache import cache_file

    cache = resolve("distillation", {})["teacher_cache"]
    files = {}
    for role, tokens in (("query", "teacher_train_queries_tokens"),
                         ("passage", "teacher_corpus_tokens")):
        files[role] = tmp_path / f"cache-{role}.parquet"
        cache_file(world["teacher"], world[tokens], role, files[role], cache, batch_size=7)
    settings = {"teacher_trainable": False,
                "optimisation": {"steps": 6, "eval_every": 3, "checkpoint_every": 6}}
    live, cached = tmp_path / "live", tmp_path / "cached"
    assert main(_distill_argv(world, live, **settings)) == 0
    argv = _distill_argv(world, cached, **settings)
    argv += ["--teacher-cache-queries", str(files["query"]),
             "--teacher-cache-passages", str(files["passage"])]
    assert main(argv) == 0
    a, b = _log(live), _log(cached)
    numbers = [c for c in a.columns if c not in (*TIMING, "layers", "layer_weights", "step")]
    assert np.allclose(a[numbers].to_numpy(float), b[numbers].to_numpy(float), rtol=1e-5,
                       atol=1e-5, equal_nan=True)
    first, second = _weights(live / "model"), _weights(cached / "model")
    assert all(torch.allclose(first[n], second[n], atol=1e-5) for n in first)
    # the cache also gives the teacher's corpus embeddings without a forward pass
    from lead.retrieval.encode import encode_file
    from lead.teacher_cache import embeddings_from_cache

    encoded, read_off = tmp_path / "encoded.parquet", tmp_path / "read-off.parquet"
    encode_file(world["teacher"], world["teacher_corpus_tokens"], "passage", encoded,
                resolve("encode", {"batch_size": 7}))
    embeddings_from_cache(world["teacher"], files["passage"], read_off)
    a, b = pq.read_table(encoded), pq.read_table(read_off)
    assert a.column("id").equals(b.column("id"))
    assert np.allclose(np.stack(a.column("embedding").to_numpy(zero_copy_only=False)),
                       np.stack(b.column("embedding").to_numpy(zero_copy_only=False)), atol=1e-5)
    # a jointly trained teacher cannot be read from a cache
    joint = _distill_argv(world, tmp_path / "joint")
    joint += ["--teacher-cache-queries", str(files["query"]),
              "--teacher-cache-passages", str(files["passage"])]
    assert main(joint) == 2
