"""Tracing is off unless configured, and then costs nothing: no OpenTelemetry is loaded.
(What it traces when on: tests/e2e/test_observability.py.)"""

import os
import subprocess
import sys

from django.conf import settings

LOADED = """
import sys
import config.asgi
from schema import schema
schema.execute_sync("{ __typename }")
print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
"""


def test_with_no_endpoint_the_server_loads_no_opentelemetry():
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_FILE")
    }

    result = subprocess.run(
        [sys.executable, "-c", LOADED],
        env=env,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert result.stdout.strip().splitlines()[-1] == "[]"
