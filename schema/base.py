"""What every schema module shares: the viewer, UserError, global-id parsing."""

from typing import Any

import strawberry
from strawberry import relay
from strawberry.types import Info
from strawberry_django.auth.utils import get_current_user

from domains.errors import DomainError, NotFound


@strawberry.type(
    description="A problem the user can fix: which input, what is wrong, a stable code."
)
class UserError:
    field: str | None
    message: str
    code: str

    @classmethod
    def from_domain(cls, error: DomainError) -> "UserError":
        return cls(field=error.field, message=error.message, code=error.code)


def viewer(info: Info) -> Any:
    return get_current_user(info)


def node_pk(global_id: relay.GlobalID | str, type_name: str, *, field: str = "id") -> int:
    """The primary key behind a global ID of `type_name`; NotFound for anything else."""
    try:
        if not isinstance(global_id, relay.GlobalID):
            global_id = relay.GlobalID.from_id(global_id)
        if global_id.type_name != type_name:
            raise ValueError(global_id.type_name)
        return int(global_id.node_id)
    except (ValueError, TypeError) as error:
        raise NotFound(f"Not a valid {type_name} id.", field=field) from error


def global_id(type_name: str, pk: int) -> relay.GlobalID:
    return relay.GlobalID(type_name, str(pk))
