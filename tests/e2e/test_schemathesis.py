"""schemathesis, in its GraphQL mode, from the committed SDL against a real server: no
generated operation gets a server error (5xx) or a masked internal error."""

from collections import Counter

import httpx
import pytest
import schemathesis
from django.conf import settings
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.graphql import nodes

from testbed.factories import make_token

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLES_PER_OPERATION = 10  # 31 operations: about 300 requests, well under a minute

# The project's own scalars; an Upload travels as a multipart part, so inline it is null.
schemathesis.graphql.scalar("Upload", st.just(nodes.Null))
schemathesis.graphql.scalar(
    "Decimal",
    st.decimals().map(str).map(nodes.String),  # NaN and Infinity too: coded
)
schemathesis.graphql.scalar(
    "JSON", st.one_of(st.integers().map(nodes.Int), st.text().map(nodes.String))
)


def _masked(body: object) -> bool:
    errors = body.get("errors") if isinstance(body, dict) else None
    return any(
        (error.get("extensions") or {}).get("code") == "INTERNAL_SERVER_ERROR"
        for error in errors or ()
    )


def test_generated_operations_get_no_server_error_and_no_masked_error(live, user):
    schema = schemathesis.graphql.from_path(settings.BASE_DIR / "schema.graphql")
    operations = [result.ok() for result in schema.get_all_operations()]
    headers = {"Authorization": f"Bearer {make_token(user)}"}
    counts: Counter[str] = Counter()
    failures: list[str] = []

    with httpx.Client(timeout=30, headers=headers) as http:
        for operation in operations:

            @hypothesis_settings(
                max_examples=EXAMPLES_PER_OPERATION,
                database=None,
                deadline=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy())
            def send(case):
                response = http.post(live.server.graphql_url, json={"query": case.body})
                counts["requests"] += 1
                is_json = response.headers.get("content-type", "").startswith("application/json")
                if response.status_code >= 500:
                    counts["server errors"] += 1
                    failures.append(f"{response.status_code} for {case.body}")
                elif is_json and _masked(response.json()):
                    counts["masked errors"] += 1
                    failures.append(f"masked error for {case.body}")

            send()

    print(f"schemathesis: {dict(counts)} over {len(operations)} operations")
    assert counts["requests"] >= len(operations)
    assert failures == [], "\n".join(failures[:20])
