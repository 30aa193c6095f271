"""Loaded with `-p` before Django's settings are read: with no REDIS_URL in the
environment, the suite gets its own embedded Redis server on a free port, so that runs
never share state with a `make run` stack or with each other."""

import atexit
import os
import tempfile
from pathlib import Path

from config import embedded_redis

if "REDIS_URL" not in os.environ:
    _port = embedded_redis.free_port()
    _process = embedded_redis.start(_port, Path(tempfile.mkdtemp(prefix="jobstream-test-redis-")))
    atexit.register(_process.kill)
    os.environ["REDIS_URL"] = f"redis://127.0.0.1:{_port}/0"
