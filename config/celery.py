"""The Celery app; its settings live in config.settings under the CELERY_ prefix."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("jobstream")
app.config_from_object("django.conf:settings", namespace="CELERY")
