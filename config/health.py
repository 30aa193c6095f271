"""Liveness and readiness, as JSON."""

import logging

from celery import current_app
from django.db import connection
from django.http import JsonResponse

from domains.infra.redis import sync_client

logger = logging.getLogger(__name__)


def healthz(request):
    return JsonResponse({"status": "ok"})


def readyz(request):
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as error:  # noqa: BLE001  (readiness reports any failure as a value)
        checks["database"] = f"error: {type(error).__name__}"
    try:
        sync_client().ping()
        checks["redis"] = "ok"
    except Exception as error:  # noqa: BLE001
        checks["redis"] = f"error: {type(error).__name__}"
    if checks["redis"] == "ok":
        replies = current_app.control.ping(timeout=1.0)
        checks["workers"] = f"{len(replies)} answering" if replies else "error: none answering"
    else:
        checks["workers"] = "unknown: redis is down"
    ready = all(not value.startswith(("error", "unknown")) for value in checks.values())
    if not ready:
        logger.warning("readyz.not_ready", extra=checks)
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )
