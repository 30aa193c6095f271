"""One staff check (domains/accounts/permissions.py), one permission class at the edge
(schema.permissions.IsStaff), one refusal shape: no module checks `is_staff` to refuse on
its own, and every staff-only field carries the one class."""

import ast
from pathlib import Path

from django.conf import settings
from strawberry_django.permissions import IsStaff as LibraryIsStaff

from schema import schema
from schema.permissions import IsStaff

BASE = Path(settings.BASE_DIR)
THE_CHECK = "domains/accounts/permissions.py"


def _refusals(path: Path) -> list[str]:
    """Each `raise PermissionDenied(...)` in the file, and each `.is_staff` read in a schema
    module: a check of its own (a service or selector scoping by it is not one)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = [
        f"{path.name}:{node.lineno} raise PermissionDenied"
        for node in ast.walk(tree)
        if isinstance(node, ast.Raise)
        and isinstance(node.exc, ast.Call)
        and getattr(node.exc.func, "id", None) == "PermissionDenied"
    ]
    if path.parent.name == "schema":
        found += [
            f"{path.name}:{node.lineno} .is_staff"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr == "is_staff"
            and isinstance(node.ctx, ast.Load)
        ]
    return found


def test_no_schema_module_or_service_checks_staff_itself():
    offenders = [
        refusal
        for source in ("schema", "domains")
        for path in sorted((BASE / source).rglob("*.py"))
        if path.relative_to(BASE).as_posix() != THE_CHECK
        for refusal in _refusals(path)
    ]

    assert offenders == [], "call domains.accounts.permissions.staff_required / IsStaff()"


def test_the_scan_finds_a_check_of_its_own(tmp_path):
    resolvers = tmp_path / "schema" / "things.py"
    resolvers.parent.mkdir()
    resolvers.write_text(
        "def thing_start(info):\n"
        "    if not viewer(info).is_staff:\n"
        "        raise PermissionDenied('Only staff.')\n"
    )

    assert _refusals(resolvers) == [
        "things.py:3 raise PermissionDenied",
        "things.py:2 .is_staff",
    ]


def test_every_staff_only_field_carries_the_one_permission_class():
    staff_only, library = set(), set()
    for root in (schema._schema.query_type, schema._schema.mutation_type):
        for name, field in root.fields.items():
            extensions = field.extensions["strawberry-definition"].extensions
            staff_only |= {name for e in extensions if isinstance(e, IsStaff)}
            library |= {name for e in extensions if isinstance(e, LibraryIsStaff)}

    assert library == set()
    assert staff_only == {
        "jobsCancel",
        "productSync",
        "productsSyncAll",
        "notificationSend",
        "customersSync",
        "metricsSnapshotGenerate",
        "customers",
        "syncLogs",
        "metricsSnapshots",
    }
