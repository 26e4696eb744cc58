"""lead.methods: the methods the schema lists are the ones training and the report know."""

from __future__ import annotations

from lead.config import schema
from lead.methods import (
    BASELINES,
    DISTILLING,
    GROUP_TERMS,
    JOINT_TERMS,
    LEAD,
    METHODS,
    TERMS,
    terms_of,
)


def test_the_schema_lists_exactly_the_methods_and_their_terms():
    distillation = schema()["properties"]["distillation"]["properties"]
    assert distillation["methods"]["items"]["enum"] == list(METHODS)
    assert set(distillation["coefficients"]["properties"]) == set(TERMS)
    assert {term for method in METHODS.values() for term in method.terms} | set(JOINT_TERMS) \
        == set(TERMS)


def test_each_method_says_what_it_trains_with():
    assert not METHODS["none"].distils
    assert DISTILLING == ("response", "lead", "marginmse", "groupkl")
    assert terms_of("lead", teacher_trainable=False) == ("student_ce", "response_kl", "layer")
    # the log's column order: TERMS order
    assert terms_of("lead", teacher_trainable=True) == (
        "student_ce", "teacher_ce", "response_kl", "reverse_kl", "layer")
    assert terms_of("none", teacher_trainable=True) == ("student_ce",)
    assert LEAD in METHODS


def test_the_peers_recipes_are_the_students_loss_plus_one_own_group_term():
    for method, term in (("marginmse", "margin_mse"), ("groupkl", "group_kl")):
        assert METHODS[method].terms == ("student_ce", term) and term in GROUP_TERMS
        assert terms_of(method, teacher_trainable=False) == ("student_ce", term)
        # a jointly trained teacher adds its own terms, as it does to response
        assert terms_of(method, teacher_trainable=True) == (
            "student_ce", "teacher_ce", term, "reverse_kl")
    for method in METHODS.values():
        assert terms_of(method.name, True) == tuple(t for t in TERMS
                                                    if t in terms_of(method.name, True))


def test_the_report_tests_lead_against_every_other_method():
    assert set(BASELINES) == set(METHODS) - {LEAD}
    assert BASELINES[:2] == ("response", "none")  # the existing reports' rows come first
