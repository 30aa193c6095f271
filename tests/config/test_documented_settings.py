"""Every variable docs/configuration.md's table documents is read by the code."""

import re
from pathlib import Path

from django.conf import settings

CONFIGURATION = Path(settings.BASE_DIR) / "docs" / "configuration.md"
CONFIG = Path(settings.BASE_DIR) / "config"


def documented_variables() -> set[str]:
    """The variables named in the first column of docs/configuration.md's table.

    A row may abbreviate: `_BURST` after `X_PER_MINUTE` is `X_BURST`, and "(+ `_API_KEY`)"
    after `X_API_URL` or `X_BASE_URL` is `X_API_KEY`.
    """
    names: set[str] = set()
    for line in CONFIGURATION.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cell = line.split("|")[1]
        previous = ""
        for name in re.findall(r"`([A-Z_]+)`", cell):
            if name == "_BURST":
                names.add(previous.replace("_PER_MINUTE", "_BURST"))
            elif name == "_API_KEY":
                urls = re.findall(r"`([A-Z]+)_(?:API|BASE)_URL`", cell)
                names.update(f"{service}_API_KEY" for service in urls)
            else:
                names.add(name)
                previous = name
    return names


def test_the_table_is_parsed():
    names = documented_variables()

    assert {"WEB_CONCURRENCY", "THROTTLE_LOGIN_ACCOUNT_BURST", "CRM_API_KEY"} <= names
    assert len(names) > 80


def test_every_documented_variable_is_read_in_config():
    code = "\n".join(path.read_text() for path in CONFIG.rglob("*.py"))

    unread = sorted(name for name in documented_variables() if f'"{name}"' not in code)

    assert unread == []
