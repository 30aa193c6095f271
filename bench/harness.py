"""What every benchmark needs: a private database and Redis, Django set up, figures printed.

Import this first (`from bench import harness`) from a script under bench/: it points the
run at a temporary var/ (SQLite unless DATABASE_URL is set) and at an embedded Redis
unless REDIS_URL is set, then sets Django up and migrates.
"""

import atexit
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUN_DIR = Path(tempfile.mkdtemp(prefix="jobstream-bench-"))
atexit.register(shutil.rmtree, RUN_DIR, ignore_errors=True)
os.environ.setdefault("VAR_DIR", str(RUN_DIR))
os.environ.setdefault("MEDIA_ROOT", str(RUN_DIR / "media"))
os.environ.setdefault("REPORT_TMP_DIR", str(RUN_DIR / "tmp"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")

if "REDIS_URL" not in os.environ:
    from config import embedded_redis

    _port = embedded_redis.free_port()
    _redis = embedded_redis.start(_port, RUN_DIR / "redis")
    atexit.register(_redis.kill)
    os.environ["REDIS_URL"] = f"redis://127.0.0.1:{_port}/0"

import django  # noqa: E402
from django.core.management import call_command  # noqa: E402

django.setup()
call_command("migrate", interactive=False, verbosity=0)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def row(label: str, ours: float, baseline: float, unit: str) -> str:
    ratio = ours / baseline if baseline else float("inf")
    return f"  {label:<34} ours {ours:>10.2f} {unit:<5} baseline {baseline:>10.2f} {unit:<5} ratio {ratio:5.2f}x"


def median(values: list[float]) -> float:
    return statistics.median(values)
