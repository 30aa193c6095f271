"""A request that cannot get its turn or a database connection in time answers a coded
"try again" (503 SERVICE_UNAVAILABLE) and writes nothing: never a 500."""

import threading
import uuid

import httpx
import pytest
from django.conf import settings
from django.db import connection

from config.embedded_redis import free_port
from domains.orders.models import Order
from domains.sandbox.standin import recorded_calls
from schema.base import global_id
from testbed.factories import make_product, make_token
from testbed.stack import Server
from testbed.waiting import wait_until

pytestmark = pytest.mark.e2e

ORDER_CREATE = """
mutation($input: OrderCreateInput!) { orderCreate(input: $input) { order { id } errors { code } } }
"""


def _hold_a_request(server: Server) -> threading.Thread:
    """A request that stays inside the server (and holds its connection) for seconds."""
    key = uuid.uuid4().hex

    def hang():
        httpx.post(
            f"{server.url}/sandbox/gateway/charges",
            json={"amount": "1.00", "currency": "USD", "source": "tok_timeout"},
            headers={
                "Authorization": f"Bearer {settings.SANDBOX_GATEWAY_API_KEY}",
                "Idempotency-Key": key,
            },
            timeout=30,
        )

    holder = threading.Thread(target=hang)
    holder.start()
    wait_until(
        lambda: any(call.get("key") == key for call in recorded_calls("gateway")),
        message="the held request to be inside the server",
    )
    return holder


CASES = {
    # One request at a time: the second waits its turn past the queue timeout.
    "no turn in time": {"SERVER_MAX_CONCURRENT_REQUESTS": "1", "SERVER_QUEUE_TIMEOUT": "0.5"},
}
if connection.vendor == "postgresql":  # the connection pool is PostgreSQL's; SQLite has none
    # Its turn, but the only pooled connection is held past the pool timeout.
    CASES["no connection in time"] = {
        "SERVER_MAX_CONCURRENT_REQUESTS": "2",
        "ASGI_THREADS": "1",
        "DB_POOL_MAX_SIZE": "1",
        "DB_POOL_TIMEOUT": "0.5",
    }


@pytest.mark.parametrize("case", CASES)
def test_a_request_with_no_capacity_left_answers_try_again_and_writes_nothing(
    case, transactional_db, user
):
    port = free_port()
    server = Server(
        port,
        SANDBOX_BASE_URL=f"http://127.0.0.1:{port}/sandbox",
        SANDBOX_GATEWAY_HANG_SECONDS="4",
        **CASES[case],
    )
    product = make_product()
    token = make_token(user)
    try:
        holder = _hold_a_request(server)
        answer = httpx.post(
            server.graphql_url,
            json={
                "query": ORDER_CREATE,
                "variables": {
                    "input": {
                        "items": [
                            {"productId": str(global_id("Product", product.pk)), "quantity": 1}
                        ]
                    }
                },
            },
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        holder.join()
    finally:
        server.stop()

    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "1"
    assert [e["extensions"]["code"] for e in answer.json()["errors"]] == ["SERVICE_UNAVAILABLE"]
    assert Order.objects.filter(customer=user).count() == 0
