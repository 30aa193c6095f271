"""Every retry goes through the worker kit's one policy (workers.base: `RetryLater` ->
`retry_later`): no task calls `self.retry` or sets `autoretry_for`, none reads its own
budget (`request.retries`), and nothing in workers/ or domains/ sleeps but the waits that
are not retries."""

import ast
from pathlib import Path

from django.conf import settings

BASE = Path(settings.BASE_DIR)
SOURCES = ("workers", "domains")
# The kit itself: the one place that sends a retry and counts the budget.
KIT = "workers/base.py"
# Waits that are not retries, each for its reason.
WAITS = {
    # The interruptible wait every waiting job shares: it stops at the job's cancel.
    "domains/jobs/cancellation.py",
    # Holds a long read to a rate (a report's rows a second): a pace, not a retry.
    "domains/infra/pacing.py",
    # The stand-in outside services' own latency, served by the web process.
    "domains/sandbox/crm.py",
}
# The integrations client's attempts within one call: short, capped (backoff_cap) and
# cancellable; anything longer is handed to the kit as RetryLater.
IN_CALL_BACKOFF = "domains/integrations/client.py"


def _name(node: ast.AST) -> str:
    """`a.b.c` for an attribute chain or name, else ''."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return ""


def _retries_outside_the_kit(path: Path, shown: str) -> list[str]:
    """Each way the file retries by itself: `<path>:<line> <what>`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            called = _name(node.func)
            if called.endswith(".retry") and shown != KIT:
                found.append((node.lineno, f"{called}()"))
            if called in {"time.sleep", "sleep"} and shown not in WAITS:
                found.append((node.lineno, f"{called}()"))
            if called == "cancel_wait" and shown not in WAITS | {IN_CALL_BACKOFF}:
                found.append((node.lineno, "cancel_wait()"))
            found += [
                (node.lineno, f"{keyword.arg}=")
                for keyword in node.keywords
                if keyword.arg == "autoretry_for"
            ]
        elif isinstance(node, ast.Attribute):
            if node.attr == "autoretry_for":
                found.append((node.lineno, ".autoretry_for"))
            if _name(node).endswith("request.retries") and shown != KIT:
                found.append((node.lineno, "request.retries"))
        elif isinstance(node, ast.Name) and node.id == "autoretry_for":
            found.append((node.lineno, "autoretry_for"))
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module == "time"
            and any(alias.name == "sleep" for alias in node.names)
            and shown not in WAITS
        ):
            found.append((node.lineno, "from time import sleep"))
    return [f"{shown}:{line} {what}" for line, what in sorted(found)]


def test_nothing_retries_outside_the_kits_one_policy():
    offenders = [
        found
        for source in SOURCES
        for path in sorted((BASE / source).rglob("*.py"))
        for found in _retries_outside_the_kit(path, path.relative_to(BASE).as_posix())
    ]
    assert offenders == []


def test_the_check_finds_each_way_of_retrying_by_hand(tmp_path):
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text(
        "import time\n"
        "from time import sleep\n"
        "@shared_task(bind=True, autoretry_for=(OSError,))\n"
        "def send(self):\n"
        "    if self.request.retries >= self.max_retries:\n"
        "        return None\n"
        "    time.sleep(1)\n"
        "    raise self.retry(countdown=5)\n"
        "class Part(JobPartTask):\n"
        "    autoretry_for = (OSError,)\n"
        "def poll():\n"
        "    cancel_wait(2)\n"
        "    send.retry()\n"
    )

    assert _retries_outside_the_kit(sneaky, "workers/sneaky.py") == [
        "workers/sneaky.py:2 from time import sleep",
        "workers/sneaky.py:3 autoretry_for=",
        "workers/sneaky.py:5 request.retries",
        "workers/sneaky.py:7 time.sleep()",
        "workers/sneaky.py:8 self.retry()",
        "workers/sneaky.py:10 autoretry_for",
        "workers/sneaky.py:12 cancel_wait()",
        "workers/sneaky.py:13 send.retry()",
    ]


def test_every_retry_budget_is_one_setting_of_one_form():
    """`max_retries=settings.<X>_MAX_RETRIES` (reschedules after the first run), or the
    kit's own default; never a literal, never attempts minus one."""
    offenders = []
    for path in sorted((BASE / "workers").glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        values = [
            (node.lineno, node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.keyword) and node.arg == "max_retries"
        ] + [
            (node.lineno, node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign)
            and any(_name(target) == "max_retries" for target in node.targets)
        ]
        for line, value in values:
            budget = _name(value)
            one_form = budget.startswith("settings.") and budget.endswith("_MAX_RETRIES")
            kit_default = path.name == "base.py" and isinstance(value, ast.Constant)
            if not (one_form or kit_default):
                offenders.append(f"{path.name}:{line} {ast.unparse(value)}")
    assert offenders == []
