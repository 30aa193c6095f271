"""The layout shows the layers: HTTP views, routes and middleware live in web/, not in a
domain; schema/ and web/ do not reach into config/ (config wires them, not the reverse)."""

import ast
from pathlib import Path

from django.conf import settings

BASE = Path(settings.BASE_DIR)
TRANSPORT_MODULES = {"views.py", "urls.py", "middleware.py"}
# The stand-ins for the outside services are HTTP servers by nature (ARCHITECTURE, 8).
STAND_INS = "domains/sandbox/"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_domain_holds_http_transport():
    transport = [
        path.relative_to(BASE).as_posix()
        for path in sorted((BASE / "domains").rglob("*.py"))
        if path.name in TRANSPORT_MODULES
        and not path.relative_to(BASE).as_posix().startswith(STAND_INS)
    ]

    assert transport == [], "move it to web/"


def test_schema_and_web_do_not_import_config():
    reaching = [
        f"{path.relative_to(BASE).as_posix()} imports {name}"
        for source in ("schema", "web", "domains")
        for path in sorted((BASE / source).rglob("*.py"))
        for name in sorted(_imports(path))
        if name == "config" or name.startswith("config.")
    ]

    assert reaching == []
