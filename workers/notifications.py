"""Celery tasks for notifications."""
