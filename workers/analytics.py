"""Celery tasks for analytics."""
