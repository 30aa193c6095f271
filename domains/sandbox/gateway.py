"""Sandbox stand-in for the payment gateway (charge, refund, verify) with its ledger."""

urlpatterns: list = []
