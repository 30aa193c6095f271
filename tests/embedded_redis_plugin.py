"""Loaded with `-p` before Django's settings are read, so that every test run is isolated:

- with no REDIS_URL in the environment, the run gets its own embedded Redis server on a
  free port (never sharing state with a `make run` stack or another run); under
  pytest-xdist each worker process gets its own, or its own database of a given Redis, so
  that their Celery workers never take each other's tasks;
- with RabbitMQ as broker, each worker process gets its own vhost (`rabbitmqctl`);
- stored files (MEDIA_ROOT, REPORT_TMP_DIR) and metrics (METRICS_DIR) go to a fresh
  temporary folder.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from config import embedded_redis
from testbed.rabbitmq import fresh_vhost, is_amqp

_run_dir = Path(tempfile.mkdtemp(prefix="jobstream-test-"))
atexit.register(shutil.rmtree, _run_dir, ignore_errors=True)
os.environ["MEDIA_ROOT"] = str(_run_dir / "media")
os.environ["REPORT_TMP_DIR"] = str(_run_dir / "tmp" / "reports")
# The test process runs ORM code on threads that end without closing their connection
# (asyncio executors): a bounded pool would never get them back. Its servers and workers
# pool as in production (testbed.stack.process_env drops this).
os.environ["DB_POOL_DISABLED"] = "1"
# Each test process's servers and workers add up their own metrics, apart from any other.
os.environ["METRICS_DIR"] = str(_run_dir / "prometheus")

_xdist_worker = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ...
_EMBEDDED = "JOBSTREAM_TEST_EMBEDDED_REDIS"  # this run started the Redis it uses

if "REDIS_URL" not in os.environ or (_xdist_worker and os.environ.get(_EMBEDDED)):
    _port = embedded_redis.free_port()
    _process = embedded_redis.start(_port, _run_dir / "redis")
    atexit.register(_process.kill)
    os.environ["REDIS_URL"] = f"redis://127.0.0.1:{_port}/0"
    os.environ[_EMBEDDED] = "1"
elif _xdist_worker:
    _base, _, _db = os.environ["REDIS_URL"].rpartition("/")
    _offset = int(_xdist_worker.removeprefix("gw"))
    os.environ["REDIS_URL"] = f"{_base}/{(int(_db or 0) + _offset) % 16}"

# RabbitMQ as broker (CELERY_BROKER_URL=amqp://...): each test process gets a vhost of its
# own, made afresh, so that no two processes' workers take each other's tasks and no run
# inherits the queues of the one before.
# The URL given (an xdist worker inherits its controller's rewritten one: it starts from this).
_BROKER_GIVEN = "JOBSTREAM_TEST_BROKER_URL"
os.environ.setdefault(_BROKER_GIVEN, os.environ.get("CELERY_BROKER_URL", ""))
if is_amqp(os.environ[_BROKER_GIVEN]):
    os.environ["CELERY_BROKER_URL"] = fresh_vhost(
        os.environ[_BROKER_GIVEN], f"test-{_xdist_worker or 'main'}"
    )
