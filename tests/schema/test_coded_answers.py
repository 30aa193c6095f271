"""Answers a client can act on: each bad input below gets a 4xx or a GraphQL error with a
stable `extensions.code` and a message saying what to send instead, and the server logs
no traceback for it (a client's mistake is not the operator's)."""

import json
import logging
import sqlite3
from base64 import b64encode

import pytest
from django.db import OperationalError
from django.test import Client

from domains.infra.availability import unavailable_service
from domains.infra.redis import sync_client
from schema.limits import MAX_FILTER_TEXT
from schema.persisted import document_hash
from testbed.factories import make_order, make_product, make_token, make_user

pytestmark = pytest.mark.django_db

OUT_OF_RANGE = b64encode(b"arrayconnection:9223372036854775808").decode()
SSE = "text/event-stream"
APOLLO_MULTIPART = 'multipart/mixed; subscriptionSpec="1.0", application/json'
GRAPHQL_RESPONSE = "application/graphql-response+json"


@pytest.fixture
def api():
    client = Client(raise_request_exception=False)
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {make_token(make_user())}"
    return client


@pytest.fixture
def anonymous():
    return Client(raise_request_exception=False)


@pytest.fixture
def tracebacks(caplog):
    """The log records that carry a traceback, from any logger, once the test has run."""
    caplog.set_level(logging.INFO)
    return lambda: [r for r in caplog.records if r.exc_info]


def _post(client: Client, body: dict | str, **headers):
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post("/graphql/", data, content_type="application/json", **headers)


def _code(response) -> str:
    return response.json()["errors"][0]["extensions"]["code"]


@pytest.mark.parametrize(
    "document",
    [
        f'{{ jobs(after: "{OUT_OF_RANGE}") {{ edges {{ cursor }} }} }}',
        f'{{ products(after: "{OUT_OF_RANGE}") {{ edges {{ cursor }} }} }}',
        f'{{ orders(last: 2, before: "{OUT_OF_RANGE}") {{ edges {{ cursor }} }} }}',
    ],
    ids=["jobs", "products", "orders-last-before"],
)
def test_a_cursor_past_any_offset_is_an_invalid_cursor(api, tracebacks, document):
    make_product()
    make_order(customer=make_user(), lines=[(make_product(), 1)])

    response = _post(api, {"query": document})

    assert response.status_code == 200
    assert _code(response) == "INVALID_CURSOR"
    assert "pageInfo.endCursor" in response.json()["errors"][0]["message"]
    assert tracebacks() == []


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "sNaN", "1e999999"])
def test_a_price_filter_that_is_not_a_finite_number_is_coded(anonymous, tracebacks, value):
    make_product()
    literal = (
        f'{{ products(filters: {{price: {{gt: "{value}"}}}}) {{ edges {{ node {{ id }} }} }} }}'
    )
    by_variable = {
        "query": "query($p: Decimal!) { products(filters: {price: {gt: $p}}) { edges { node { id } } } }",
        "variables": {"p": value},
    }

    for body in ({"query": literal}, by_variable):
        response = _post(anonymous, body)

        assert response.status_code == 200
        error = response.json()["errors"][0]
        assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        assert '"12.50"' in error["message"]
    assert tracebacks() == []


def test_a_finite_price_filter_still_filters(anonymous):
    make_product(price="5.00")
    make_product(price="50.00")

    response = _post(
        anonymous,
        {"query": '{ products(filters: {price: {gt: "10"}}) { edges { node { price } } } }'},
    )

    assert response.json()["data"]["products"]["edges"] == [{"node": {"price": "50.00"}}]


@pytest.mark.parametrize("how", ["literal", "variable"])
def test_a_string_filter_past_its_length_is_coded_not_an_outage(anonymous, tracebacks, how):
    make_product()
    text = "a" * 60_000
    if how == "literal":
        body = {
            "query": f'{{ products(filters: {{name: {{contains: "{text}"}}}}) {{ edges {{ cursor }} }} }}'
        }
    else:
        body = {
            "query": "query($t: String!) { products(filters: {name: {contains: $t}}) { edges { cursor } } }",
            "variables": {"t": text},
        }

    response = _post(anonymous, body)

    assert response.status_code == 200
    assert "Retry-After" not in response.headers
    assert _code(response) == "FILTER_TOO_LARGE"
    assert f"{MAX_FILTER_TEXT:,} characters" in response.json()["errors"][0]["message"]
    assert tracebacks() == []


def test_a_filter_of_too_many_values_is_coded(anonymous, tracebacks):
    response = _post(
        anonymous,
        {
            "query": "query($s: [String!]!) { products(filters: {sku: {inList: $s}}) { edges { cursor } } }",
            "variables": {"s": [f"sku-{n}" for n in range(5_000)]},
        },
    )

    assert _code(response) == "FILTER_TOO_LARGE"
    assert tracebacks() == []


def _sqlite_error(statement: str, *args) -> OperationalError:
    database = sqlite3.connect(":memory:")
    try:
        database.execute(statement, args)
    except sqlite3.OperationalError as error:
        try:
            raise OperationalError(*error.args) from error
        except OperationalError as wrapped:
            return wrapped
    raise AssertionError("the statement ran")


def test_only_a_passing_database_condition_is_an_outage(tmp_path):
    too_complex = _sqlite_error("SELECT 'a' LIKE ?", "%" + "a" * 60_000 + "%")
    path = tmp_path / "db.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    waiter = sqlite3.connect(path, timeout=0)
    try:
        waiter.execute("SELECT * FROM t")
    except sqlite3.OperationalError as error:
        try:
            raise OperationalError(*error.args) from error
        except OperationalError as wrapped:
            locked = wrapped
    finally:
        holder.rollback()
        holder.close()
        waiter.close()

    assert "too complex" in str(too_complex)
    assert unavailable_service(too_complex) is None
    assert "locked" in str(locked)
    assert unavailable_service(locked) == "database"


# --- the transport an operation needs ------------------------------------------------


@pytest.mark.parametrize(
    "document",
    ["{ me { email } }", 'mutation { tokenRevoke(token: "x") { revoked } }'],
    ids=["query", "mutation"],
)
def test_a_query_or_mutation_asked_for_only_as_a_stream_is_406_saying_to_accept_json(
    api, tracebacks, document
):
    response = _post(api, {"query": document}, HTTP_ACCEPT=SSE)

    assert response.status_code == 406
    assert _code(response) == "NOT_ACCEPTABLE"
    assert "application/json" in response.json()["errors"][0]["message"]
    assert tracebacks() == []


def test_a_query_with_apollos_multipart_accept_is_answered_as_the_json_it_accepts(api):
    response = _post(api, {"query": "{ me { email } }"}, HTTP_ACCEPT=APOLLO_MULTIPART)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["data"]["me"]["email"]


@pytest.mark.parametrize("accept", [None, "application/json", GRAPHQL_RESPONSE])
def test_a_subscription_posted_as_plain_json_is_400_saying_how_to_stream_it(
    api, tracebacks, accept
):
    headers = {"HTTP_ACCEPT": accept} if accept else {}

    response = _post(api, {"query": "subscription { jobEvents { seq } }"}, **headers)

    assert response.status_code == 400
    assert _code(response) == "STREAM_REQUIRED"
    assert "text/event-stream" in response.json()["errors"][0]["message"]
    assert "data" not in response.json()
    assert tracebacks() == []


def test_a_mutation_over_get_is_405_saying_post(api, tracebacks):
    response = api.get("/graphql/", {"query": 'mutation { tokenRevoke(token: "x") { revoked } }'})

    assert response.status_code == 405
    assert _code(response) == "METHOD_NOT_ALLOWED"
    assert "POST" in response.json()["errors"][0]["message"]
    assert tracebacks() == []


# --- bodies ----------------------------------------------------------------------------


def test_a_10_mb_json_body_is_a_coded_413(api, tracebacks):
    body = json.dumps({"query": "{ me { email } }", "variables": {"pad": "x" * 10_000_000}})

    response = _post(api, body)

    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert _code(response) == "BODY_TOO_LARGE"
    assert "multipart" in response.json()["errors"][0]["message"]
    assert tracebacks() == []


def test_a_syntax_error_carries_its_code(api, tracebacks):
    response = _post(api, {"query": "{ me { "})

    assert response.status_code == 200
    assert _code(response) == "GRAPHQL_PARSE_FAILED"
    assert tracebacks() == []


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        ('{"query": "{ me { email } }"}', "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("{", "application/json", 400, "BAD_REQUEST"),
        ('{"notquery": "{ __typename }"}', "application/json", 400, "BAD_REQUEST"),
        ('{"query": "{ __typename }", "operationName": 5}', "application/json", 400, "BAD_REQUEST"),
    ],
    ids=["content-type", "not-json", "no-query", "operation-name-type"],
)
def test_a_malformed_request_is_a_coded_4xx(api, tracebacks, body, content_type, status, code):
    response = api.post("/graphql/", body, content_type=content_type)

    assert response.status_code == status
    assert _code(response) == code
    assert tracebacks() == []


# --- application/graphql-response+json -------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"query": "{"}, "GRAPHQL_PARSE_FAILED"),
        ({"query": "{ nope }"}, "GRAPHQL_VALIDATION_FAILED"),
        (
            {"query": "query($id: ID!) { __typename }", "variables": {"id": None}},
            "GRAPHQL_VALIDATION_FAILED",
        ),
        ({"query": "{ jobs(first: 500) { edges { cursor } } }"}, "INVALID_PAGE_SIZE"),
    ],
    ids=["parse", "validation", "variable-coercion", "limit"],
)
def test_a_request_error_is_400_without_data_for_graphql_response_json(api, body, code):
    response = _post(api, body, HTTP_ACCEPT=GRAPHQL_RESPONSE)

    assert response.status_code == 400
    assert response["Content-Type"] == f"{GRAPHQL_RESPONSE}; charset=utf-8"
    assert "data" not in response.json()
    assert _code(response) == code


def test_application_json_keeps_200_with_null_data_for_a_request_error(api):
    response = _post(api, {"query": "{ nope }"}, HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json()["data"] is None


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (GRAPHQL_RESPONSE, GRAPHQL_RESPONSE),
        (f"{GRAPHQL_RESPONSE}, application/json;q=0.9", GRAPHQL_RESPONSE),
        (f"application/json, {GRAPHQL_RESPONSE};q=0.5", "application/json"),
        ("*/*", "application/json"),
        (None, "application/json"),
    ],
)
def test_the_response_media_type_is_negotiated(api, accept, media_type):
    headers = {"HTTP_ACCEPT": accept} if accept else {}

    response = _post(api, {"query": "{ me { email } }"}, **headers)

    assert response.status_code == 200
    assert response["Content-Type"].split(";")[0] == media_type
    assert response.json()["data"]["me"]["email"]


def test_a_field_error_is_a_200_for_graphql_response_json_too(anonymous):
    response = _post(
        anonymous,
        {"query": "{ __typename jobStats { since } }"},
        HTTP_ACCEPT=GRAPHQL_RESPONSE,
    )

    assert response.status_code == 200
    assert _code(response) == "PERMISSION_DENIED"


# --- automatic persisted queries ---------------------------------------------------------


def _persisted(query: str | None, sha: str) -> dict:
    body = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha}}}
    return body if query is None else {**body, "query": query}


def _stored(sha: str) -> bool:
    return sync_client().exists(f"apq:{sha}") == 1


def test_a_persisted_document_over_its_size_is_refused_and_not_stored(anonymous, settings):
    settings.GRAPHQL_APQ_MAX_BYTES = 1024
    document = "{ __typename }" + " " * 2048
    sha = document_hash(document)

    response = _post(anonymous, _persisted(document, sha))

    assert response.status_code == 400
    assert _code(response) == "PERSISTED_QUERY_TOO_LARGE"
    assert "without extensions.persistedQuery" in response.json()["errors"][0]["message"]
    assert not _stored(sha)


@pytest.mark.parametrize(
    ("document", "code"),
    [
        ("{ nope }", "GRAPHQL_VALIDATION_FAILED"),
        ("{ " + " ".join(f"a{n}: __typename" for n in range(20)) + " }", "TOO_MANY_ALIASES"),
        (
            "{ products(first: 100) { edges { node { orders: category { products(first: 100) "
            "{ edges { node { id name sku } } } } } } } }",
            "QUERY_TOO_COSTLY",
        ),
    ],
    ids=["invalid", "aliases", "cost"],
)
def test_a_persisted_document_the_schema_refuses_is_answered_and_not_stored(
    anonymous, tracebacks, document, code
):
    sha = document_hash(document)

    response = _post(anonymous, _persisted(document, sha))

    assert _code(response) == code
    assert not _stored(sha)
    assert tracebacks() == []


def test_persisted_documents_registered_by_one_client_are_throttled(anonymous, settings):
    settings.THROTTLES = {**settings.THROTTLES, "apq_register": {"address": (1, 3)}}
    documents = [f"query Q{n} {{ __typename }}" for n in range(5)]

    answers = [_post(anonymous, _persisted(d, document_hash(d))) for d in documents]

    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert _code(answers[-1]) == "RATE_LIMITED"
    assert int(answers[-1]["Retry-After"]) > 0
    assert [_stored(document_hash(d)) for d in documents] == [True, True, True, False, False]
    # Another client has its own budget.
    other = Client(REMOTE_ADDR="10.0.0.9")
    document = "query Other { __typename }"
    assert _post(other, _persisted(document, document_hash(document))).status_code == 200


def test_a_valid_persisted_document_is_registered_then_served_by_hash(anonymous):
    document = "query Typename { __typename }"
    sha = document_hash(document)

    registered = _post(anonymous, _persisted(document, sha))
    by_hash = _post(anonymous, _persisted(None, sha))

    assert registered.json()["data"] == {"__typename": "Query"}
    assert by_hash.json()["data"] == {"__typename": "Query"}


@pytest.mark.parametrize(
    ("driver_error", "service"),
    [
        ("DeadlockDetected", "database"),
        ("LockNotAvailable", "database"),
        ("AdminShutdown", "database"),
        ("TooManyConnections", "database"),
        ("ProgramLimitExceeded", None),
        ("StatementTooComplex", None),
    ],
)
def test_a_postgresql_error_is_an_outage_by_its_sqlstate(driver_error, service):
    import psycopg

    cause = getattr(psycopg.errors, driver_error)()
    with pytest.raises(OperationalError) as wrapped:
        raise OperationalError(str(cause)) from cause

    assert unavailable_service(wrapped.value) == service
