"""Registering an endpoint: only http(s) targets webhooks may reach, checked on every
address the host resolves to; nothing is ever sent to a refused one."""

import pytest
from standardwebhooks import Webhook

from domains.errors import PermissionDenied
from domains.webhooks.errors import WebhookError
from domains.webhooks.models import WebhookEndpoint
from domains.webhooks.services import webhook_endpoint_create

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata, link-local
        "http://[fe80::1]/hook",
        "http://[::ffff:169.254.169.254]/hook",  # the same, as an IPv4-mapped address
        "http://100.100.100.200/hook",  # a metadata address outside link-local space
    ],
)
def test_a_link_local_or_metadata_target_is_refused_even_where_private_ones_are_allowed(
    user, url, settings
):
    settings.WEBHOOK_ALLOW_PRIVATE = True

    with pytest.raises(WebhookError) as refused:
        webhook_endpoint_create(viewer=user, url=url, events=["JOB_SUCCEEDED"])

    assert refused.value.code == "TARGET_NOT_ALLOWED"
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/hook", "file:///etc/passwd", "javascript:alert(1)", "hook"]
)
def test_a_url_that_is_not_http_or_https_is_refused(user, url):
    with pytest.raises(WebhookError) as refused:
        webhook_endpoint_create(viewer=user, url=url, events=["JOB_SUCCEEDED"])

    assert refused.value.code == "INVALID_URL"
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.1/hook", "http://127.0.0.1:9/hook", "http://[::1]/hook", "http://192.168.1.5/"],
)
def test_a_private_or_loopback_target_is_refused_while_they_are_not_allowed(user, url, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False

    with pytest.raises(WebhookError) as refused:
        webhook_endpoint_create(viewer=user, url=url, events=["JOB_SUCCEEDED"])

    assert refused.value.code == "TARGET_NOT_ALLOWED"
    assert "private or loopback" in refused.value.message
    assert not WebhookEndpoint.objects.exists()


def test_a_name_that_resolves_to_loopback_is_refused_like_the_address(user, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False

    with pytest.raises(WebhookError) as refused:
        webhook_endpoint_create(viewer=user, url="http://localhost/hook", events=["JOB_FAILED"])

    assert refused.value.code == "TARGET_NOT_ALLOWED"


def test_credentials_in_the_url_are_refused(user):
    with pytest.raises(WebhookError) as refused:
        webhook_endpoint_create(
            viewer=user, url="http://user:pw@127.0.0.1/hook", events=["JOB_FAILED"]
        )

    assert refused.value.code == "INVALID_URL"


def test_a_loopback_endpoint_is_registered_in_development_with_a_secret_to_verify_with(
    user, settings
):
    settings.WEBHOOK_ALLOW_PRIVATE = True

    endpoint = webhook_endpoint_create(
        viewer=user,
        url=" http://127.0.0.1:8123/hooks ",
        events=["JOB_FAILED", "JOB_SUCCEEDED", "JOB_FAILED"],
    )

    assert endpoint.url == "http://127.0.0.1:8123/hooks"
    assert endpoint.events == ["JOB_FAILED", "JOB_SUCCEEDED"]
    assert endpoint.secret.startswith("whsec_")
    assert (endpoint.is_active, endpoint.all_jobs) == (True, False)
    Webhook(endpoint.secret)  # the library takes it as it is shown


@pytest.mark.parametrize("events", [[], ["JOB_EXPLODED"]])
def test_events_must_be_named_and_known(user, events):
    with pytest.raises(WebhookError) as refused:
        webhook_endpoint_create(viewer=user, url="http://127.0.0.1/hook", events=events)

    assert refused.value.code == "INVALID_EVENTS"


def test_only_staff_register_an_endpoint_for_every_job(user, staff_user):
    with pytest.raises(PermissionDenied):
        webhook_endpoint_create(
            viewer=user, url="http://127.0.0.1/hook", events=["JOB_FAILED"], all_jobs=True
        )

    endpoint = webhook_endpoint_create(
        viewer=staff_user, url="http://127.0.0.1/hook", events=["JOB_FAILED"], all_jobs=True
    )
    assert endpoint.all_jobs


def test_a_user_has_at_most_the_endpoints_allowed(user, settings):
    settings.WEBHOOK_MAX_ENDPOINTS_PER_USER = 2
    for _ in range(2):
        webhook_endpoint_create(viewer=user, url="http://127.0.0.1/hook", events=["JOB_FAILED"])

    with pytest.raises(WebhookError) as refused:
        webhook_endpoint_create(viewer=user, url="http://127.0.0.1/hook", events=["JOB_FAILED"])

    assert refused.value.code == "TOO_MANY_ENDPOINTS"
    assert WebhookEndpoint.objects.count() == 2
