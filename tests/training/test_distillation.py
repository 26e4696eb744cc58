"""The objective of each method (lead.training.distillation): terms, gradients, training."""

from __future__ import annotations

import contextlib
import socket
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tiny_models import TEXTS, batch, make_model, make_tokenizer, spread_weights
from training_world import (
    TIMING,
    distill_argv,
    optimisation,
    read_checkpoint,
    read_log,
    training_data,
)

from lead.__main__ import main
from lead.config import resolve
from lead.errors import ConfigError
from lead.losses import (
    contrastive_loss,
    gold_labels,
    group_kl,
    lead_layer_loss,
    margin_mse,
    own_group,
    response_kl,
    reverse_kl,
)
from lead.methods import METHODS, terms_of
from lead.modeling.encoders import collate, load_encoder
from lead.training.distillation import DistillationObjective
from lead.training.objective import Batching

GROUP = 2
PAIRS = [(1, 1), (3, 2)]
QUERIES = ["what does a student learn", "how do rivers reach the sea", "one vector per token"]
PASSAGES = TEXTS[:6]  # 3 queries x (1 positive + 1 negative)
TERMS = ("student_ce", "teacher_ce", "response_kl", "margin_mse", "group_kl", "reverse_kl",
         "layer")
PEERS = {"marginmse": ("margin_mse", margin_mse), "groupkl": ("group_kl", group_kl)}


def setup(models, teacher_kind="dual", method="lead", **settings):
    student = load_encoder(models["student"])
    teacher = load_encoder(models[teacher_kind])
    objective = DistillationObjective(student, teacher, method, settings).eval()
    batches = (
        batch(student, QUERIES), batch(student, PASSAGES),
        batch(teacher, QUERIES), batch(teacher, PASSAGES),
    )
    return objective, batches


def run(objective, batches, pairs=PAIRS):
    return objective(*batches, layer_pairs=pairs, group_size=GROUP)


def dual_scores(model, queries, passages, layers):
    q = model.encode_query(queries, layers)
    p = model.encode_passage(passages, layers)
    return q.final @ p.final.T, [q.layers[i] @ p.layers[i].T for i in layers]


def test_lead_total_is_the_sum_of_the_method_terms(models):
    objective, batches = setup(models)
    output = run(objective, batches)
    with torch.no_grad():
        s_final, s_layers = dual_scores(objective.student, *batches[:2], [1, 2])
        t_final, t_layers = dual_scores(objective.teacher, *batches[2:], [1, 3])
    labels = gold_labels(3, GROUP)  # columns 0, 2, 4
    layer, weights = lead_layer_loss(t_layers, s_layers, labels)
    expected = {
        "student_ce": contrastive_loss(s_final, labels),
        "teacher_ce": contrastive_loss(t_final, labels),
        "response_kl": response_kl(t_final, s_final),
        "reverse_kl": reverse_kl(t_final, s_final),
        "layer": layer,
    }
    assert output.components.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(output.components[name], value, msg=name)
    torch.testing.assert_close(output.layer_weights, weights)
    torch.testing.assert_close(output.loss.detach(), sum(expected.values()))


def test_coefficients_and_the_layer_coefficient_scale_their_terms(models):
    settings = {"reweight": False, "layer_coefficient": 0.5,
                "coefficients": {"response_kl": 2.0, "teacher_ce": 0.0}}
    objective, batches = setup(models, **settings)
    output = run(objective, batches)
    parts = output.components
    assert "teacher_ce" not in parts  # weighted 0: not computed
    assert output.layer_weights.tolist() == [1.0, 1.0]
    expected = parts["student_ce"] + 2 * parts["response_kl"] + parts["reverse_kl"] + (
        0.5 * parts["layer"]
    )
    torch.testing.assert_close(output.loss.detach(), expected)


@pytest.mark.parametrize("trainable", [False, True])
@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_computes_exactly_its_terms(models, method, trainable):
    objective, batches = setup(models, method=method, teacher_trainable=trainable)
    output = run(objective, batches, pairs=PAIRS if "layer" in METHODS[method].terms else [])
    assert tuple(output.components) == terms_of(method, trainable)  # the log's column order
    torch.testing.assert_close(output.loss.detach(), sum(output.components.values()))


@pytest.mark.parametrize("method", list(PEERS))
def test_the_peers_terms_cover_each_querys_own_group_only(models, method):
    term, loss = PEERS[method]
    # temperature 2: group_kl divides both sides and scales by T² (sentence-transformers)
    objective, batches = setup(models, method=method, teacher_trainable=False, temperature=2.0)
    output = run(objective, batches, pairs=[])
    with torch.no_grad():
        s_full, _ = dual_scores(objective.student, *batches[:2], [])
        t_full, _ = dual_scores(objective.teacher, *batches[2:], [])
    assert s_full.shape == (3, 6)  # every passage of the batch is scored...
    s_group, t_group = own_group(s_full, GROUP), own_group(t_full, GROUP)
    # ...and the term reads each query's own positive and negative: columns 2j, 2j + 1
    assert s_group.tolist() == [[s_full[j, 2 * j].item(), s_full[j, 2 * j + 1].item()]
                                for j in range(3)]
    options = {"temperature": 2.0} if term == "group_kl" else {}
    expected = loss(t_group, s_group, **options)
    assert expected.item() > 1e-6
    labels = gold_labels(3, GROUP)
    assert output.components.keys() == {"student_ce", term}
    torch.testing.assert_close(output.components[term], expected)
    torch.testing.assert_close(output.components["student_ce"], contrastive_loss(s_full, labels))
    # the in-batch candidates change nothing: another query's passages are not in the group
    if term == "group_kl":
        assert not torch.isclose(expected, group_kl(t_full, s_full, temperature=2.0))


@pytest.mark.parametrize("method", list(PEERS))
def test_a_peers_recipe_alone_is_student_ce_weighted_zero(models, method):
    term, _ = PEERS[method]
    objective, batches = setup(models, method=method, teacher_trainable=False,
                               coefficients={"student_ce": 0.0, term: 0.5})
    output = run(objective, batches, pairs=[])
    assert output.components.keys() == {term}
    torch.testing.assert_close(output.loss.detach(), 0.5 * output.components[term])


@pytest.mark.parametrize("method", list(PEERS))
def test_the_peers_with_a_cross_encoder_teacher_use_its_own_group_scores(models, method):
    term, loss = PEERS[method]
    objective, batches = setup(models, teacher_kind="cross", method=method)
    output = run(objective, batches, pairs=[])
    with torch.no_grad():
        t_final, _ = objective.teacher.score_groups(*batches[2:], GROUP, [])
        s_full, _ = dual_scores(objective.student, *batches[:2], [])
    assert t_final.shape == (3, GROUP)
    torch.testing.assert_close(output.components[term], loss(t_final, own_group(s_full, GROUP)))


def test_own_groups_are_read_from_this_processs_slice_of_the_global_candidates(models):
    objective, _ = setup(models, method="marginmse")
    # rank 1 of 2, 2 local queries in groups of 3: its passages are the global columns 6..11
    scores = torch.arange(2 * 12, dtype=torch.float64).view(2, 12)
    batching = Batching(num_queries=2, group_size=3, share=0.5, offset=6, world_size=2)
    assert objective._own_groups(scores, batching).tolist() == [[6, 7, 8], [21, 22, 23]]


def test_the_peers_need_hard_negatives(models):
    student, teacher = load_encoder(models["student"]), load_encoder(models["dual"])
    for method in ("none", "response", *PEERS):
        job = SimpleNamespace(method=method, distillation={},
                              optimisation={"negatives_per_query": 0, "seed": 1,
                                            "gradient_scale": "release"})
        if method in PEERS:
            with pytest.raises(ConfigError, match=f"'{method}'.*negatives_per_query >= 1"):
                DistillationObjective.build(job, student, teacher)
        else:
            DistillationObjective.build(job, student, teacher)
    objective, batches = setup(models, method="groupkl")
    student_q, student_p, teacher_q, teacher_p = batches
    first = {key: value[::2] for key, value in student_p.items()}  # positives only: g = 1
    first_t = {key: value[::2] for key, value in teacher_p.items()}
    with pytest.raises(ValueError, match="hard negative"):
        objective(student_q, first, teacher_q, first_t, group_size=1)


def test_response_method_has_no_layer_term_and_none_no_teacher(models):
    objective, batches = setup(models, method="response")
    assert run(objective, batches).components.keys() == {
        "student_ce", "teacher_ce", "response_kl", "reverse_kl"
    }
    frozen, batches = setup(models, method="response", teacher_trainable=False)
    assert run(frozen, batches).components.keys() == {"student_ce", "response_kl"}
    alone, batches = setup(models, method="none")
    assert alone.teacher is None
    output = alone(*batches[:2], group_size=GROUP)
    assert output.components.keys() == {"student_ce"} and output.layer_weights is None


def grads_reach(module) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


# Which model a term alone sends gradients to, given (teacher_trainable, detach_teacher_targets).
# None: the term does not exist in that setting (teacher-only terms of a frozen teacher).
# detach_teacher_targets: no gradient from the student's terms reaches the teacher, and the
# teacher still trains on its own terms (its CE, and the reverse KL with the student as target).
def expected_flow(term, trainable, detach):
    teacher_only = term in ("teacher_ce", "reverse_kl")
    if teacher_only and not trainable:
        return None
    to_student = {
        "student_ce": True,
        "teacher_ce": False,
        "response_kl": True,
        "margin_mse": True,
        "group_kl": True,
        "reverse_kl": not detach,
        "layer": True,
    }[term]
    to_teacher = {
        "student_ce": False,
        "teacher_ce": True,
        "response_kl": trainable and not detach,
        "margin_mse": trainable and not detach,
        "group_kl": trainable and not detach,
        "reverse_kl": True,
        "layer": trainable and not detach,
    }[term]
    return to_student, to_teacher


@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("trainable", [True, False])
@pytest.mark.parametrize("term", TERMS)
def test_gradients_reach_the_teacher_exactly_when_the_switches_allow(
    models, term, trainable, detach
):
    coefficients = {name: float(name == term) for name in TERMS}
    settings = {"teacher_trainable": trainable, "detach_teacher_targets": detach,
                "coefficients": coefficients}
    method = next((m for m, (peer, _) in PEERS.items() if peer == term), "lead")
    expected = expected_flow(term, trainable, detach)
    if expected is None:
        with pytest.raises(ConfigError, match="coefficient 0"):
            setup(models, method=method, **settings)
        return
    objective, batches = setup(models, method=method, **settings)
    output = run(objective, batches)
    assert output.components.keys() == {term}
    output.loss.backward()
    assert (grads_reach(objective.student), grads_reach(objective.teacher)) == expected
    assert any(p.requires_grad for p in objective.teacher.parameters()) == trainable


def test_a_frozen_teacher_stays_in_eval_mode(models):
    objective, _ = setup(models, teacher_trainable=False)
    objective.train()
    assert objective.student.training and not objective.teacher.training
    joint, _ = setup(models)
    joint.train()
    assert joint.teacher.training  # the release trains the teacher with dropout on


def test_colbert_teacher_scores_every_passage_of_the_batch_by_maxsim(models):
    objective, batches = setup(models, teacher_kind="colbert", coefficients={"layer": 0.0})
    output = run(objective, batches)
    teacher = objective.teacher
    with torch.no_grad():
        q, p = teacher.encode_query(batches[2]), teacher.encode_passage(batches[3])
        t_final = teacher.compute_similarity(q.final, p.final, q.mask, p.mask)
        s_final, _ = dual_scores(objective.student, *batches[:2], [])
    assert t_final.shape == (3, 6)
    torch.testing.assert_close(output.components["response_kl"], response_kl(t_final, s_final))
    torch.testing.assert_close(
        output.components["teacher_ce"], contrastive_loss(t_final, gold_labels(3, GROUP))
    )


def test_cross_encoder_teacher_uses_each_querys_own_group(models):
    objective, batches = setup(models, teacher_kind="cross")
    output = run(objective, batches)
    with torch.no_grad():
        t_final, t_layers = objective.teacher.score_groups(*batches[2:], GROUP, [1, 3])
        s_full, s_layers = dual_scores(objective.student, *batches[:2], [1, 2])
    s_final = own_group(s_full, GROUP)
    s_layers = [own_group(s, GROUP) for s in s_layers]
    assert t_final.shape == s_final.shape == (3, GROUP)
    labels = torch.zeros(3, dtype=torch.long)  # the positive leads its group
    layer, _ = lead_layer_loss([t_layers[1], t_layers[3]], s_layers, labels)
    torch.testing.assert_close(output.components["student_ce"], contrastive_loss(s_final, labels))
    torch.testing.assert_close(output.components["teacher_ce"], contrastive_loss(t_final, labels))
    torch.testing.assert_close(output.components["response_kl"], response_kl(t_final, s_final))
    torch.testing.assert_close(output.components["layer"], layer)


def test_bad_uses_are_refused(models):
    student = load_encoder(models["student"])
    with pytest.raises(ConfigError, match="'lead' needs a teacher"):
        DistillationObjective(student, None, "lead")
    with pytest.raises(ConfigError, match="'layers' is unknown"):
        DistillationObjective(student, None, "layers")
    objective, batches = setup(models)
    with pytest.raises(ValueError, match="layer pair"):
        run(objective, batches, pairs=[])
    with pytest.raises(ConfigError, match="layer 4 does not exist"):
        run(objective, batches, pairs=[(4, 1)])
    with pytest.raises(ValueError, match="need 9 passages, got 6"):
        objective(*batches, layer_pairs=PAIRS, group_size=3)


def test_a_few_steps_of_lead_lower_the_loss_across_vocabularies_sizes_and_depths(models):
    objective, batches = setup(models)  # eval mode: no dropout, so the steps are deterministic
    student, teacher = objective.student, objective.teacher
    assert len(student.tokenizer) != len(teacher.tokenizer)
    assert (student.hidden_size, student.num_layers) != (teacher.hidden_size, teacher.num_layers)
    optimizer = torch.optim.AdamW(
        [p for p in objective.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0
    )
    losses = []
    for _ in range(6):
        output = run(objective, batches)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
    with torch.no_grad():
        losses.append(run(objective, batches).loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def _layer_vectors(model, batch_):
    """What the teacher's layer cache holds for a batch: (N, L, d) pooled states of every block."""
    layers = list(range(1, model.num_layers + 1))
    reps = model.encode_passage(batch_, layers)
    return torch.stack([reps.layers[i] for i in layers], dim=1)


@pytest.mark.parametrize("method", ["response", "lead", *PEERS])
def test_a_frozen_teachers_cached_layers_give_the_live_teachers_loss(models, method):
    objective, batches = setup(models, method=method, teacher_trainable=False)
    teacher = objective.teacher
    with torch.no_grad():
        cached = (_layer_vectors(teacher, batches[2]), _layer_vectors(teacher, batches[3]))
    pairs = PAIRS if method == "lead" else []
    live = run(objective, batches, pairs=pairs)
    from_cache = objective(*batches[:2], *cached, layer_pairs=pairs, group_size=GROUP)
    assert live.components.keys() == set(terms_of(method, teacher_trainable=False))
    assert live.components.keys() == from_cache.components.keys()
    for name, value in live.components.items():
        torch.testing.assert_close(from_cache.components[name], value, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(from_cache.loss, live.loss, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def cosine_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("cosine")
    student_tok = make_tokenizer(root / "student-tok", vocab_size=90)
    teacher_tok = make_tokenizer(root / "teacher-tok", vocab_size=140, lowercase=False)
    dirs = {
        "student": make_model(root / "student", student_tok, layers=2, hidden=16, pooling="mean",
                              similarity="cosine", scale=20.0),
        "teacher": make_model(root / "teacher", teacher_tok, layers=3, hidden=24, pooling="mean",
                              similarity="cosine", scale=10.0, seed=1),
    }
    for seed, path in enumerate(dirs.values()):
        spread_weights(path, seed)
    return dirs


@pytest.mark.parametrize("layer_similarity", ["model", "dot"])
def test_cosine_models_are_scored_as_trained_and_their_layers_as_configured(
    cosine_models, layer_similarity
):
    student = load_encoder(cosine_models["student"])
    teacher = load_encoder(cosine_models["teacher"])
    objective = DistillationObjective(student, teacher, "lead", {
        "teacher_trainable": False, "layer_similarity": layer_similarity}).eval()
    batches = (batch(student, QUERIES), batch(student, PASSAGES),
               batch(teacher, QUERIES), batch(teacher, PASSAGES))
    output = run(objective, batches)
    normalize = torch.nn.functional.normalize

    def scores(model, queries, passages, layers, scale):
        q, p = model.encode_query(queries, layers), model.encode_passage(passages, layers)
        final = scale * normalize(q.final, dim=-1) @ normalize(p.final, dim=-1).T
        if layer_similarity == "model":
            per_layer = [scale * normalize(q.layers[i], dim=-1) @ normalize(p.layers[i], dim=-1).T
                         for i in layers]
        else:
            per_layer = [q.layers[i] @ p.layers[i].T for i in layers]
        return final, per_layer

    with torch.no_grad():
        s_final, s_layers = scores(student, *batches[:2], [1, 2], 20.0)
        t_final, t_layers = scores(teacher, *batches[2:], [1, 3], 10.0)
    labels = gold_labels(3, GROUP)
    layer, _ = lead_layer_loss(t_layers, s_layers, labels)
    torch.testing.assert_close(output.components["student_ce"], contrastive_loss(s_final, labels))
    torch.testing.assert_close(output.components["response_kl"], response_kl(t_final, s_final))
    torch.testing.assert_close(output.components["layer"], layer)


@pytest.mark.parametrize("method", ["lead", *PEERS])
def test_loss_terms_are_fp32_under_bf16_autocast(models, method):
    objective, batches = setup(models, method=method)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = run(objective, batches, pairs=PAIRS if method == "lead" else [])
    assert output.loss.dtype == torch.float32
    assert all(value.dtype == torch.float32 for value in output.components.values())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "settings", "columns"),
    [
        ("none", {}, {"loss", "student_ce"}),
        ("response", {"teacher_trainable": False}, {"loss", "student_ce", "response_kl"}),
        ("marginmse", {"teacher_trainable": False}, {"loss", "student_ce", "margin_mse"}),
        # a peer's recipe alone
        ("groupkl", {"teacher_trainable": False, "coefficients": {"student_ce": 0.0}},
         {"loss", "group_kl"}),
    ],
)
def test_baselines_train_only_what_their_method_says(world, tmp_path, method, settings, columns):
    optimisation = {"steps": 3, "eval_every": 3, "checkpoint_every": 3}
    assert main(distill_argv(world, tmp_path, method, optimisation=optimisation, **settings)) == 0
    log = read_log(tmp_path)
    losses = set(log.columns) - {"step", "lr", "grad_norm", "layers", "layer_weights", *TIMING}
    assert {c for c in losses if not c.startswith("dev_")} == columns
    assert set(read_checkpoint(tmp_path)["models"]) == {"student"}  # the teacher is not trained
    assert log["layers"].dropna().map(len).eq(0).all() and log["layers"].notna().sum() == 3


def test_lead_takes_its_layer_scores_from_the_same_forward_pass_as_response(world):
    """LEAD costs no extra encoder forward: one per model for queries and one for passages."""
    from lead.distributed import Processes
    from lead.modeling.encoders import load_encoder
    from lead.training.distillation import DistillationObjective
    from lead.training.loop import train_step
    from lead.training.optim import make_trainee

    data = training_data(world)
    counts = {}
    for method, pairs in (("response", []), ("lead", [(2, 1), (3, 2)])):
        student, teacher = load_encoder(world["student"]), load_encoder(world["teacher"])
        calls = []
        for model in (student, teacher):
            model.backbone.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        objective = DistillationObjective(student, teacher, method, {})
        opt = resolve("distillation", {"optimisation": optimisation()})["optimisation"]
        trainees = [make_trainee("student", student, opt, 1e-3),
                    make_trainee("teacher", teacher, opt, 1e-3)]
        train_step(objective, trainees, [data.micro_batch(0)], pairs, group_size=4,
                   autocast=contextlib.nullcontext, procs=Processes(0, 1, torch.device("cpu")),
                   accumulation=1)
        counts[method] = len(calls)
    assert counts == {"response": 4, "lead": 4}


# Data parallelism: the peers' terms read each process's own slice of the global candidates.
DP_QUERIES = [*QUERIES, "which passage answers the query"]
DP_GROUP = 3


def _dp_run(models, method: str, rows: slice) -> tuple[float, dict]:
    """The peer's term alone (both models trained) on `rows` of the 4 queries, its loss and
    gradients averaged over the processes as DistributedDataParallel averages them."""
    term, _ = PEERS[method]
    student, teacher = load_encoder(models["student"]), load_encoder(models["dual"])
    coefficients = {name: float(name == term) for name in TERMS}
    objective = DistillationObjective(student, teacher, method, {"coefficients": coefficients},
                                      gradient_scale="exact").eval()
    objective.double()
    passages = [f"{TEXTS[(3 * i + j) % len(TEXTS)]} {'more words ' * j}"
                for i in range(len(DP_QUERIES)) for j in range(DP_GROUP)]
    own = slice(rows.start * DP_GROUP, rows.stop * DP_GROUP)
    batches = []
    for model in (student, teacher):
        queries, texts = model.tokenizer(DP_QUERIES)["input_ids"], model.tokenizer(passages)[
            "input_ids"]
        batches += [collate(queries[rows], model.pad_id), collate(texts[own], model.pad_id)]
    output = objective(*batches, group_size=DP_GROUP)
    assert output.components.keys() == {term}
    output.loss.backward()
    grads = {name: p.grad for name, p in objective.named_parameters() if p.grad is not None}
    loss = output.loss.detach()
    if dist.is_initialized():
        for tensor in [loss, *grads.values()]:
            dist.all_reduce(tensor)
            tensor /= dist.get_world_size()
    return loss.item(), grads


def _dp_worker(rank: int, port: int, models, out) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    try:
        for method in PEERS:
            for first in (2, 3):  # even and uneven splits of the 4 queries
                rows = slice(0, first) if rank == 0 else slice(first, len(DP_QUERIES))
                torch.save(_dp_run(models, method, rows), out / f"{method}-{first}-{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_compute_the_peers_terms_of_one_process_on_the_whole_batch(
    models, tmp_path
):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_dp_worker, args=(port, models, tmp_path), nprocs=2, join=True)
    for method in PEERS:
        single_loss, single_grads = _dp_run(models, method, slice(0, len(DP_QUERIES)))
        assert any(name.startswith("teacher.") for name in single_grads)
        for first in (2, 3):
            for rank in (0, 1):
                loss, grads = torch.load(tmp_path / f"{method}-{first}-{rank}.pt")
                assert loss == pytest.approx(single_loss, abs=1e-9), (method, first)
                assert grads.keys() == single_grads.keys()
                for name, grad in grads.items():
                    torch.testing.assert_close(grad, single_grads[name], atol=1e-9, rtol=1e-7,
                                               msg=f"{method} {first}: {name}")
