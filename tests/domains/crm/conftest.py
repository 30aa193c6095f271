import pytest

from domains.infra.redis import sync_client
from domains.sandbox.crm import CONFIG_KEY


@pytest.fixture
def crm_sandbox():
    """The sandbox CRM's settings, reset after the test."""
    _reset()
    yield
    _reset()


def _reset() -> None:
    client = sync_client()
    client.delete(CONFIG_KEY, *client.scan_iter("sandbox:crm:throttle:*"))
