"""Sandbox stand-in for the supplier catalog API that productSync reads."""

urlpatterns: list = []
