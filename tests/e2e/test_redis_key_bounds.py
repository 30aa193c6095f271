"""Every Redis key the product writes has a bound (docs/redis-keys.md): after representative
jobs ran on a real server and worker (a report, a checkout that charges the gateway, a
sign-in, a persisted query), every key in the test Redis expires, except the broker's own
and the few bounded by size, listed here as the docs list them."""

import fnmatch
import hashlib

import httpx
import pytest

from domains.infra.redis import sync_client
from schema.base import global_id, node_pk
from testbed.graphql import GraphQLClient
from testbed.waiting import job_finished
from tests.e2e.test_job_progress import _sales, _start_report
from tests.fixtures.commerce import stocked_product

pytestmark = pytest.mark.e2e

# The broker's own keys (kombu's Redis transport): its queues and bookkeeping, which hold
# what is waiting or running and are emptied as tasks are taken and acknowledged.
BROKER_KEYS = (
    "celery",  # the default queue (a list)
    "celery\x06\x16*",  # its priority sub-queues
    "bulk",  # the bulk and staff lanes' queues (settings.JOB_LANE_QUEUES), lists too
    "bulk\x06\x16*",
    "staff",
    "staff\x06\x16*",
    "_kombu.binding.*",  # the exchanges' bindings (a set per exchange)
    "_kombu.binding_permanent.*",  # which of those bindings never expire (a set each)
    "_kombu.binding_deadlines",  # when the others do (a sorted set)
    "unacked",  # messages being worked on (hash), bounded by the workers' prefetch
    "unacked_index",  # their delivery times (sorted set), same bound
)
# Bounded by size, not time (docs/redis-keys.md): the sandbox's stand-ins, development only.
SIZE_BOUNDED_KEYS = (
    "sandbox:messaging:*",  # the SMS/push stand-in's outbox, trimmed to 10,000 messages
    "sandbox:crm:config",  # the CRM stand-in's settings, one small hash
)

CHECKOUT = """
mutation($id: ID!) { orderCheckout(id: $id, paymentMethod: "tok_visa") { job { id } errors { code } } }
"""
ORDER_CREATE = """
mutation($input: OrderCreateInput!) { orderCreate(input: $input) { order { id } errors { code } } }
"""
PERSISTED = "query { me { email } }"


def _keys() -> set[str]:
    return set(sync_client().scan_iter(count=1000))


def _unbounded_keys(*, besides: set[str]) -> list[str]:
    """Keys without a TTL, but the broker's, the size-bounded ones and those `besides` (there
    before: another test of this process may leave its own, e.g. a queue nobody consumes)."""
    client = sync_client()
    allowed = BROKER_KEYS + SIZE_BOUNDED_KEYS
    return sorted(
        key
        for key in _keys() - besides
        if client.ttl(key) == -1 and not any(fnmatch.fnmatchcase(key, p) for p in allowed)
    )


def test_every_key_written_while_jobs_run_expires(live, user):
    there_before = _keys()
    _sales(user, 200)
    client = live.client(user)  # a sign-in: the throttle's keys
    _, report_job = _start_report(client)
    product = stocked_product()
    order = client.data(
        ORDER_CREATE,
        {"input": {"items": [{"productId": str(global_id("Product", product.pk)), "quantity": 1}]}},
    )["orderCreate"]["order"]
    checkout = client.data(CHECKOUT, {"id": order["id"]})["orderCheckout"]
    assert checkout["errors"] == []
    digest = hashlib.sha256(PERSISTED.encode()).hexdigest()
    persisted = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    GraphQLClient(live.server.graphql_url, client.token).execute(PERSISTED)  # warm
    registered = httpx.post(
        live.server.graphql_url,
        json={"query": PERSISTED, "extensions": persisted},
        headers={"Authorization": f"Bearer {client.token}"},
    )
    assert registered.status_code == 200, registered.text

    finished = [job_finished(report_job), job_finished(node_pk(checkout["job"]["id"], "Job"))]

    assert [j.status for j in finished] == ["SUCCESS", "SUCCESS"]
    assert sync_client().dbsize() > 0
    assert _unbounded_keys(besides=there_before) == []
