"""The dashboard's pages and the offline API docs, without a browser (tests/test_ui_browser.py
drives them in Chromium)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from app.ui import PAGES


def test_root_redirects_to_the_dashboard(client: TestClient) -> None:
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/ui/"


@pytest.mark.parametrize("name", list(PAGES))
def test_pages_need_no_key_and_load_only_local_assets(client: TestClient, name: str) -> None:
    r = client.get(f"/ui/{name}", headers={"Authorization": ""})  # no key: the shell only
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "connect-src 'self'" in csp and "default-src 'self'" in csp
    assert "unsafe-inline" not in csp
    refs = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert refs and all(u == "#" or (u[0] == "/" and u[:2] != "//") for u in refs), refs
    for u in refs:
        if u.startswith("/ui/static/"):
            assert client.get(u).status_code == 200, u


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_use_packaged_assets(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", r.text)
    assert urls and not [u for u in urls if re.match(r"(https?:)?//", u)], urls
    assert "fonts.googleapis" not in r.text and "cdn.jsdelivr" not in r.text
    for u in urls:
        if u.startswith("/ui/static/"):
            assert client.get(u).status_code == 200, u
    assert client.get("/openapi.json").status_code == 200


def test_vendored_assets_ship_with_their_licences(client: TestClient) -> None:
    for path in [
        "vendor/swagger-ui/LICENSE",
        "vendor/swagger-ui/swagger-ui-bundle.js",
        "vendor/redoc/LICENSE",
        "vendor/redoc/redoc.standalone.js",
    ]:
        assert client.get(f"/ui/static/{path}").status_code == 200
    js = client.get("/ui/static/vendor/redoc/redoc.standalone.js").text
    assert "cdn.redoc.ly" not in js  # see app/ui/static/vendor/README.md


def test_pages_are_not_api_routes(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert not [p for p in schema["paths"] if p.startswith("/ui") or p in ("/", "/docs")]
    assert "/v1/projects/{project}/items/{item}" in schema["paths"]
