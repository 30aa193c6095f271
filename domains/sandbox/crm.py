"""Sandbox stand-in for the CRM API that customersSync reads."""

urlpatterns: list = []
