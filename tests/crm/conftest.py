import pytest

from domains.redis import sync_client
from domains.sandbox.crm import CONFIG_KEY


@pytest.fixture
def crm_sandbox():
    """The sandbox CRM's settings, reset after the test."""
    sync_client().delete(CONFIG_KEY)
    yield
    sync_client().delete(CONFIG_KEY)
