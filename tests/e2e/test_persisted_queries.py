"""Persisted documents on a real server: Apollo's APQ flow over POST, GET and a websocket,
and trusted-documents mode (a manifest: only its documents run)."""

import asyncio
import json

import httpx
import pytest

from schema.persisted import document_hash
from testbed.graphql import Subscription
from testbed.stack import Server

pytestmark = pytest.mark.e2e

VIEWER = "query Viewer { me { email } }"


def _persisted(sha: str) -> dict:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha}}


def _post(url: str, token: str, **body) -> httpx.Response:
    return httpx.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _code(response: httpx.Response) -> str:
    return response.json()["errors"][0]["extensions"]["code"]


def test_apq_hash_alone_is_not_found_then_registered_then_served_over_post_and_get(live, user):
    client = live.client(user)
    url, sha = live.server.graphql_url, document_hash(VIEWER)

    unknown = _post(url, client.token, extensions=_persisted(sha))
    registered = _post(url, client.token, query=VIEWER, extensions=_persisted(sha))
    by_hash = _post(url, client.token, extensions=_persisted(sha))
    by_get = httpx.get(
        url,
        params={"operationName": "Viewer", "extensions": json.dumps(_persisted(sha))},
        headers={"Authorization": f"Bearer {client.token}", "Accept": "application/json"},
    )

    assert (unknown.status_code, _code(unknown)) == (200, "PERSISTED_QUERY_NOT_FOUND")
    assert registered.json()["data"] == {"me": {"email": user.email}}
    assert by_hash.json() == registered.json()
    assert by_get.status_code == 200, by_get.text
    assert by_get.json() == registered.json()


def test_apq_hash_that_is_not_its_documents_is_refused(live, user):
    client = live.client(user)

    refused = _post(
        live.server.graphql_url, client.token, query=VIEWER, extensions=_persisted("0" * 64)
    )

    assert (refused.status_code, _code(refused)) == (400, "PERSISTED_QUERY_HASH_MISMATCH")


def test_apq_over_the_websocket_serves_a_registered_hash(live, user):
    client = live.client(user)
    query = "subscription($id: ID!) { jobProgress(id: $id) { seq } }"
    sha = document_hash(query)

    async def hash_only():
        sub = Subscription(live.server.ws_url, query, {"id": "Sm9iOjE="}, token=client.token)
        async with sub:
            await sub.ws.send(
                json.dumps(
                    {
                        "id": "2",
                        "type": "subscribe",
                        "payload": {"variables": {}, "extensions": _persisted(sha)},
                    }
                )
            )
            while True:
                message = json.loads(await asyncio.wait_for(sub.ws.recv(), 10))
                if message.get("id") == "2":
                    return message

    refused = asyncio.run(hash_only())

    assert refused["type"] == "error"
    assert refused["payload"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"


@pytest.fixture
def trusted_server(stack, tmp_path):
    manifest = tmp_path / "persisted-documents.json"
    manifest.write_text(json.dumps({document_hash(VIEWER): VIEWER}))
    server = Server(GRAPHQL_TRUSTED_DOCUMENTS=str(manifest))
    yield server
    server.stop()


def test_trusted_documents_serve_a_listed_operation_and_refuse_any_other(
    live, user, trusted_server
):
    client = live.client(user)
    url = trusted_server.graphql_url

    listed = _post(url, client.token, extensions=_persisted(document_hash(VIEWER)))
    free_form = _post(url, client.token, query="{ me { email id } }")
    unlisted_hash = _post(url, client.token, extensions=_persisted("f" * 64))

    assert listed.json()["data"] == {"me": {"email": user.email}}
    assert _code(free_form) == "QUERY_NOT_IN_SAFELIST"
    assert _code(unlisted_hash) == "PERSISTED_QUERY_NOT_IN_LIST"
