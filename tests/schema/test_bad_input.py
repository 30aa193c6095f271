"""Every client mistake gets a 4xx or a GraphQL error with a stable code and a message
saying what to send instead: never a 500, never the masked "Internal server error."."""

import json
from base64 import b64encode

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from schema import schema
from testbed.factories import make_token, make_user

pytestmark = pytest.mark.django_db


def _b64(text: str) -> str:
    return b64encode(text.encode()).decode()


@pytest.fixture
def api():
    client = Client(raise_request_exception=False)
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {make_token(make_user())}"
    return client


def _post(api: Client, body, content_type: str = "application/json"):
    return api.post("/graphql/", body, content_type=content_type)


@pytest.mark.parametrize(
    ("document", "code"),
    [
        ('{ job(id: "123") { id } }', "INVALID_ID"),
        ('{ job(id: "<job id>") { id } }', "INVALID_ID"),
        (f'{{ job(id: "{_b64("Job:abc")}") {{ id }} }}', "INVALID_ID"),
        ('mutation { jobCancel(id: "123") { errors { code } } }', "INVALID_ID"),
        ('{ jobs(after: "zzz") { edges { node { id } } } }', "INVALID_CURSOR"),
        (
            f'{{ jobs(after: "{_b64("arrayconnection:x")}") {{ edges {{ cursor }} }} }}',
            "INVALID_CURSOR",
        ),
        ("{ jobs(first: 101) { edges { node { id } } } }", "INVALID_PAGE_SIZE"),
        ("{ jobs(first: -1) { edges { node { id } } } }", "INVALID_PAGE_SIZE"),
        (
            'mutation { salesReportGenerate(input: {startDate: "2024-13-45", endDate: "99999-01-01"})'
            " { errors { code } } }",
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            'mutation { paymentProcess(input: {orderId: "1", method: "card", idempotencyKey: "k"})'
            " { errors { code } } }",
            "INVALID_ID",
        ),
        (
            '{ products(filters: {name: {regex: "(.|.)*!"}}) { edges { node { id } } } }',
            "GRAPHQL_VALIDATION_FAILED",
        ),
    ],
    ids=[
        "numeric-id",
        "placeholder-id",
        "non-integer-key",
        "mutation-id",
        "cursor",
        "cursor-key",
        "first-over-100",
        "first-negative",
        "out-of-range-date",
        "id-in-input",
        "regex-lookup",
    ],
)
def test_a_bad_argument_is_a_coded_error(api, document, code):
    response = _post(api, json.dumps({"query": document}))

    assert response.status_code == 200
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == code
    assert error["message"] != "Internal server error."


def test_an_id_of_another_type_finds_nothing(api):
    body = _post(api, json.dumps({"query": f'{{ job(id: "{_b64("Order:1")}") {{ id }} }}'})).json()

    assert body["data"] == {"job": None}


@pytest.mark.parametrize(
    "body",
    ["null", '"a string"', "[1, 2]", "[]", b"\xff\xfe{", "[" * 100_000 + "]" * 100_000, "{"],
    ids=["null", "string", "list", "empty-list", "not-utf8", "100k-deep", "truncated"],
)
def test_a_body_that_is_not_one_json_object_is_a_400_saying_what_to_send(api, body):
    response = _post(api, body)

    assert response.status_code == 400
    assert response.content


@pytest.mark.parametrize(
    "files_map",
    [
        '{"0": ["variables.nope.deeper"]}',
        '{"0": "variables.file"}',
        '{"1": ["variables.file"]}',
        '{"0": ["variables.file.3"]}',
        '{"0": [5]}',
        "[1]",
    ],
    ids=["missing-path", "not-a-list", "unsent-file", "index-into-null", "not-a-string", "list"],
)
def test_a_multipart_map_that_points_nowhere_is_a_400(api, files_map):
    operations = json.dumps(
        {
            "query": "mutation($file: Upload!) { imageUpload(file: $file) { errors { code } } }",
            "variables": {"file": None},
        }
    )
    response = api.post(
        "/graphql/",
        {"operations": operations, "map": files_map, "0": SimpleUploadedFile("a.png", b"png")},
    )

    assert response.status_code == 400
    assert b"map" in response.content or b"JSON object" in response.content


def test_no_filter_offers_a_regular_expression_lookup():
    sdl = schema.as_str()

    assert "regex" not in sdl.lower()


def test_suggestions_are_hidden_when_introspection_is_off(api, settings):
    settings.GRAPHQL_INTROSPECTION = False

    error = _post(api, json.dumps({"query": "{ jobz { id } }"})).json()["errors"][0]

    assert error["message"] == "Cannot query field 'jobz' on type 'Query'."
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


def test_suggestions_help_while_introspection_is_on(api, settings):
    settings.GRAPHQL_INTROSPECTION = True

    error = _post(api, json.dumps({"query": "{ jobz { id } }"})).json()["errors"][0]

    assert "Did you mean 'job'" in error["message"]
