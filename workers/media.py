"""Celery tasks for media."""
