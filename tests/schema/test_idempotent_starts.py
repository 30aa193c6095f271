"""Every mutation that starts a job, over HTTP against a real server: the same key twice at
once gives one job; the same key with other input is refused (IDEMPOTENCY_KEY_REUSED);
another user's identical key gives their own job; the Idempotency-Key header works as the
argument does; after 24 hours a key is new again."""

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.utils import timezone
from strawberry import relay

from domains.jobs.models import ACTIVE_STATUSES, IdempotencyKey, Job, JobKind, JobStatus
from domains.jobs.retry import jobs_cancel
from domains.jobs.services import job_create
from domains.jobs.tasks import JobTaskName
from domains.orders.models import OrderStatus
from schema import schema
from schema.base import global_id
from testbed.factories import make_order, make_token, make_user
from testbed.waiting import wait_until
from tests.domains.media import images
from tests.fixtures.commerce import stocked_product

pytestmark = pytest.mark.e2e

ANSWER = "job { id } errors { field code message }"


@dataclass(frozen=True)
class Start:
    """One start mutation: its job's kind, and a request of it (`variant` 0) or one with
    other input (`variant` 1), as (document, variables, file or None)."""

    name: str
    kind: str
    request: Callable[[dict, int, str | None], tuple[str, dict, bytes | None]]
    prepare: Callable[[Any], dict] = lambda user: {}
    key_required: bool = False  # paymentProcess: the header must repeat its input's key


def _arg(document: str) -> Callable:
    """A mutation whose key is an argument; `variables(state, variant)` fills the rest."""

    def build(variables: Callable[[dict, int], dict]) -> Callable:
        def request(state: dict, variant: int, key: str | None):
            return document, {**variables(state, variant), "key": key}, None

        return request

    return build


def _in_input(document: str, fields: Callable[[dict, int], dict]) -> Callable:
    def request(state: dict, variant: int, key: str | None):
        return document, {"input": {**fields(state, variant), "idempotencyKey": key}}, None

    return request


def _pending_order(user) -> dict:
    order = make_order(customer=user, lines=[(stocked_product(), 1)], status=OrderStatus.PENDING)
    return {"order": str(global_id("Order", order.pk))}


def _failed_syncs(user) -> dict:
    jobs = []
    for sku in ("SKU-A", "SKU-B"):
        job = job_create(kind=JobKind.PRODUCT_SYNC, owner=user, total=1)
        Job.objects.filter(pk=job.pk).update(
            status=JobStatus.FAILURE,
            finished_at=timezone.now(),
            task_name=JobTaskName.CATALOG_SYNC_PRODUCT,
            task_kwargs={"sku": sku},
        )
        jobs.append(str(global_id("Job", job.pk)))
    return {"jobs": jobs}


def _upload(state: dict, variant: int, key: str | None):
    document = (
        "mutation($file: Upload!, $key: String) "
        f"{{ imageUpload(file: $file, idempotencyKey: $key) {{ {ANSWER} }} }}"
    )
    return document, {"file": None, "key": key}, images.photo((64 + 16 * variant, 48))


SYNC_ALL = f"mutation($key: String) {{ productsSyncAll(idempotencyKey: $key) {{ {ANSWER} }} }}"
SNAPSHOT = (
    f"mutation($key: String) {{ metricsSnapshotGenerate(idempotencyKey: $key) {{ {ANSWER} }} }}"
)

STARTS = [
    Start(
        "salesReportGenerate",
        JobKind.SALES_REPORT,
        _in_input(
            f"mutation($input: SalesReportInput!) {{ salesReportGenerate(input: $input) {{ {ANSWER} }} }}",
            lambda state, v: {"startDate": "2026-01-01", "endDate": f"2026-01-{30 - v}"},
        ),
    ),
    Start(
        "productSync",
        JobKind.PRODUCT_SYNC,
        _arg(
            "mutation($sku: String!, $key: String) "
            f"{{ productSync(sku: $sku, idempotencyKey: $key) {{ {ANSWER} }} }}"
        )(lambda state, v: {"sku": f"SKU-{v}"}),
    ),
    # No input to differ: "other input" is the key sent to another operation.
    Start(
        "productsSyncAll",
        JobKind.PRODUCT_SYNC,
        lambda state, v, key: ((SYNC_ALL, SNAPSHOT)[v], {"key": key}, None),
    ),
    Start(
        "orderCheckout",
        JobKind.ORDER_WORKFLOW,
        _arg(
            "mutation($id: ID!, $method: String!, $key: String) { orderCheckout(id: $id, "
            f"paymentMethod: $method, idempotencyKey: $key) {{ {ANSWER} }} }}"
        )(lambda state, v: {"id": state["order"], "method": ("tok_visa", "tok_mastercard")[v]}),
        _pending_order,
    ),
    Start(
        "paymentProcess",
        JobKind.PAYMENT,
        _in_input(
            f"mutation($input: PaymentProcessInput!) {{ paymentProcess(input: $input) {{ {ANSWER} }} }}",
            lambda state, v: {"orderId": state["order"], "method": ("tok_visa", "tok_amex")[v]},
        ),
        _pending_order,
        key_required=True,
    ),
    Start("imageUpload", JobKind.IMAGE_PROCESSING, _upload),
    Start(
        "notificationSend",
        JobKind.NOTIFICATION,
        _in_input(
            f"mutation($input: NotificationSendInput!) {{ notificationSend(input: $input) {{ {ANSWER} }} }}",
            lambda state, v: {
                "userId": state["me"],
                "notificationType": ("order_shipped", "order_delayed")[v],
                "channels": ["EMAIL"],
            },
        ),
        lambda user: {"me": str(global_id("User", user.pk))},
    ),
    Start(
        "customersSync",
        JobKind.CUSTOMER_SYNC,
        _arg(
            "mutation($hours: Int!, $key: String) "
            f"{{ customersSync(sinceHours: $hours, idempotencyKey: $key) {{ {ANSWER} }} }}"
        )(lambda state, v: {"hours": (24, 12)[v]}),
    ),
    Start(
        "metricsSnapshotGenerate",
        JobKind.METRICS_SNAPSHOT,
        lambda state, v, key: ((SNAPSHOT, SYNC_ALL)[v], {"key": key}, None),
    ),
    Start(
        "jobRetry",
        JobKind.PRODUCT_SYNC,
        _arg(
            "mutation($id: ID!, $key: String) "
            f"{{ jobRetry(id: $id, idempotencyKey: $key) {{ {ANSWER} }} }}"
        )(lambda state, v: {"id": state["jobs"][v]}),
        _failed_syncs,
    ),
]


class Viewer:
    """A staff user (every start is open to staff) speaking to the live server."""

    def __init__(self, live, start: Start):
        self.user = make_user(is_staff=True)
        self.token = make_token(self.user)
        self.url = live.server.graphql_url
        self.start = start
        self.prepared: set[int] = set()  # jobs a test arranged (a failed one to retry)
        self.prepare()

    def prepare(self) -> None:
        """The record(s) a request starts on: fresh ones, each time."""
        mine = Job.objects.filter(owner=self.user)
        before = set(mine.values_list("pk", flat=True))
        self.state = self.start.prepare(self.user)
        self.prepared |= set(mine.values_list("pk", flat=True)) - before

    def send(self, key: str | None, *, variant: int = 0, header: str | None = None) -> dict:
        if key is None and self.start.key_required:
            key = header
        document, variables, file = self.start.request(self.state, variant, key)
        headers = {"Authorization": f"Bearer {self.token}"}
        if header is not None:
            headers["Idempotency-Key"] = header
        if file is None:
            response = httpx.post(
                self.url,
                json={"query": document, "variables": variables},
                headers=headers,
                timeout=60,
            )
        else:
            operations = {"query": document, "variables": variables}
            response = httpx.post(
                self.url,
                data={
                    "operations": json.dumps(operations),
                    "map": json.dumps({"0": ["variables.file"]}),
                },
                files={"0": ("photo.jpg", file, "image/jpeg")},
                headers=headers,
                timeout=60,
            )
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body["errors"]
        return next(iter(body["data"].values()))

    def jobs(self) -> int:
        jobs = Job.objects.filter(owner=self.user, kind=self.start.kind)
        return jobs.exclude(pk__in=self.prepared).count()


def _at_once(*sends: Callable[[], dict]) -> list[dict]:
    barrier = threading.Barrier(len(sends))
    answers: list = [None] * len(sends)

    def run(n: int) -> None:
        barrier.wait()
        answers[n] = sends[n]()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(sends))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


@pytest.fixture
def settled(live):
    """The jobs the test started end before its rows go: cancelled (a whole catalog sync
    takes minutes), each as a client's cancel does."""
    yield live
    jobs_cancel(jobs=Job.objects.all())
    wait_until(
        lambda: not Job.objects.filter(status__in=ACTIVE_STATUSES).exists(),
        timeout=60,
        message="the test's jobs to end",
    )


def test_every_mutation_that_starts_a_job_is_covered():
    mutation = schema._schema.mutation_type
    starts = {
        name
        for name, field in mutation.fields.items()
        if "job" in _unwrap(field.type).fields and name not in ("jobCancel",)
    }
    assert starts == {s.name for s in STARTS}
    assert all(
        "idempotencyKey" in field.args or "input" in field.args
        for name, field in mutation.fields.items()
        if name in starts
    )


def _unwrap(kind):
    while hasattr(kind, "of_type"):
        kind = kind.of_type
    return kind


@pytest.mark.parametrize("start", STARTS, ids=[s.name for s in STARTS])
def test_a_key_starts_one_job_per_user_and_input(settled, start):
    viewer, other = Viewer(settled, start), Viewer(settled, start)
    before = viewer.jobs()

    first, second = _at_once(lambda: viewer.send("same"), lambda: viewer.send("same"))
    reused = viewer.send("same", variant=1)
    theirs = other.send("same")

    assert (first["errors"], second["errors"]) == ([], []), (first, second)
    assert first["job"]["id"] == second["job"]["id"]
    assert viewer.jobs() == before + 1
    assert reused["job"] is None
    assert [(e["code"], e["field"]) for e in reused["errors"]] == [
        ("IDEMPOTENCY_KEY_REUSED", "idempotencyKey")
    ]
    assert theirs["errors"] == []
    assert theirs["job"]["id"] != first["job"]["id"]
    assert IdempotencyKey.objects.get(owner=other.user, key="same").job.owner == other.user


@pytest.mark.parametrize("start", STARTS, ids=[s.name for s in STARTS])
def test_the_header_holds_a_key_for_24_hours(settled, start):
    viewer = Viewer(settled, start)
    before = viewer.jobs()

    first = viewer.send(None, header="h-1")
    again = viewer.send(None, header="h-1")
    held = viewer.jobs()
    IdempotencyKey.objects.filter(owner=viewer.user).update(
        created_at=timezone.now() - timedelta(hours=24, seconds=1)
    )
    viewer.prepare()  # a record to start on again, where it takes one
    renewed = viewer.send(None, header="h-1")

    assert (first["errors"], again["errors"], renewed["errors"]) == ([], [], [])
    assert again["job"]["id"] == first["job"]["id"]
    assert held == before + 1
    assert renewed["job"]["id"] != first["job"]["id"]
    assert viewer.jobs() == before + 2
    renewed_pk = int(relay.GlobalID.from_id(renewed["job"]["id"]).node_id)
    assert IdempotencyKey.objects.get(owner=viewer.user).job_id == renewed_pk


def test_a_header_and_an_argument_that_differ_are_refused(settled):
    viewer = Viewer(settled, STARTS[0])

    answer = viewer.send("argument-key", header="header-key")

    assert [(e["code"], e["field"]) for e in answer["errors"]] == [
        ("INVALID_IDEMPOTENCY_KEY", "idempotencyKey")
    ]
    assert viewer.jobs() == 0


def test_the_header_is_refused_for_several_starts_at_once(settled):
    viewer = Viewer(settled, STARTS[2])
    document = f"mutation {{ a: productsSyncAll {{ {ANSWER} }} b: metricsSnapshotGenerate {{ {ANSWER} }} }}"

    response = httpx.post(
        viewer.url,
        json={"query": document},
        headers={"Authorization": f"Bearer {viewer.token}", "Idempotency-Key": "both"},
        timeout=60,
    )

    answers = response.json()["data"]
    assert [e["code"] for e in answers["a"]["errors"]] == ["INVALID_IDEMPOTENCY_KEY"]
    assert [e["code"] for e in answers["b"]["errors"]] == ["INVALID_IDEMPOTENCY_KEY"]
    assert not Job.objects.filter(owner=viewer.user).exists()


@pytest.mark.django_db
def test_a_replay_after_the_job_was_retried_still_names_its_record():
    # Before: a checkout's order (an image too) moves its one `job` to the retry, so the
    # replay of the first request answered `order: null`.
    from schema.idempotency import _record

    user = make_user()
    order = make_order(customer=user, lines=[(stocked_product(), 1)], status=OrderStatus.PENDING)
    first = job_create(kind=JobKind.ORDER_WORKFLOW, owner=user)
    retry = job_create(kind=JobKind.ORDER_WORKFLOW, owner=user, retry_of=first)
    order.job = retry
    order.save(update_fields=["job"])

    assert _record(type(order), first) == order
    assert _record(type(order), retry) == order
