"""What a scoped viewer may run, decided once for every operation on every transport.

A job token's viewer (domains/accounts/viewers.py) reads its one job: the selectors scope
its reads, and this extension refuses any mutation before a resolver runs, so no mutation
has to remember job tokens.
"""

from collections.abc import Iterator
from types import SimpleNamespace

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType
from strawberry_django.auth.utils import get_current_user

from domains.accounts.viewers import job_scope

JOB_TOKEN_READ_ONLY = "JOB_TOKEN_READ_ONLY"


class JobTokenScope(SchemaExtension):
    """Refuses mutations to a job token, with the code JOB_TOKEN_READ_ONLY."""

    def on_validate(self) -> Iterator[None]:
        # Before validation (so it comes before the validation cache in the list): whatever
        # else is wrong with the document, a job token runs no mutation at all, and that is
        # the answer it can act on.
        context = self.execution_context
        if context.operation_type == OperationType.MUTATION and _is_job_token(context):
            context.pre_execution_errors = [
                GraphQLError(
                    "A job token only reads its job (job(id:), jobProgress(id:)): send "
                    "mutations with the owner's own token.",
                    extensions={"code": JOB_TOKEN_READ_ONLY},
                )
            ]
        yield


def _is_job_token(context) -> bool:
    return job_scope(get_current_user(SimpleNamespace(context=context.context))) is not None
