"""bench/ and tests/ share testbed/, and neither reaches into the other: a benchmark runs
from a checkout without the test suite, and testbed/ is a library both use."""

import ast
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def imports_of(folder: str, package: str) -> list[str]:
    return sorted(
        f"{path.relative_to(ROOT)}: {module}"
        for path in (ROOT / folder).rglob("*.py")
        for module in imported_modules(path)
        if module == package or module.startswith(f"{package}.")
    )


def test_the_check_sees_imports_inside_functions(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("def run():\n    from tests.fixtures.commerce import stocked_product\n")

    assert "tests.fixtures.commerce" in imported_modules(script)


def test_bench_does_not_import_tests():
    assert imports_of("bench", "tests") == []


def test_testbed_imports_neither_tests_nor_bench():
    assert imports_of("testbed", "tests") + imports_of("testbed", "bench") == []


def test_bench_uses_the_testbed():
    assert imports_of("bench", "testbed") != []
