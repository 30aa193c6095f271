import os


def pytest_configure(config) -> None:
    """Small chunks, so that a test's few users still make a chord of several tasks."""
    os.environ.setdefault("METRICS_CHUNK_USERS", "4")
