"""Every send goes through the outbox (ARCHITECTURE, 14): nothing calls the broker but the
dispatcher in domains/jobs, and a running job launching its own chord or chain."""

import ast
from pathlib import Path

from django.conf import settings

BASE = Path(settings.BASE_DIR)
SOURCES = ("domains", "workers", "schema", "config")
SENDS = {"send_task", "apply_async", "delay", "delay_on_commit", "apply_async_on_commit"}
ALLOWED = {
    # The running job's own canvas (start_chord, start_chain): its parts are the job's.
    "workers/chords.py",
    # The Celery app's publish hook, through which the dispatcher's send itself passes.
    "config/celery.py",
}


def _sends(path: Path) -> list[str]:
    """Each call of a sending method in the file: `<path>:<line> .<method>()`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in SENDS
    ]
    shown = path.relative_to(BASE) if path.is_relative_to(BASE) else path.name
    return [f"{shown}:{c.lineno} .{c.func.attr}()" for c in sorted(calls, key=lambda c: c.lineno)]


def test_nothing_outside_the_jobs_domain_sends_to_the_broker_directly():
    offenders = [
        send
        for source in SOURCES
        for path in sorted((BASE / source).rglob("*.py"))
        if not path.relative_to(BASE).as_posix().startswith("domains/jobs/")
        and path.relative_to(BASE).as_posix() not in ALLOWED
        for send in _sends(path)
    ]
    assert offenders == []


def test_the_check_finds_a_direct_send(tmp_path):
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text(
        "from celery import current_app\n"
        "current_app.send_task('orders.checkout_compensate', kwargs={})\n"
        "task.delay(1)\n"
        "task.s().apply_async()\n"
    )

    assert _sends(sneaky) == [
        "sneaky.py:2 .send_task()",
        "sneaky.py:3 .delay()",
        "sneaky.py:4 .apply_async()",
    ]
