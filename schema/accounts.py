from datetime import datetime

import strawberry
import strawberry_django
from django.contrib.auth import login, logout
from strawberry import relay
from strawberry.types import Info
from strawberry_django.permissions import IsAuthenticated

from domains.accounts import services
from domains.accounts.errors import AccountErrorCode
from domains.accounts.models import User
from domains.accounts.selectors import user_list
from domains.accounts.throttle import client_address
from domains.errors import DomainError, NotFound
from domains.jobs.selectors import job_list
from schema.base import http_request, node_pk, viewer
from schema.errors import UserError, domain_errors


@strawberry_django.type(User, name="User")
class UserType(relay.Node):
    email: str
    first_name: str
    last_name: str
    is_staff: bool

    @classmethod
    def get_queryset(cls, queryset, info: Info, **kwargs):
        return queryset.filter(pk__in=user_list(viewer=viewer(info)).values("pk"))


@strawberry.input
class UserRegisterInput:
    email: str
    password: str
    first_name: str = ""
    last_name: str = ""
    phone: str = ""


@strawberry.type
class UserRegisterPayload:
    user: UserType | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class TokenCreatePayload:
    token: str | None = None
    user: UserType | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class TokenRevokePayload:
    revoked: bool = False
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class JobAccessTokenCreatePayload:
    token: str | None = None
    expires_at: datetime | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class SessionCreatePayload:
    user: UserType | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class SessionEndPayload:
    ended: bool = False
    errors: list[UserError] = strawberry.field(default_factory=list)


def _browser_request(info: Info):
    """The request, when it is a CSRF-checked browser one (it carries this site's cookies):
    a session is signed in or out only there, so that no other site can sign a visitor's
    browser into an account of its choosing (login CSRF)."""
    request = http_request(info, "A session")
    if getattr(request, "_dont_enforce_csrf_checks", False):
        raise DomainError(
            "A session is signed in from a browser page of this site (it sets the csrftoken "
            "cookie; send its value in X-CSRFToken). API clients use tokenCreate.",
            code=AccountErrorCode.SESSION_REQUIRES_BROWSER,
        )
    return request


@strawberry.type
class Query:
    @strawberry_django.field
    def me(self, info: Info) -> UserType | None:
        user = viewer(info)
        return user if user.is_authenticated else None


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Create an account; the welcome email is queued once.")
    @domain_errors
    def user_register(self, info: Info, input: UserRegisterInput) -> UserRegisterPayload:
        user = services.user_register(
            email=input.email,
            password=input.password,
            first_name=input.first_name,
            last_name=input.last_name,
            phone=input.phone,
            client_address=client_address(info.context.request),
        )
        return UserRegisterPayload(user=user)

    @strawberry.mutation(
        description="Exchange credentials for a bearer token (shown once). From a browser "
        "page (cookies, CSRF-checked) it also signs the session in, so GraphiQL's "
        "subscriptions are authenticated too."
    )
    @domain_errors
    def token_create(self, info: Info, email: str, password: str) -> TokenCreatePayload:
        token, row = services.token_create(
            email=email, password=password, client_address=client_address(info.context.request)
        )
        request = info.context.request
        if not getattr(request, "_dont_enforce_csrf_checks", False):
            login(request, row.user, backend="django.contrib.auth.backends.ModelBackend")
        return TokenCreatePayload(token=token, user=row.user)

    @strawberry.mutation(
        description="Sign the browser's Django session in (the console's sign-in): throttled "
        "like tokenCreate, CSRF-checked, and only from a page that holds this site's cookies."
    )
    @domain_errors
    def session_create(self, info: Info, email: str, password: str) -> SessionCreatePayload:
        request = _browser_request(info)
        user = services.user_authenticate(
            email=email, password=password, client_address=client_address(request)
        )
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return SessionCreatePayload(user=user)

    @strawberry.mutation(description="Sign the browser's Django session out.")
    @domain_errors
    def session_end(self, info: Info) -> SessionEndPayload:
        request = _browser_request(info)
        logout(request)
        return SessionEndPayload(ended=True)

    @strawberry.mutation(extensions=[IsAuthenticated()])
    @domain_errors
    def token_revoke(self, info: Info, token: str) -> TokenRevokePayload:
        services.token_revoke(token=token, viewer=viewer(info))
        return TokenRevokePayload(revoked=True)

    @strawberry.mutation(
        extensions=[IsAuthenticated()],
        description="A token that follows one job and nothing else, for a browser or a phone: "
        "it allows `job(id:)` and `jobProgress(id:)` of that job on every transport (`me` is "
        "null, other jobs are not found, mutations are refused with JOB_TOKEN_READ_ONLY). It "
        "ends at `expiresAt` (900 s by default, 24 hours at most), with tokenRevoke, and when "
        "your access ends (deactivation, a password change).",
    )
    @domain_errors
    def job_access_token_create(
        self,
        info: Info,
        job_id: relay.GlobalID,
        expires_in_seconds: int = services.JOB_ACCESS_TOKEN_DEFAULT_SECONDS,
    ) -> JobAccessTokenCreatePayload:
        user = viewer(info)
        job = job_list(viewer=user).filter(pk=node_pk(job_id, "Job", field="jobId")).first()
        if job is None:
            raise NotFound("No such job.", field="jobId")
        token, row = services.job_access_token_create(
            job=job, viewer=user, expires_in_seconds=expires_in_seconds
        )
        return JobAccessTokenCreatePayload(token=token, expires_at=row.expires_at)
