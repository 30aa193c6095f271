"""Hostile documents are refused before any resolver runs; unexpected errors are masked."""

import json
import logging

import pytest
import strawberry
from django.test import Client

from domains.accounts.models import User
from schema.extensions import ClientErrors, ErrorLoggingSchema

pytestmark = pytest.mark.django_db


def _post(client: Client, query: str, **extra) -> dict:
    response = client.post(
        "/graphql/", json.dumps({"query": query}), content_type="application/json", **extra
    )
    return response.status_code, response.json()


def _register(alias: str) -> str:
    return (
        f'{alias}: userRegister(input: {{email: "{alias}@example.com", password: "a-long-passphrase-1"}})'
        " { errors { code } }"
    )


def test_too_many_aliases_is_refused_before_any_mutation_runs(settings):
    document = (
        "mutation {"
        + " ".join(_register(f"a{i}") for i in range(settings.GRAPHQL_MAX_ALIASES + 1))
        + "}"
    )

    _, body = _post(Client(), document)

    assert "aliases" in body["errors"][0]["message"].lower()
    assert User.objects.count() == 0


def test_too_deep_a_document_is_refused():
    document = "query { me { " + "a { " * 20 + "b" + " }" * 20 + " } }"

    _, body = _post(Client(), document)

    assert "exceeds maximum operation depth" in body["errors"][0]["message"]


def test_too_many_tokens_is_refused_before_any_mutation_runs(settings):
    fields = " ".join(["errors { code field message }"] * (settings.GRAPHQL_MAX_TOKENS // 6))
    document = (
        'mutation { userRegister(input: {email: "t@example.com", password: "a-long-passphrase-1"}) { '
        + fields
        + " } }"
    )

    _, body = _post(Client(), document)

    assert f"more than {settings.GRAPHQL_MAX_TOKENS} tokens" in body["errors"][0]["message"]
    assert User.objects.count() == 0


def test_a_syntax_error_is_reported_plainly():
    _, body = _post(Client(), "query { me { ")

    assert "Syntax Error" in body["errors"][0]["message"]


def test_unexpected_errors_are_masked_and_logged_with_the_request_id(caplog):
    @strawberry.type
    class Query:
        @strawberry.field
        def boom(self) -> str:
            raise RuntimeError("SELECT secret FROM table")

    schema = ErrorLoggingSchema(query=Query, extensions=[ClientErrors])

    with caplog.at_level(logging.ERROR, logger="schema.errors"):
        result = schema.execute_sync("{ boom }")

    assert result.errors[0].message == "Internal server error."
    assert "secret" not in json.dumps(result.errors[0].formatted)
    assert result.errors[0].extensions["code"] == "INTERNAL_SERVER_ERROR"
    assert "requestId" in result.errors[0].extensions
    assert "graphql.unexpected_error" in caplog.text


def test_introspection_can_be_switched_off(settings):
    from strawberry.extensions import DisableIntrospection

    from schema.extensions import schema_extensions

    settings.GRAPHQL_INTROSPECTION = False

    assert DisableIntrospection in schema_extensions()
