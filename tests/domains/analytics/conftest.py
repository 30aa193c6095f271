import os


def pytest_configure(config) -> None:
    """Small chunks, so that a test's few users still make a chord of several tasks, each
    held to two seconds (four users at two a second) so that a test can act mid-chunk."""
    os.environ.setdefault("METRICS_CHUNK_USERS", "4")
    os.environ.setdefault("METRICS_MAX_USERS_PER_SECOND", "2")
