"""Job tokens: a token that reads one job and nothing else, and ends with its expiry, a
revoke, or its owner's access (deactivation, a password change)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from domains.accounts.access import access_refusal
from domains.accounts.errors import AccountError
from domains.accounts.models import ApiToken
from domains.accounts.selectors import user_list
from domains.accounts.services import (
    JOB_ACCESS_TOKEN_MAX_SECONDS,
    job_access_token_create,
    token_authenticate,
    token_revoke,
    token_viewer,
    user_for_token,
)
from domains.accounts.viewers import credential_holder_id, job_scope
from domains.jobs.models import JobKind
from domains.jobs.selectors import job_list
from domains.jobs.services import job_create
from domains.orders.selectors import order_list
from domains.reports.selectors import report_list
from testbed.factories import make_token, make_user

pytestmark = pytest.mark.django_db


def _job(owner):
    return job_create(kind=JobKind.SALES_REPORT, owner=owner)


def _viewer(token: str):
    row = token_authenticate(token)
    return token_viewer(row) if row else None


def test_a_job_token_reads_its_job_and_nothing_else():
    owner = make_user()
    job, sibling = _job(owner), _job(owner)
    token, _ = job_access_token_create(job=job, viewer=owner)

    viewer = _viewer(token)

    assert job_scope(viewer) == job.pk
    assert list(job_list(viewer=viewer)) == [job]
    assert not job_list(viewer=viewer).filter(pk=sibling.pk).exists()
    assert not viewer.is_authenticated  # `me` is null; every user rule refuses it
    assert not user_list(viewer=viewer).exists()
    assert not order_list(viewer=viewer).exists()
    assert not report_list(viewer=viewer).exists()
    assert credential_holder_id(viewer) == owner.pk  # its streams end with the owner's access


def test_a_staff_members_job_token_is_not_staff():
    staff, customer = make_user(is_staff=True), make_user()
    job, others = _job(customer), _job(customer)
    token, _ = job_access_token_create(job=job, viewer=staff)

    viewer = _viewer(token)

    assert not viewer.is_staff
    assert list(job_list(viewer=viewer)) == [job]
    assert not job_list(viewer=viewer).filter(pk=others.pk).exists()
    assert user_for_token(token).is_staff is False  # /metrics refuses it


@pytest.mark.parametrize("seconds", [0, -5, JOB_ACCESS_TOKEN_MAX_SECONDS + 1])
def test_an_expiry_outside_a_day_is_refused_with_a_code(seconds):
    owner = make_user()

    with pytest.raises(AccountError) as refused:
        job_access_token_create(job=_job(owner), viewer=owner, expires_in_seconds=seconds)

    assert (refused.value.code, refused.value.field) == ("INVALID_EXPIRY", "expiresInSeconds")
    assert not ApiToken.objects.exists()


def test_a_day_is_allowed():
    owner = make_user()

    _, row = job_access_token_create(
        job=_job(owner), viewer=owner, expires_in_seconds=JOB_ACCESS_TOKEN_MAX_SECONDS
    )

    assert row.expires_at - row.created_at == pytest.approx(
        timedelta(seconds=JOB_ACCESS_TOKEN_MAX_SECONDS), abs=timedelta(seconds=5)
    )


def test_a_job_token_stops_at_its_expiry():
    owner = make_user()
    token, row = job_access_token_create(job=_job(owner), viewer=owner, expires_in_seconds=60)

    ApiToken.objects.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert token_authenticate(token) is None
    assert access_refusal(user_id=owner.pk, token_id=row.pk) == "Token expired"


def test_a_job_token_stops_when_its_owner_revokes_it():
    owner = make_user()
    token, row = job_access_token_create(job=_job(owner), viewer=owner)

    token_revoke(token=token, viewer=owner)

    assert token_authenticate(token) is None
    assert access_refusal(user_id=owner.pk, token_id=row.pk) == "Token revoked"


def test_a_password_change_ends_job_tokens_but_not_full_tokens():
    owner = make_user()
    full = make_token(owner)
    token, row = job_access_token_create(job=_job(owner), viewer=owner)
    owner.refresh_from_db()

    owner.set_password("a-new-and-long-passphrase")
    owner.save()

    assert token_authenticate(token) is None
    assert access_refusal(user_id=owner.pk, token_id=row.pk) == "Password changed"
    assert token_authenticate(full) is not None


def test_a_deactivated_owner_ends_their_job_tokens():
    owner = make_user()
    token, row = job_access_token_create(job=_job(owner), viewer=owner)

    owner.is_active = False
    owner.save()

    assert token_authenticate(token) is None
    assert access_refusal(user_id=owner.pk, token_id=row.pk) == "Account deactivated"
