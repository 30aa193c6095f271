"""Celery tasks for orders."""
