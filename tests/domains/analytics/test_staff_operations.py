"""Every staff-only operation of notifications, CRM and analytics answers anyone else with
a permission error, never data, and changes nothing."""

import pytest
from django.test import Client

from domains.analytics.models import MetricsSnapshot
from domains.crm.models import Customer, SyncLog
from domains.jobs.models import Job
from domains.notifications.models import Notification
from schema.base import global_id

pytestmark = pytest.mark.e2e

STAFF_OPERATIONS = {
    "notificationSend": (
        'mutation($u: ID!) { notificationSend(input: {userId: $u, notificationType: "x", '
        "channels: [EMAIL]}) { notification { id } errors { code } } }"
    ),
    "customersSync": "mutation { customersSync(fullSync: true) { syncLog { id } errors { code } } }",
    "metricsSnapshotGenerate": "mutation { metricsSnapshotGenerate { metricsSnapshot { id } errors { code } } }",
    "customers": "{ customers(first: 5) { totalCount edges { node { email } } } }",
    "syncLogs": "{ syncLogs(first: 5) { totalCount edges { node { id } } } }",
    "metricsSnapshots": "{ metricsSnapshots(first: 5) { totalCount edges { node { revenue } } } }",
}


@pytest.mark.parametrize("operation", STAFF_OPERATIONS)
@pytest.mark.parametrize("who", ["anonymous", "user"])
def test_non_staff_are_refused_and_nothing_changes(live, user, operation, who):
    Customer.objects.create(
        external_id="x-1",
        email="secret@example.com",
        external_updated_at="2026-01-01T00:00:00Z",
        synced_at="2026-01-01T00:00:00Z",
    )
    client = live.client(user) if who == "user" else live.client()

    body = client.execute(STAFF_OPERATIONS[operation], {"u": str(global_id("User", user.pk))})

    assert body["data"] is None or body["data"].get(operation) is None
    [error] = body["errors"]
    assert error["path"] == [operation]
    assert error["message"] == "User is not a staff member."
    assert "secret@example.com" not in str(body)
    assert Job.objects.count() == 0
    assert (
        Notification.objects.count(),
        SyncLog.objects.count(),
        MetricsSnapshot.objects.count(),
    ) == (0, 0, 0)


@pytest.mark.parametrize(
    "path",
    [
        "/admin/notifications/outgoingemail/",
        "/admin/notifications/notification/",
        "/admin/crm/customer/",
        "/admin/crm/synclog/",
        "/admin/analytics/metricssnapshot/",
    ],
)
def test_everything_is_visible_in_the_admin(transactional_db, path):
    from testbed.factories import make_user

    admin = make_user(is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)

    assert client.get(path).status_code == 200
    assert client.get(path + "add/").status_code in (200, 403)
