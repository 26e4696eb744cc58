"""The objective of each method (lead.training.distillation): terms, gradients, training."""

from __future__ import annotations

import contextlib

import pytest
import torch
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
    lead_layer_loss,
    own_group,
    response_kl,
    reverse_kl,
)
from lead.modeling.encoders import load_encoder
from lead.training.distillation import DistillationObjective

GROUP = 2
PAIRS = [(1, 1), (3, 2)]
QUERIES = ["what does a student learn", "how do rivers reach the sea", "one vector per token"]
PASSAGES = TEXTS[:6]  # 3 queries x (1 positive + 1 negative)
TERMS = ("student_ce", "teacher_ce", "response_kl", "reverse_kl", "layer")


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
        "reverse_kl": not detach,
        "layer": True,
    }[term]
    to_teacher = {
        "student_ce": False,
        "teacher_ce": True,
        "response_kl": trainable and not detach,
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
    expected = expected_flow(term, trainable, detach)
    if expected is None:
        with pytest.raises(ConfigError, match="coefficient 0"):
            setup(models, **settings)
        return
    objective, batches = setup(models, **settings)
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


@pytest.mark.parametrize("method", ["response", "lead"])
def test_a_frozen_teachers_cached_layers_give_the_live_teachers_loss(models, method):
    objective, batches = setup(models, method=method, teacher_trainable=False)
    teacher = objective.teacher
    with torch.no_grad():
        cached = (_layer_vectors(teacher, batches[2]), _layer_vectors(teacher, batches[3]))
    live = run(objective, batches)
    from_cache = objective(*batches[:2], *cached, layer_pairs=PAIRS, group_size=GROUP)
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


def test_loss_terms_are_fp32_under_bf16_autocast(models):
    objective, batches = setup(models)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = run(objective, batches)
    assert output.loss.dtype == torch.float32
    assert all(value.dtype == torch.float32 for value in output.components.values())


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
