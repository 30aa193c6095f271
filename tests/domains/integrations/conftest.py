import uuid

import pytest

from tests.domains.integrations.scripted_server import ScriptedServer


@pytest.fixture
def outside():
    server = ScriptedServer()
    yield server
    server.close()


@pytest.fixture
def service_name():
    """A fresh name per test, so that breaker and rate-limit state never leak between tests."""
    return f"test-{uuid.uuid4().hex[:8]}"
