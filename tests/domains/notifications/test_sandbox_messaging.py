"""The SMS and push stand-ins hold what was sent to users (numbers, tokens, messages):
they answer only a caller with the channel's API key, reads included."""

import pytest
from django.test import Client

from domains.sandbox.messaging import sent_messages

SMS = {"to": "+15550003001", "body": "Your code is 123456"}


@pytest.mark.django_db
@pytest.mark.parametrize("authorization", [None, "Bearer guessed"])
@pytest.mark.parametrize("channel", ["sms", "push"])
def test_reading_what_was_sent_needs_the_channel_key(channel, authorization):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}

    response = Client().get(f"/sandbox/messaging/{channel}", **headers)

    assert response.status_code == 401
    assert "results" not in response.json()


@pytest.mark.django_db
def test_sending_with_another_key_is_refused_and_nothing_recorded():
    before = len(sent_messages("sms", to=SMS["to"]))

    response = Client().post(
        "/sandbox/messaging/sms",
        SMS,
        content_type="application/json",
        HTTP_AUTHORIZATION="Bearer guessed",
    )

    assert response.status_code == 401
    assert len(sent_messages("sms", to=SMS["to"])) == before


@pytest.mark.django_db
def test_the_channel_key_sends_and_reads(settings):
    key = {"HTTP_AUTHORIZATION": f"Bearer {settings.SMS_API_KEY}"}

    sent = Client().post("/sandbox/messaging/sms", SMS, content_type="application/json", **key)
    read = Client().get("/sandbox/messaging/sms", {"to": SMS["to"]}, **key)

    assert sent.status_code == 201
    assert sent.json()["id"] in [m["id"] for m in read.json()["results"]]
