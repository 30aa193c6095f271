"""Every task loads the record it works on through the kit's one loader
(`workers.base.record_load`, which raises RecordVanished): no task queries a model itself,
so none can log and return, return False, end SUCCESS, or mask a DoesNotExist."""

import ast
from pathlib import Path

from django.conf import settings

WORKERS = Path(settings.BASE_DIR) / "workers"
ALLOWED = {
    # The kit: the loader itself.
    "base.py",
    # The canvas's error callback reads the Job (the jobs spine), not a domain's record.
    "chords.py",
}
QUERIES = {"objects", "_default_manager", "_base_manager", "get_object_or_404"}


def _queries(path: Path) -> list[str]:
    """Each place the file reaches a model's manager itself: `<file>:<line> <what>`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = [
        (node.lineno, f".{node.attr}")
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in QUERIES
    ] + [
        (node.lineno, node.id)
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and node.id in QUERIES
    ]
    return [f"{path.name}:{line} {what}" for line, what in sorted(found)]


def test_tasks_load_their_records_only_through_the_loader():
    offenders = [
        found
        for path in sorted(WORKERS.glob("*.py"))
        if path.name not in ALLOWED
        for found in _queries(path)
    ]
    assert offenders == []


def test_the_check_finds_a_task_loading_its_record_by_hand(tmp_path):
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text(
        "def send(order_id):\n"
        "    order = Order.objects.filter(pk=order_id).first()\n"
        "    if order is None:\n"
        "        return False\n"
        "    return Payment._default_manager.get(pk=1)\n"
    )

    assert _queries(sneaky) == ["sneaky.py:2 .objects", "sneaky.py:5 ._default_manager"]
