"""The document limits: measured once per fragment, refused with a code before validation,
the cost returned in the response's extensions."""

import json

import pytest
from django.test import Client
from graphql import parse

from schema.limits import Refused, document_measure

pytestmark = pytest.mark.django_db


def fragment_fan_out(levels: int) -> str:
    """Each fragment spreads the next twice: 2^levels fields once expanded, under 1 KB."""
    fragments = " ".join(
        f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(levels)
    )
    return f"query Q {{ ...F0 }} {fragments} fragment F{levels} on Query {{ me {{ id }} }}"


def _post(document: str, variables: dict | None = None) -> dict:
    response = Client().post(
        "/graphql/",
        json.dumps({"query": document, "variables": variables or {}}),
        content_type="application/json",
    )
    assert response.status_code == 200
    return response.json()


def test_the_fragment_fan_out_is_refused_as_too_costly(settings):
    body = _post(fragment_fan_out(24))

    assert body["errors"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY"
    assert body["errors"][0]["extensions"]["maxCost"] == settings.GRAPHQL_MAX_COST
    assert "data" not in body or body["data"] is None


def test_a_fragment_is_measured_once_however_often_it_is_spread():
    # 2^300 fields once expanded: only a measure memoised per fragment ever returns.
    measure = document_measure(parse(fragment_fan_out(300)), cap=10**6)

    assert measure.cost == 10**6  # saturated at the cap
    assert measure.depth == 2


def test_the_cost_counts_page_sizes_and_is_returned_in_the_extensions():
    body = _post("query($n: Int) { jobs(first: $n) { edges { node { id status } } } }", {"n": 50})

    # jobs (1) + 50 x (edges 1 + node 1 + id 1 + status 1)
    assert body["extensions"]["cost"] == 1 + 50 * 4


def test_depth_through_fragments_is_refused_with_a_code(settings):
    nested = "a { " * settings.GRAPHQL_MAX_DEPTH + "b" + " }" * settings.GRAPHQL_MAX_DEPTH
    body = _post(f"query {{ ...Deep }} fragment Deep on Query {{ me {{ {nested} }} }}")

    assert body["errors"][0]["extensions"]["code"] == "QUERY_TOO_DEEP"
    assert "exceeds maximum operation depth" in body["errors"][0]["message"]


def test_aliases_in_a_fragment_count_at_every_spread(settings):
    aliases = " ".join(f"a{i}: me {{ id }}" for i in range(settings.GRAPHQL_MAX_ALIASES // 2 + 1))
    body = _post(
        f"query {{ ...A ...B }} fragment A on Query {{ {aliases} }} fragment B on Query {{ ...A }}"
    )

    assert body["errors"][0]["extensions"]["code"] == "TOO_MANY_ALIASES"


@pytest.mark.parametrize(
    "document",
    [
        "query { ...A } fragment A on Query { ...A }",
        "query { me { id } } fragment A on Query { ...B } fragment B on Query { ...A }",
    ],
    ids=["self", "unused-pair"],
)
def test_a_fragment_cycle_is_refused_cleanly(document):
    body = _post(document)

    assert body["errors"][0]["extensions"]["code"] == "FRAGMENT_CYCLE"


def test_the_measure_refuses_a_cycle_without_recursing_for_ever():
    with pytest.raises(Refused):
        document_measure(parse("query { ...A } fragment A on Query { ...A }"), cap=100)
