"""Celery tasks for crm."""
