"""lead.methods: the methods the schema lists are the ones training and the report know."""

from __future__ import annotations

from lead.config import schema
from lead.methods import DISTILLING, JOINT_TERMS, LEAD, METHODS, TERMS, terms_of


def test_the_schema_lists_exactly_the_methods_and_their_terms():
    distillation = schema()["properties"]["distillation"]["properties"]
    assert distillation["methods"]["items"]["enum"] == list(METHODS)
    assert set(distillation["coefficients"]["properties"]) == set(TERMS)
    assert {term for method in METHODS.values() for term in method.terms} | set(JOINT_TERMS) \
        == set(TERMS)


def test_each_method_says_what_it_trains_with():
    assert not METHODS["none"].distils and DISTILLING == ("response", "lead")
    assert terms_of("lead", teacher_trainable=False) == ("student_ce", "response_kl", "layer")
    assert terms_of("lead", teacher_trainable=True) == TERMS  # the log's column order
    assert terms_of("none", teacher_trainable=True) == ("student_ce",)
    assert LEAD in METHODS
