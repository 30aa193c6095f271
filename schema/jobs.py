from collections.abc import AsyncGenerator
from datetime import datetime, timedelta
from typing import Annotated, Any

import strawberry
import strawberry_django
from channels.db import database_sync_to_async
from django.db.models import Q
from django.utils import timezone
from strawberry import relay
from strawberry.scalars import JSON
from strawberry.types import Info
from strawberry_django.auth.utils import aget_current_user
from strawberry_django.filters import apply as filters_apply
from strawberry_django.permissions import IsAuthenticated
from strawberry_django.relay import DjangoListConnection

from domains.accounts.viewers import credential_holder_id
from domains.errors import DomainError, NotFound
from domains.jobs import models
from domains.jobs.retry import RetryOptions, job_retry, jobs_cancel
from domains.jobs.selectors import job_event_log, job_list, job_stats
from domains.jobs.services import job_cancel
from domains.jobs.stream import job_events_stream, job_progress_stream
from domains.media.selectors import image_list
from domains.orders.selectors import order_list
from domains.payments.selectors import payment_list
from domains.reports.selectors import report_list
from domains.webhooks.selectors import webhook_delivery_list
from schema.base import global_id, node_pk, viewer
from schema.errors import JobError, domain_errors, payload_errors
from schema.extensions import RequiresRedis
from schema.frames import hub_delivery, shared_root
from schema.idempotency import IdempotentStart
from schema.permissions import IsStaff

UserType = Annotated["UserType", strawberry.lazy("schema.accounts")]
ReportType = Annotated["ReportType", strawberry.lazy("schema.reports")]
ImageType = Annotated["ImageType", strawberry.lazy("schema.media")]
PaymentType = Annotated["PaymentType", strawberry.lazy("schema.payments")]
OrderType = Annotated["OrderType", strawberry.lazy("schema.orders")]
WebhookDeliveryType = Annotated["WebhookDeliveryType", strawberry.lazy("schema.webhooks")]

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
    owner: UserType | None
    cancel_requested_at: datetime | None = strawberry_django.field(
        description="When a cancel of this job was accepted (`jobCancel`): the job is "
        "stopping, and what it did is being undone; it ends CANCELLED (or FAILURE/TIMEOUT "
        "if that came first), never SUCCESS. Null while nobody asked."
    )

    @strawberry_django.field(
        only=["queue_position", "status"],
        description="While the job waits for a slot (its owner's running jobs are at their "
        "limit, or its lane's worker slots are busy): its place among the jobs waiting for "
        "one, 1 next, as the round robin across users would admit them. Null once started.",
    )
    def queue_position(self, root: models.Job) -> int | None:
        return root.queue_position if root.status == models.JobStatus.PENDING else None

    @strawberry_django.field(
        only=["waiting_reason", "status"],
        description='Why the job waits for a slot, e.g. "2 of your jobs are running; the '
        'limit is 2". Null once started.',
    )
    def waiting_reason(self, root: models.Job) -> str | None:
        return (root.waiting_reason or None) if root.status == models.JobStatus.PENDING else None

    @strawberry_django.field(only=["stage"])
    def stage(self, root: models.Job) -> str | None:
        return root.stage or None

    @strawberry_django.field(only=["message"])
    def message(self, root: models.Job) -> str | None:
        return root.message or None

    @strawberry_django.field(only=["error"])
    def error(self, root: models.Job) -> str | None:
        return root.error or None

    @strawberry_django.field(
        only=["trace_id"],
        description="The OpenTelemetry trace the job was started in (32 hex digits), when "
        "tracing is on: the mutation, its task and the task's outside calls.",
    )
    def trace_id(self, root: models.Job) -> str | None:
        return root.trace_id or None

    @strawberry_django.field(
        only=["retry_of_id"], description="The job this one retried (jobRetry), if any."
    )
    def retry_of(self, root: models.Job, info: Info) -> "JobType | None":
        if root.retry_of_id is None:
            return None
        return job_list(viewer=viewer(info)).filter(pk=root.retry_of_id).first()

    @strawberry_django.field(description="The retries of this job (jobRetry), oldest first.")
    def retries(self, root: models.Job, info: Info) -> list["JobType"]:
        return list(job_list(viewer=viewer(info)).filter(retry_of=root).order_by("pk"))

    @strawberry_django.field(
        description="The job's whole timeline, oldest first: its event log (the one "
        "`jobProgress(afterSeq:)` replays), ending with the row's state where that is newer."
    )
    def events(self, root: models.Job) -> list["JobEvent"]:
        return [JobEvent.from_event(event) for event in job_event_log(job=root)]

    @strawberry_django.field(description="The report this job makes (SALES_REPORT).")
    def report(self, root: models.Job, info: Info) -> ReportType | None:
        return report_list(viewer=viewer(info)).filter(job=root).first()

    @strawberry_django.field(description="The image this job processes (IMAGE_PROCESSING).")
    def image(self, root: models.Job, info: Info) -> ImageType | None:
        return image_list(viewer=viewer(info)).filter(job=root).first()

    @strawberry_django.field(description="The payment this job charges (PAYMENT).")
    def payment(self, root: models.Job, info: Info) -> PaymentType | None:
        return payment_list(viewer=viewer(info)).filter(job=root).first()

    @strawberry_django.field(
        description="The order this job works on (ORDER_WORKFLOW), or that its payment pays."
    )
    def order(self, root: models.Job, info: Info) -> OrderType | None:
        orders = order_list(viewer=viewer(info))
        return orders.filter(Q(job=root) | Q(payments__job=root)).distinct().first()

    @strawberry_django.field(
        description="The webhook deliveries of this job's end the viewer may see (those to "
        "their own endpoints; staff: all)."
    )
    def webhook_deliveries(self, root: models.Job, info: Info) -> list[WebhookDeliveryType]:
        return list(webhook_delivery_list(viewer=viewer(info)).filter(job=root).order_by("pk"))

    @classmethod
    def get_queryset(cls, queryset, info: Info, **kwargs):
        return queryset.filter(pk__in=job_list(viewer=viewer(info)).values("pk"))


@strawberry_django.filter_type(models.Job, lookups=True)
class JobFilter:
    kind: JobKind | None
    status: JobStatus | None

    @strawberry_django.filter_field(description="The owner's email, case-insensitive.")
    def owner_email(self, value: str, prefix: str) -> Q:
        return Q(**{f"{prefix}owner__email__iexact": value.strip()})


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
    cancel_requested_at: datetime | None = strawberry.field(
        description="When a cancel of the job was accepted (null while none): the event "
        "that says so comes at once, and every later one carries it."
    )
    queue_position: int | None = strawberry.field(
        description="While the job waits for a slot: its place among the waiting jobs "
        "(Job.queuePosition); an event comes each time it moves. Null once started."
    )
    waiting_reason: str | None = strawberry.field(
        description="While the job waits for a slot: why (Job.waitingReason)."
    )
    at: datetime

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> "JobEvent":
        waiting = event["status"] == models.JobStatus.PENDING
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
            cancel_requested_at=_when(event.get("cancel_requested_at")),
            queue_position=event.get("queue_position") if waiting else None,
            waiting_reason=event.get("waiting_reason") if waiting else None,
            at=datetime.fromisoformat(event["at"]),
        )


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


@strawberry.type(name="JobStatsMinute", description="Jobs created in one minute, by status now.")
class JobStatsMinuteType:
    minute: datetime
    status: JobStatus
    count: int


@strawberry.type(
    name="JobStatsDuration",
    description="Run time (started to finished, seconds) of a kind's jobs that finished.",
)
class JobStatsDurationType:
    kind: JobKind
    count: int
    p50: float
    p95: float


@strawberry.type(name="JobStats")
class JobStatsType:
    since: datetime
    per_minute: list[JobStatsMinuteType]
    durations: list[JobStatsDurationType]


MAX_STATS_MINUTES = 24 * 60


@strawberry.type
class JobCancelPayload:
    job: JobType | None = None
    errors: list[JobError] = strawberry.field(default_factory=list)


@strawberry.type
class JobRetryPayload:
    job: JobType | None = None
    errors: list[JobError] = strawberry.field(default_factory=list)


@strawberry.type
class JobsCancelPayload:
    count: int = 0
    jobs: list[JobType] = strawberry.field(default_factory=list)
    errors: list[JobError] = strawberry.field(default_factory=list)


@strawberry.type
class Query:
    # Scoped by JobType.get_queryset (job_list): nothing for anonymous viewers, one job for
    # a job token.
    job: JobType | None = strawberry_django.node()
    jobs: DjangoListConnection[JobType] = strawberry_django.connection(
        filters=JobFilter, extensions=[IsAuthenticated()]
    )

    @strawberry.field(
        extensions=[IsAuthenticated()],
        description="The viewer's jobs (staff: all) over the last `minutes` (60; at most a "
        "day): created per minute by status, and p50/p95 run time by kind.",
    )
    def job_stats(self, info: Info, minutes: int = 60) -> JobStatsType:
        if not 1 <= minutes <= MAX_STATS_MINUTES:
            raise DomainError(
                f"minutes must be between 1 and {MAX_STATS_MINUTES}.",
                code="INVALID_ARGUMENT",
                field="minutes",
            )
        stats = job_stats(viewer=viewer(info), since=timezone.now() - timedelta(minutes=minutes))
        return JobStatsType(
            since=stats.since,
            per_minute=[
                JobStatsMinuteType(
                    minute=m.minute, status=models.JobStatus(m.status), count=m.count
                )
                for m in stats.per_minute
            ],
            durations=[
                JobStatsDurationType(
                    kind=models.JobKind(d.kind), count=d.count, p50=d.p50, p95=d.p95
                )
                for d in stats.durations
            ],
        )


@strawberry.type
class Mutation:
    @strawberry.mutation(extensions=[IsAuthenticated(), RequiresRedis()])
    @domain_errors
    def job_cancel(self, info: Info, id: relay.GlobalID) -> JobCancelPayload:
        job = job_list(viewer=viewer(info)).filter(pk=node_pk(id, "Job")).first()
        if job is None:
            raise NotFound("No such job.")
        job = job_cancel(job=job)
        return JobCancelPayload(job=job)

    @strawberry.mutation(
        extensions=[IsAuthenticated(), RequiresRedis(), IdempotentStart()],
        description="Start a failed, cancelled or timed-out job's work again, as a new job "
        "linked to it (`retryOf`); `paymentMethod` replaces a payment's or a checkout's.",
    )
    @domain_errors
    def job_retry(
        self, info: Info, id: relay.GlobalID, payment_method: str | None = None
    ) -> JobRetryPayload:
        job = job_list(viewer=viewer(info)).filter(pk=node_pk(id, "Job")).first()
        if job is None:
            raise NotFound("No such job.")
        retry = job_retry(job=job, options=RetryOptions(payment_method=payment_method))
        return JobRetryPayload(job=retry)

    @strawberry.mutation(
        extensions=[IsStaff(), RequiresRedis()],
        description="Staff: cancel every active job the filters select (those of `jobs`; "
        "`{}` selects every job).",
    )
    def jobs_cancel(self, info: Info, filters: JobFilter) -> JobsCancelPayload:
        selected = filters_apply(filters, job_list(viewer=viewer(info)), info)
        outcome = jobs_cancel(jobs=selected)
        return JobsCancelPayload(
            count=len(outcome.cancelled),
            jobs=outcome.cancelled,
            errors=payload_errors(JobsCancelPayload, outcome.refused),
        )


@database_sync_to_async  # gives the connection back: a stream holds none while it waits
def _visible_job(user, job_id: relay.GlobalID) -> models.Job:
    job = job_list(viewer=user).filter(pk=node_pk(job_id, "Job")).first()
    if job is None:
        raise NotFound("No such job.")
    return job


async def _authenticated(info: Info, *, job_token_allowed: bool = False):
    """The viewer, who must hold credentials: a user's, or (`job_token_allowed`, for the
    stream of one job) a job token's."""
    user = await aget_current_user(info)
    holds = credential_holder_id(user) is not None if job_token_allowed else user.is_authenticated
    if not holds:
        raise DomainError(
            "Authentication required: send a token in connection_init, or "
            "Authorization: Bearer <token>.",
            code="UNAUTHENTICATED",
        )
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
        if after_seq is not None and after_seq < 0:
            raise DomainError(
                "afterSeq must be 0 or more: send the seq of the last event you received, "
                "or leave it out for the current snapshot.",
                code="INVALID_ARGUMENT",
                field="afterSeq",
            )
        user = await _authenticated(info, job_token_allowed=True)
        try:
            job = await _visible_job(user, id)
        except NotFound as error:
            raise PermissionError(error.message) from None
        # An SSE reconnect's Last-Event-ID (the seq it last got) resumes like afterSeq; the
        # later of the two wins, so that no event the client has is sent again.
        resume_after = getattr(info.context, "resume_after", None)
        if resume_after is not None:
            after_seq = max(resume_after, after_seq or 0)
        deliver = hub_delivery(JobEvent.from_event, labelled=True)
        async for event in job_progress_stream(job=job, after_seq=after_seq, deliver=deliver):
            _note_sent_seq(info, event["seq"])
            yield shared_root(event, JobEvent.from_event)

    @strawberry.subscription(description="Every event of the viewer's jobs (staff: all jobs).")
    async def job_events(self, info: Info) -> AsyncGenerator[JobEvent, None]:
        user = await _authenticated(info)
        deliver = hub_delivery(JobEvent.from_event)
        async for event in job_events_stream(viewer=user, deliver=deliver):
            yield shared_root(event, JobEvent.from_event)


def _note_sent_seq(info: Info, seq: int) -> None:
    """The seq of the event being sent, where a transport that labels events reads it (the
    SSE view's context; a websocket's has no such field)."""
    if hasattr(info.context, "sent_seq"):
        info.context.sent_seq = seq
