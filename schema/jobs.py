from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any

import strawberry
import strawberry_django
from asgiref.sync import sync_to_async
from strawberry import relay
from strawberry.scalars import JSON
from strawberry.types import Info
from strawberry_django.auth.utils import aget_current_user
from strawberry_django.permissions import IsAuthenticated
from strawberry_django.relay import DjangoListConnection

from domains.errors import DomainError, NotFound
from domains.jobs import models
from domains.jobs.events import ALL_JOBS_CHANNEL, user_channel
from domains.jobs.selectors import job_list
from domains.jobs.services import job_cancel
from domains.jobs.stream import channel_stream, job_progress_stream
from schema.base import UserError, global_id, node_pk, viewer
from schema.extensions import RequiresRedis

JobStatus = strawberry.enum(models.JobStatus, name="JobStatus")
JobKind = strawberry.enum(models.JobKind, name="JobKind")


@strawberry_django.type(models.Job, name="Job")
class JobType(relay.Node):
    kind: JobKind
    status: JobStatus
    progress: float | None
    current: int | None
    total: int | None
    result: JSON | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @strawberry_django.field(only=["stage"])
    def stage(self, root: models.Job) -> str | None:
        return root.stage or None

    @strawberry_django.field(only=["message"])
    def message(self, root: models.Job) -> str | None:
        return root.message or None

    @strawberry_django.field(only=["error"])
    def error(self, root: models.Job) -> str | None:
        return root.error or None

    @classmethod
    def get_queryset(cls, queryset, info: Info, **kwargs):
        return queryset.filter(pk__in=job_list(viewer=viewer(info)).values("pk"))


@strawberry_django.filter_type(models.Job, lookups=True)
class JobFilter:
    kind: JobKind | None
    status: JobStatus | None


@strawberry.type(description="One change of a job; `seq` increases strictly per job.")
class JobEvent:
    job_id: strawberry.ID
    seq: int
    status: JobStatus
    progress: float | None
    current: int | None
    total: int | None
    stage: str | None
    message: str | None
    result: JSON | None
    error: str | None
    at: datetime

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> "JobEvent":
        return cls(
            job_id=strawberry.ID(str(global_id("Job", event["job_id"]))),
            seq=event["seq"],
            status=models.JobStatus(event["status"]),
            progress=event.get("progress"),
            current=event.get("current"),
            total=event.get("total"),
            stage=event.get("stage"),
            message=event.get("message"),
            result=event.get("result"),
            error=event.get("error"),
            at=datetime.fromisoformat(event["at"]),
        )


@strawberry.type
class JobCancelPayload:
    job: JobType | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class Query:
    job: JobType | None = strawberry_django.node(extensions=[IsAuthenticated(fail_silently=True)])
    jobs: DjangoListConnection[JobType] = strawberry_django.connection(
        filters=JobFilter, extensions=[IsAuthenticated()]
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(extensions=[IsAuthenticated(), RequiresRedis()])
    def job_cancel(self, info: Info, id: relay.GlobalID) -> JobCancelPayload:
        try:
            job = job_list(viewer=viewer(info)).filter(pk=node_pk(id, "Job")).first()
            if job is None:
                raise NotFound("No such job.")
            job = job_cancel(job=job)
        except DomainError as error:
            return JobCancelPayload(errors=[UserError.from_domain(error)])
        return JobCancelPayload(job=job)


@sync_to_async
def _visible_job(user, job_id: relay.GlobalID) -> models.Job:
    job = job_list(viewer=user).filter(pk=node_pk(job_id, "Job")).first()
    if job is None:
        raise NotFound("No such job.")
    return job


async def _authenticated(info: Info):
    user = await aget_current_user(info)
    if not user.is_authenticated:
        raise PermissionError("Authentication required: send a token in connection_init.")
    return user


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="A job's progress: the current snapshot first (or, with afterSeq, every "
        "event after it), then each change; completes after a terminal status."
    )
    async def job_progress(
        self,
        info: Info,
        id: relay.GlobalID,
        after_seq: int | None = None,
    ) -> AsyncGenerator[JobEvent, None]:
        user = await _authenticated(info)
        try:
            job = await _visible_job(user, id)
        except NotFound as error:
            raise PermissionError(error.message) from None
        async for event in job_progress_stream(job=job, after_seq=after_seq):
            yield JobEvent.from_event(event)

    @strawberry.subscription(description="Every event of the viewer's jobs (staff: all jobs).")
    async def job_events(self, info: Info) -> AsyncGenerator[JobEvent, None]:
        user = await _authenticated(info)
        channel = ALL_JOBS_CHANNEL if user.is_staff else user_channel(user.pk)
        async for event in channel_stream(channel):
            yield JobEvent.from_event(event)
