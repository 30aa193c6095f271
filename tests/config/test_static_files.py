"""The app serves its own static files (WhiteNoise): the admin is styled and GraphiQL
loads, from a real uvicorn server, in development and with DEBUG off."""

import re
import subprocess
import sys

import httpx
import pytest
from django.conf import settings

from testbed.stack import Server, process_env

pytestmark = pytest.mark.e2e

_ASSET = re.compile(r'(?:href|src)="([^"]+)"')


def _assets(page: httpx.Response) -> list[str]:
    assert page.status_code == 200, page.text[:500]
    return [url for url in _ASSET.findall(page.text) if not url.startswith(("data:", "#"))]


def test_the_admin_and_graphiql_assets_are_served_in_development(live):
    base = live.server.url
    admin_css = [u for u in _assets(httpx.get(f"{base}/admin/login/")) if u.endswith(".css")]
    graphiql = _assets(httpx.get(f"{base}/graphql/", headers={"Accept": "text/html"}))
    console = _assets(httpx.get(f"{base}/console/"))

    assert "/static/admin/css/base.css" in admin_css
    assert graphiql, "the GraphiQL page references no assets"
    assert console == ["/static/console/console.css", "/static/console/console.js"]
    for url in admin_css + graphiql + console:
        assert url.startswith("/static/"), f"{url} is not served by this project"
        response = httpx.get(f"{base}{url}")
        assert response.status_code == 200, url
        assert response.headers["content-type"].split(";")[0] in {
            "text/css",
            "text/javascript",
        }


@pytest.fixture(scope="module")
def production_server(django_db_setup, tmp_path_factory):
    """A DEBUG=0 server on the files `collectstatic` wrote (as runstack does on start)."""
    env = {
        "DEBUG": "0",
        "SECRET_KEY": "test-only-production-key",
        "ALLOWED_HOSTS": "127.0.0.1",
        "GRAPHQL_GRAPHIQL": "1",
        "STATIC_ROOT": str(tmp_path_factory.mktemp("static")),
    }
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        env=process_env(**env),
        cwd=settings.BASE_DIR,
        check=True,
    )
    server = Server(**env)
    yield server
    server.stop()


def test_with_debug_off_assets_are_hashed_compressed_and_cached_for_ever(production_server):
    base = production_server.url
    admin_css = [u for u in _assets(httpx.get(f"{base}/admin/login/")) if u.endswith(".css")]
    graphiql = _assets(httpx.get(f"{base}/graphql/", headers={"Accept": "text/html"}))

    assert any(re.fullmatch(r"/static/admin/css/base\.[0-9a-f]{12}\.css", u) for u in admin_css)
    for url in admin_css + graphiql:
        response = httpx.get(f"{base}{url}", headers={"Accept-Encoding": "gzip"})
        assert response.status_code == 200, url
        assert "immutable" in response.headers["cache-control"], url
    bundle = next(u for u in graphiql if "graphiql.min." in u and u.endswith(".js"))
    compressed = httpx.get(f"{base}{bundle}", headers={"Accept-Encoding": "gzip"})
    assert compressed.headers["content-encoding"] == "gzip"


def test_with_debug_off_the_consoles_modules_import_their_hashed_siblings(production_server):
    base = production_server.url
    console = _assets(httpx.get(f"{base}/console/"))
    main = next(u for u in console if u.endswith(".js"))

    assert re.fullmatch(r"/static/console/console\.[0-9a-f]{12}\.js", main)
    imported = re.findall(r'from "\./([^"]+)"', httpx.get(f"{base}{main}").text)
    assert [re.sub(r"\.[0-9a-f]{12}\.js$", ".js", i) for i in sorted(imported)] == [
        "api.js",
        "charts.js",
        "webhooks.js",
    ]
    for name in imported:
        response = httpx.get(f"{base}/static/console/{name}")
        assert response.status_code == 200, name
        assert "immutable" in response.headers["cache-control"], name
