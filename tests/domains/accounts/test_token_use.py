"""token_authenticate records a token's last use at most once per resolution, and a request
within it writes nothing."""

from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from domains.accounts.models import ApiToken
from domains.accounts.services import token_authenticate
from testbed.factories import make_token


def _updates(token: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert token_authenticate(token) is not None
    return sum(
        1 for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("UPDATE")
    )


def test_a_token_used_again_within_the_resolution_writes_nothing(user):
    token = make_token(user)

    first, again = _updates(token), _updates(token)
    ApiToken.objects.update(
        last_used_at=ApiToken.objects.get().last_used_at
        - settings.API_TOKEN_LAST_USED_RESOLUTION
        - timedelta(seconds=1)
    )
    later = _updates(token)

    assert (first, again, later) == (1, 0, 1)
