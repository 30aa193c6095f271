"""The live jobs console: one page whose scripts talk only to /graphql/ (no build step)."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from domains.jobs.models import JobKind, JobStatus


@ensure_csrf_cookie  # its sign-in and every later POST carry the token
def console(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "console.html",
        {
            "csrf_cookie_name": settings.CSRF_COOKIE_NAME,
            "kinds": JobKind.values,
            "statuses": JobStatus.values,
        },
    )
