"""Celery tasks for catalog."""
