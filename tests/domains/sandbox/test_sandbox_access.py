"""The sandbox answers only where it is enabled, and only to its installation's keys."""

import json
import os
import subprocess
import sys

import httpx
import pytest
from django.conf import settings
from django.test import Client

from domains.infra.redis import sync_client
from domains.sandbox.gateway import DOWN_KEY
from testbed.stack import Server

# Every stand-in endpoint with what changes or reads the most: outages, refunds, customers'
# personal data, messages sent to users.
ENDPOINTS = [
    ("post", "/sandbox/gateway/control", {"down": True}),
    ("post", "/sandbox/gateway/refunds", {"charge": "ch_any"}),
    (
        "post",
        "/sandbox/gateway/charges",
        {"amount": "1.00", "currency": "USD", "source": "tok_visa"},
    ),
    ("get", "/sandbox/gateway/charges/ch_any", None),
    ("get", "/sandbox/gateway/charges?idempotency_key=k", None),
    ("post", "/sandbox/catalog/control", {"throttle": 100}),
    ("get", "/sandbox/catalog/products", None),
    ("get", "/sandbox/crm/customers", None),
    ("get", "/sandbox/messaging/sms", None),
    ("get", "/sandbox/messaging/push", None),
]
OLD_REPOSITORY_KEYS = ("sk_test_sandbox", "catalog_test_sandbox", "sandbox")


def _call(method: str, path: str, body: dict | None, authorization: str | None):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    if method == "get":
        return Client().get(path, **headers)
    return Client().post(
        path, json.dumps(body), content_type="application/json", HTTP_IDEMPOTENCY_KEY="k", **headers
    )


@pytest.mark.django_db
@pytest.mark.parametrize("authorization", [None, *(f"Bearer {k}" for k in OLD_REPOSITORY_KEYS)])
@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=[e[1] for e in ENDPOINTS])
def test_every_sandbox_endpoint_refuses_a_caller_without_the_installations_key(
    method, path, body, authorization
):
    sync_client().delete(DOWN_KEY)

    response = _call(method, path, body, authorization)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert not sync_client().exists(DOWN_KEY)


def test_the_keys_are_this_installations_own_and_the_clients_use_them():
    keys = {
        settings.SANDBOX_GATEWAY_API_KEY,
        settings.SANDBOX_CATALOG_API_KEY,
        settings.SANDBOX_CRM_API_KEY,
        settings.SANDBOX_MESSAGING_API_KEY,
    }

    assert len(keys) == 4
    assert not keys & set(OLD_REPOSITORY_KEYS)
    assert settings.PAYMENT_GATEWAY_API_KEY == settings.SANDBOX_GATEWAY_API_KEY
    assert settings.CATALOG_API_KEY == settings.SANDBOX_CATALOG_API_KEY
    assert settings.CRM_API_KEY == settings.SANDBOX_CRM_API_KEY
    assert settings.SMS_API_KEY == settings.PUSH_API_KEY == settings.SANDBOX_MESSAGING_API_KEY


@pytest.mark.django_db
def test_the_gateway_control_takes_the_gateway_key():
    key = f"Bearer {settings.SANDBOX_GATEWAY_API_KEY}"

    switched = _call("post", "/sandbox/gateway/control", {"down": True}, key)
    restored = _call("post", "/sandbox/gateway/control", {"down": False}, key)

    assert (switched.json(), restored.json()) == ({"down": True}, {"down": False})


def _settings_in_a_fresh_process(*, unset: tuple[str, ...] = (), **env: str) -> dict:
    """What another process (a worker, the server) derives from this environment and `env`."""
    script = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({'enabled': s.SANDBOX_ENABLED, 'gateway': s.SANDBOX_GATEWAY_API_KEY}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={
            **{k: v for k, v in os.environ.items() if k not in unset},
            "DJANGO_SETTINGS_MODULE": "config.settings",
            **env,
        },
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
        check=True,
    )
    return json.loads(done.stdout)


def test_another_process_of_this_installation_derives_the_same_keys():
    assert _settings_in_a_fresh_process(VAR_DIR=str(settings.VAR_DIR)) == {
        "enabled": True,
        "gateway": settings.SANDBOX_GATEWAY_API_KEY,
    }


def test_another_installation_gets_other_keys(tmp_path):
    elsewhere = _settings_in_a_fresh_process(VAR_DIR=str(tmp_path), unset=("SECRET_KEY",))
    assert elsewhere["gateway"] != settings.SANDBOX_GATEWAY_API_KEY


def test_production_mode_leaves_the_sandbox_unmounted_unless_asked(django_db_setup):
    production = {
        "DEBUG": "0",
        "SECRET_KEY": "a-production-secret-for-this-test",
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    server = Server(**production)
    try:
        unmounted = httpx.post(
            f"{server.url}/sandbox/gateway/control",
            json={"down": True},
            headers={"Authorization": f"Bearer {settings.SANDBOX_GATEWAY_API_KEY}"},
        )
    finally:
        server.stop()

    assert unmounted.status_code == 404
    assert _settings_in_a_fresh_process(**production, SANDBOX_ENABLED="1")["enabled"] is True
