"""Sandbox stand-in for the SMS and push providers."""

urlpatterns: list = []
