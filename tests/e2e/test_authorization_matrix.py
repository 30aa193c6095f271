"""Who sees what: every query, mutation, subscription and file URL, for the owner of the
data, another user, staff, an anonymous caller and the owner's revoked token.

"No leak" is checked on the response's data as text: no id, email or number of the
owner's rows appears in it (errors may echo the caller's own input). Every row of the
matrix also has a viewer who does see the data, so the check can fail.
"""

import asyncio
import json
from decimal import Decimal

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.utils import timezone
from websockets.exceptions import ConnectionClosed

from domains.accounts.models import ApiToken
from domains.accounts.services import token_revoke
from domains.analytics.models import MetricsSnapshot
from domains.crm.models import Customer, SyncKind, SyncLog
from domains.infra.redis import sync_client
from domains.jobs.events import all_jobs_channel, event_from_job, user_channel
from domains.jobs.models import Job, JobKind
from domains.jobs.services import job_create
from domains.notifications.models import Notification
from domains.orders.models import Order
from domains.payments.models import Payment
from domains.reports.models import Report, ReportStatus
from schema.base import global_id
from testbed.factories import make_order, make_product, make_token, make_user
from testbed.graphql import JOB_PROGRESS, Subscription, SubscriptionError
from tests.domains.media.factories import make_image

OWNER, OTHER, STAFF, ANONYMOUS, REVOKED = "owner", "other", "staff", "anonymous", "revoked"
VIEWERS = (OWNER, OTHER, STAFF, ANONYMOUS, REVOKED)
OWNERS_DATA = {OWNER, STAFF}  # who may see the owner's rows
STAFF_DATA = {STAFF}  # who may see staff-only rows (CRM, metrics)


@pytest.fixture
def world(transactional_db, settings):
    """The owner's rows of every kind, staff-only rows, and a token for each viewer."""
    # A fast hasher: this fixture runs for every cell of the matrix, with seven passwords.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    owner = make_user(email="owner-matrix@example.com", phone="+15550001234")
    staff = make_user(is_staff=True)
    order = make_order(customer=owner, lines=[(make_product(), 1)])
    payment = Payment.objects.create(
        order=order,
        created_by=owner,
        amount=Decimal("10.00"),
        currency="USD",
        method="tok_visa",
        idempotency_key="matrix-key",
    )
    report = Report.objects.create(
        owner=owner,
        job=job_create(kind=JobKind.SALES_REPORT, owner=owner),
        status=ReportStatus.COMPLETED,
        parameters={"startDate": "2026-01-01", "endDate": "2026-01-01"},
    )
    report.file = default_storage.save(
        f"reports/{report.pk}/matrix.csv", ContentFile(f"order_number\n{order.number}\n")
    )
    report.save()
    image = make_image(owner=owner)
    customer = Customer.objects.create(
        external_id="crm-matrix",
        email="crm-matrix@example.com",
        external_updated_at=timezone.now(),
        synced_at=timezone.now(),
    )
    sync_log = SyncLog.objects.create(kind=SyncKind.FULL)
    snapshot = MetricsSnapshot.objects.create(as_of=timezone.now())
    revoked = make_token(owner)
    token_revoke(token=revoked, viewer=owner)
    tokens = {
        OWNER: make_token(owner),
        OTHER: make_token(make_user()),
        STAFF: make_token(staff),
        ANONYMOUS: None,
        REVOKED: revoked,
    }
    return {
        "owner": owner,
        "job_pk": report.job_id,
        "tokens": tokens,
        "ids": {
            "job": str(global_id("Job", report.job_id)),
            "report": str(global_id("Report", report.pk)),
            "order": str(global_id("Order", order.pk)),
            "payment": str(global_id("Payment", payment.pk)),
            "image": str(global_id("Image", image.pk)),
        },
        "owner_markers": [
            owner.email,
            order.number,
            *(str(global_id(t, pk)) for t, pk in _owner_rows(report, order, payment, image)),
        ],
        "staff_markers": [
            customer.email,
            str(global_id("SyncLog", sync_log.pk)),
            str(global_id("MetricsSnapshot", snapshot.pk)),
        ],
        "files": {
            "report": f"/files/reports/{report.pk}/",
            "image": f"/files/images/{image.pk}/original/",
        },
    }


def _owner_rows(report, order, payment, image):
    return [
        ("Job", report.job_id),
        ("Report", report.pk),
        ("Order", order.pk),
        ("Payment", payment.pk),
        ("Image", image.pk),
        ("Job", image.job_id),
    ]


def _post(world, viewer: str, query: str, variables: dict | None = None) -> dict:
    token = world["tokens"][viewer]
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    response = Client().post(
        "/graphql/",
        json.dumps({"query": query, "variables": variables or {}}),
        content_type="application/json",
        **headers,
    )
    assert response.status_code in (200, 401), response.content
    return response.json()


def _data_text(body: dict) -> str:
    return json.dumps(body.get("data"))


def _leaks(world, body: dict, markers: str) -> list[str]:
    text = _data_text(body)
    return [marker for marker in world[markers] if marker in text]


# Every query, each with the rows it could reveal.
QUERIES = {
    "me": ("query { me { email } }", None, "owner_markers"),
    "job": ("query($id: ID!) { job(id: $id) { id } }", "job", "owner_markers"),
    "jobs": ("query { jobs { edges { node { id } } } }", None, "owner_markers"),
    "report": (
        "query($id: ID!) { report(id: $id) { id fileUrl job { id } } }",
        "report",
        "owner_markers",
    ),
    "reports": ("query { reports { edges { node { id } } } }", None, "owner_markers"),
    "order": (
        "query($id: ID!) { order(id: $id) { id number payments { id } } }",
        "order",
        "owner_markers",
    ),
    "orders": ("query { orders { edges { node { id number } } } }", None, "owner_markers"),
    "payment": (
        "query($id: ID!) { payment(id: $id) { id order { number } } }",
        "payment",
        "owner_markers",
    ),
    "payments": ("query { payments { edges { node { id } } } }", None, "owner_markers"),
    "image": (
        "query($id: ID!) { image(id: $id) { id originalUrl job { id } } }",
        "image",
        "owner_markers",
    ),
    "images": ("query { images { edges { node { id } } } }", None, "owner_markers"),
    "customers": ("query { customers { edges { node { email } } } }", None, "staff_markers"),
    "syncLogs": ("query { syncLogs { edges { node { id } } } }", None, "staff_markers"),
    "metricsSnapshots": (
        "query { metricsSnapshots { edges { node { id } } } }",
        None,
        "staff_markers",
    ),
}


@pytest.mark.parametrize("viewer", VIEWERS)
@pytest.mark.parametrize("name", QUERIES)
def test_every_query_shows_rows_only_to_who_may_see_them(world, name, viewer):
    query, id_of, markers = QUERIES[name]
    variables = {"id": world["ids"][id_of]} if id_of else None
    allowed = OWNERS_DATA if markers == "owner_markers" else STAFF_DATA
    if name in ("me", "images"):
        allowed = {OWNER}  # oneself, staff included: me, and "the viewer's own images"

    body = _post(world, viewer, query, variables)

    if viewer in allowed:
        assert _leaks(world, body, markers), f"{viewer} should see the rows: {body}"
    else:
        assert _leaks(world, body, markers) == [], body


def _mutations(world) -> dict:
    ids = world["ids"]
    owner_token = world["tokens"][OWNER]
    return {
        "jobCancel": (
            "mutation($id: ID!) { jobCancel(id: $id) { job { id } errors { code } } }",
            {"id": ids["job"]},
        ),
        "orderCheckout": (
            'mutation($id: ID!) { orderCheckout(id: $id, paymentMethod: "tok_visa") { order { id } job { id } errors { code } } }',
            {"id": ids["order"]},
        ),
        "paymentProcess": (
            "mutation($input: PaymentProcessInput!) { paymentProcess(input: $input) { payment { id } errors { code } } }",
            {
                "input": {
                    "orderId": ids["order"],
                    "method": "tok_visa",
                    "idempotencyKey": "stranger",
                }
            },
        ),
        "tokenRevoke": (
            "mutation($token: String!) { tokenRevoke(token: $token) { revoked errors { code } } }",
            {"token": owner_token},
        ),
        "notificationSend": (
            "mutation($input: NotificationSendInput!) { notificationSend(input: $input) { notification { id } errors { code } } }",
            {
                "input": {
                    "userId": str(global_id("User", world["owner"].pk)),
                    "notificationType": "x",
                    "channels": ["EMAIL"],
                }
            },
        ),
        "customersSync": ("mutation { customersSync { job { id } errors { code } } }", None),
        "metricsSnapshotGenerate": (
            "mutation { metricsSnapshotGenerate { job { id } errors { code } } }",
            None,
        ),
        "productSync": (
            'mutation { productSync(sku: "SUP-00001") { job { id } errors { code } } }',
            None,
        ),
        "productsSyncAll": ("mutation { productsSyncAll { job { id } errors { code } } }", None),
    }


def _state(world) -> dict:
    return {
        "jobs": list(Job.objects.order_by("pk").values_list("pk", "status")),
        "orders": list(Order.objects.order_by("pk").values_list("pk", "status")),
        "payments": Payment.objects.count(),
        "reports": Report.objects.count(),
        "notifications": Notification.objects.count(),
        "live_owner_tokens": ApiToken.objects.filter(
            user=world["owner"], revoked_at__isnull=True
        ).count(),
    }


MUTATIONS_ON_OTHERS = [
    "jobCancel",
    "orderCheckout",
    "paymentProcess",
    "tokenRevoke",
    "notificationSend",
    "customersSync",
    "metricsSnapshotGenerate",
    "productSync",
    "productsSyncAll",
]


@pytest.mark.parametrize("viewer", [OTHER, ANONYMOUS, REVOKED])
@pytest.mark.parametrize("name", MUTATIONS_ON_OTHERS)
def test_no_mutation_acts_on_what_the_caller_may_not_touch(world, name, viewer):
    query, variables = _mutations(world)[name]
    before = _state(world)

    body = _post(world, viewer, query, variables)

    assert _state(world) == before, body
    assert _leaks(world, body, "owner_markers") == [], body
    refused = body.get("errors") or next(iter((body.get("data") or {}).values()))["errors"]
    assert refused, body


CREATING_MUTATIONS = {
    "orderCreate": (
        "mutation($input: OrderCreateInput!) { orderCreate(input: $input) { order { id } errors { code } } }",
        lambda: {"input": {"items": [{"productId": str(make_product().pk), "quantity": 1}]}},
    ),
    "salesReportGenerate": (
        "mutation($input: SalesReportInput!) { salesReportGenerate(input: $input) { report { id } errors { code } } }",
        lambda: {"input": {"startDate": "2026-01-01", "endDate": "2026-01-01"}},
    ),
    "notificationPreferencesUpdate": (
        "mutation($input: NotificationPreferencesUpdateInput!) { notificationPreferencesUpdate(input: $input) { errors { code } } }",
        lambda: {"input": {"sms": False, "pushToken": "stolen"}},
    ),
}


@pytest.mark.parametrize("viewer", [ANONYMOUS, REVOKED])
@pytest.mark.parametrize("name", CREATING_MUTATIONS)
def test_anonymous_and_revoked_callers_create_and_change_nothing(world, name, viewer):
    query, variables = CREATING_MUTATIONS[name]
    variables = variables()
    before = _state(world)

    body = _post(world, viewer, query, variables)

    assert _state(world) == before, body
    owner = world["owner"]
    owner.refresh_from_db()
    assert (owner.sms_notifications, owner.push_token) == (True, "")
    assert body.get("errors"), body


@pytest.mark.parametrize("viewer", VIEWERS)
@pytest.mark.parametrize("kind", ["report", "image"])
def test_file_urls_serve_only_the_owner_and_staff(world, kind, viewer):
    token = world["tokens"][viewer]
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}

    response = Client().get(world["files"][kind], **headers)

    if viewer in OWNERS_DATA:
        assert response.status_code == 200
    else:
        assert response.status_code in (401, 404)
        assert not getattr(response, "streaming", False)


@pytest.mark.e2e
@pytest.mark.parametrize("viewer", VIEWERS)
def test_the_job_progress_subscription_streams_only_to_the_owner_and_staff(live, world, viewer):
    async def first_event():
        async with Subscription(
            live.server.ws_url,
            JOB_PROGRESS,
            {"id": world["ids"]["job"]},
            token=world["tokens"][viewer],
        ) as sub:
            return await sub.next(timeout=10)

    if viewer in OWNERS_DATA:
        event = asyncio.run(first_event())
        assert event["jobProgress"]["jobId"] == world["ids"]["job"]
    else:
        with pytest.raises((SubscriptionError, ConnectionClosed)) as refused:
            asyncio.run(first_event())
        assert world["ids"]["job"] not in json.dumps(getattr(refused.value, "payload", None))


JOB_EVENTS = "subscription { jobEvents { jobId status } }"


@pytest.mark.e2e
@pytest.mark.parametrize("viewer", [OTHER, ANONYMOUS, REVOKED])
def test_job_events_of_the_owner_reach_the_owner_and_staff_only(live, world, viewer):
    """The owner's job event is published until the owner's and staff's sockets hear it;
    the viewer's socket, on the same server, hears nothing of it meanwhile."""
    job = Job.objects.get(pk=world["job_pk"])
    event = json.dumps(event_from_job(job))
    tokens = world["tokens"]

    async def heard(sub: Subscription) -> bool:
        try:
            data = await asyncio.wait_for(sub.next(), 0.2)
        except TimeoutError:
            return False
        return data["jobEvents"]["jobId"] == world["ids"]["job"]

    async def scenario():
        url = live.server.ws_url
        async with (
            Subscription(url, JOB_EVENTS, token=tokens[OWNER]) as owner,
            Subscription(url, JOB_EVENTS, token=tokens[STAFF]) as staff,
        ):
            try:
                listener = await Subscription(url, JOB_EVENTS, token=tokens[viewer]).__aenter__()
            except (SubscriptionError, ConnectionClosed):
                return "refused at connection", []
            heard_by = set()
            async with asyncio.timeout(20):
                while heard_by != {OWNER, STAFF}:
                    for channel in (user_channel(job.owner_id), all_jobs_channel()):
                        sync_client().publish(channel, event)
                    for name, sub in ((OWNER, owner), (STAFF, staff)):
                        if name not in heard_by and await heard(sub):
                            heard_by.add(name)
            try:
                stray = [await asyncio.wait_for(listener.next(), 0.5)]
            except TimeoutError:
                stray = []
            except SubscriptionError as refused:
                stray = [refused.payload]
            finally:
                await listener.ws.close()
            return "listened", stray

    _, stray = asyncio.run(scenario())

    assert world["ids"]["job"] not in json.dumps(stray)
