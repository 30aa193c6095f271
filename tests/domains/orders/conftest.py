"""The commerce stack, one per package (it pauses the shared worker while it lives)."""

from tests.fixtures.commerce import commerce_stack, gateway_here, shop  # noqa: F401
