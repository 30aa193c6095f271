"""Orders depends on payments (its checkout charges, verifies and refunds through it);
payments never imports orders: what it needs of an order, orders registers with it
(domains/payments/payable.py), and what it tells orders goes by signal."""

import ast
from pathlib import Path

from django.conf import settings

DOMAINS = Path(settings.BASE_DIR) / "domains"


def _imported(package: str) -> set[str]:
    """Every module a package's files import (absolute names)."""
    modules = set()
    for path in (DOMAINS / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules.add(node.module)
    return modules


def _of(modules: set[str], package: str) -> set[str]:
    return {m for m in modules if m == package or m.startswith(f"{package}.")}


def test_payments_does_not_import_orders():
    assert _of(_imported("payments"), "domains.orders") == set()


def test_orders_reaches_payments_through_its_services_never_its_gateway():
    used = _of(_imported("orders"), "domains.payments")

    assert used
    assert "domains.payments.gateway" not in used
