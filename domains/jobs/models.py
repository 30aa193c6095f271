import uuid
from collections.abc import Mapping
from typing import ClassVar

from django.conf import settings
from django.db import models
from django.utils import timezone


class JobKind(models.TextChoices):
    SALES_REPORT = "SALES_REPORT"
    PAYMENT = "PAYMENT"
    IMAGE_PROCESSING = "IMAGE_PROCESSING"
    ORDER_WORKFLOW = "ORDER_WORKFLOW"
    CUSTOMER_SYNC = "CUSTOMER_SYNC"
    PRODUCT_SYNC = "PRODUCT_SYNC"
    METRICS_SNAPSHOT = "METRICS_SNAPSHOT"
    NOTIFICATION = "NOTIFICATION"
    EMAIL = "EMAIL"


class JobStatus(models.TextChoices):
    PENDING = "PENDING"
    STARTED = "STARTED"
    PROGRESS = "PROGRESS"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"


TERMINAL_STATUSES = frozenset(
    {JobStatus.SUCCESS, JobStatus.FAILURE, JobStatus.CANCELLED, JobStatus.TIMEOUT}
)
ACTIVE_STATUSES = frozenset(set(JobStatus) - TERMINAL_STATUSES)


class Job(models.Model):
    """One unit of background work. Its id, not the Celery task id, is what clients hold."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="jobs",
    )
    kind = models.CharField(max_length=32, choices=JobKind.choices)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING)
    progress = models.FloatField(null=True, blank=True)
    current = models.BigIntegerField(null=True, blank=True)
    total = models.BigIntegerField(null=True, blank=True)
    stage = models.CharField(max_length=64, blank=True)
    message = models.CharField(max_length=500, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # The seq of the last event written here; events past it live in Redis.
    seq = models.PositiveIntegerField(default=0)
    task_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # When a cancel was accepted (the job then stops and undoes its work, or ends as it
    # would have, but never SUCCESS); None while nobody asked.
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    # Why a cancel is refused from now on: the job passed its point of no return (an
    # order confirmed, an email on its way). Empty while it can be cancelled.
    cancel_refused_because = models.CharField(max_length=200, blank=True)
    # The outbox: what to send to start the job, and when it was last sent (None: never
    # sent, e.g. the broker was down at commit); the watchdog sends it again from here.
    task_name = models.CharField(max_length=100, blank=True)
    task_kwargs = models.JSONField(default=dict, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    # When the dispatcher gave the job a slot (domains/jobs/dispatcher.py): None while it
    # waits in the database for one. Its place among the waiting jobs and why it waits
    # are kept here while it waits (null and empty once admitted).
    admitted_at = models.DateTimeField(null=True, blank=True)
    queue_position = models.PositiveIntegerField(null=True, blank=True)
    waiting_reason = models.CharField(max_length=200, blank=True)
    # A running job's lease, renewed while its worker runs it; lapsed means nobody does.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # How often the watchdog sent the job again after it stopped making progress.
    revivals = models.PositiveIntegerField(default=0)
    # The job this one started again (jobRetry); the original keeps its own history.
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )
    # The trace the job was started in (OpenTelemetry, when tracing is on): its id, for
    # finding the trace, and its W3C context, so that a task sent again later (the
    # watchdog, from another process) continues that trace rather than starting one.
    trace_id = models.CharField(max_length=32, blank=True)
    trace_context = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [
            models.Index(fields=("owner", "-created_at")),
            models.Index(fields=("status", "lease_expires_at")),
            models.Index(
                fields=("created_at", "id"),
                condition=models.Q(status="PENDING", admitted_at__isnull=True),
                name="job_waiting_for_a_slot",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} {self.status}"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class JobBacked(models.Model):
    """A record that a job works on (a report, a payment, an image): its job, and what
    the job's end makes of it.

    The jobs domain's end transition (`domains.jobs.ending.job_end`) ends the record with
    its job, in one transaction, whatever the path: while the record's `status` is one of
    `job_open_statuses`, it becomes the one `job_end_statuses` gives for the job's end (a
    job status it does not name leaves the record to its own steps: a charge, a send), with
    the reason in `error_message` when the record fails (`job_cancel_reason` when a cancel
    fails it), and `completed_at` set where the model has one. Then the one handler its
    domain registered for `job_kind` does the rest (a refund, an email). A record without a
    `status` of its own (its parts have theirs) takes only the reason.
    """

    job_kind: ClassVar[str]
    job_end_statuses: ClassVar[Mapping[str, str]] = {}
    job_open_statuses: ClassVar[tuple[str, ...]] = ()
    job_cancel_reason: ClassVar[str] = ""

    job = models.OneToOneField(
        Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="%(class)s"
    )
    error_message = models.TextField(blank=True)

    class Meta:
        abstract = True


def job_ends(*, completed: str | None, failed: str, cancelled: str) -> dict[str, str]:
    """A record's status for each way its job ends (`completed` None: a success leaves it
    to the record's own step); a time limit fails it like a failure."""
    ends = {JobStatus.FAILURE: failed, JobStatus.TIMEOUT: failed, JobStatus.CANCELLED: cancelled}
    if completed is not None:
        ends[JobStatus.SUCCESS] = completed
    return ends


class IdempotencyKey(models.Model):
    """A client's idempotency key, claimed by the job its first request started: a repeat
    of that request within IDEMPOTENCY_KEY_LIFETIME gets the same job (domains.jobs.idempotency).
    Keys are the client's, so unique per client, as Stripe scopes them."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    operation = models.CharField(max_length=64)  # the mutation, e.g. "salesReportGenerate"
    request_digest = models.CharField(max_length=64)  # sha256 of the request's input
    job = models.OneToOneField(Job, on_delete=models.CASCADE, related_name="idempotency_key")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=("owner", "key"), name="idempotency_key_unique_per_user")
        ]

    def __str__(self) -> str:
        return f"{self.operation} {self.key!r} -> job #{self.job_id}"


class FollowUp(models.Model):
    """Work a state change calls for beyond its job (a compensation, a reconciliation, an
    email): the outbox row written in the same transaction as that change, sent after
    commit by the one dispatcher (domains.jobs.outbox), sent again by the watchdog while
    it is not done. Its task is idempotent: a second delivery does nothing twice."""

    task_name = models.CharField(max_length=100)
    task_kwargs = models.JSONField(default=dict, blank=True)
    # What it is about (e.g. "orders.checkout_compensate:42"): one live row per key.
    key = models.CharField(max_length=200)
    sends = models.PositiveIntegerField(default=0)
    sent_at = models.DateTimeField(null=True, blank=True)  # None: never sent
    # Past this, a row not done is sent again: its message or its run was lost.
    resend_after = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)  # why its last run did not finish
    trace_id = models.CharField(max_length=32, blank=True)
    trace_context = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("id",)
        indexes = [models.Index(fields=("done_at", "resend_after"))]
        constraints = [
            models.UniqueConstraint(
                fields=("key",),
                condition=models.Q(done_at__isnull=True),
                name="followup_one_live_per_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.task_name} #{self.pk} {'done' if self.done_at else 'live'}"
