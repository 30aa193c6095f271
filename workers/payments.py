"""Celery tasks for payments."""
