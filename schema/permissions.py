"""The one permission class for staff-only operations.

`IsStaff` runs the domain's one staff check (domains/accounts/permissions.py) before the
resolver, on queries, mutations and connections alike, and the refusal has one shape: the
operation's top-level error, `extensions.code` PERMISSION_DENIED, its field null (a
mutation's payload never carries it). Authentication is strawberry_django's
`IsAuthenticated`, with the same shape.
"""

from collections.abc import Callable
from typing import Any, ClassVar

from strawberry.types import Info
from strawberry_django.permissions import DjangoPermissionExtension
from strawberry_django.resolvers import django_resolver

from domains.accounts.permissions import STAFF_ONLY_MESSAGE, staff_required


class IsStaff(DjangoPermissionExtension):
    """Staff only (the field shows `@isStaff` in the schema); anyone else is refused."""

    DEFAULT_ERROR_MESSAGE: ClassVar[str] = STAFF_ONLY_MESSAGE
    SCHEMA_DIRECTIVE_DESCRIPTION: ClassVar[str | None] = "Can only be resolved by staff users."

    def __init__(self) -> None:
        super().__init__(fail_silently=False)

    @django_resolver(qs_hook=None)
    def resolve_for_user(self, resolver: Callable, user: Any, *, info: Info, source: Any):
        staff_required(user)
        return resolver()
