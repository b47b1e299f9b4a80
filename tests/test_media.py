"""Fetching the images items name by URL (app/training/media.py, app/connectors/media.py):
several at once, under the network policy, Label Studio paths with the connector's token and
that token sent nowhere else. The servers are threads on loopback, which the test session's
policy allows (tests/conftest.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from app.connectors.media import resolver_for
from app.db.session import make_engine
from app.outbound import Policy
from app.training.media import MediaError, direct, fetch_all
from tests.test_item_content import png

TOKEN = "secret-token"  # a legacy Label Studio token: sent as "Token <key>"


class Server:
    """A tiny HTTP server in a thread; records the Authorization header of each request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                auth = self.headers.get("Authorization")
                outer.seen.append((self.path, auth))
                if self.path.startswith("/data/upload/") and auth != f"Token {TOKEN}":
                    self._reply(401, b"no")
                elif self.path.endswith(".png"):
                    self._reply(200, png(rgb=(len(self.path), 0, 0)))
                elif self.path == "/page":
                    self._reply(200, b"<html>not an image</html>")
                else:
                    self._reply(404, b"missing")

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def test_urls_are_fetched_in_order_with_progress(server: Server) -> None:
    urls = [(f"{server.url}/img{i}.png", None) for i in range(12)]
    seen: list[tuple[int, int]] = []
    got = fetch_all(urls, direct, progress=lambda d, t: seen.append((d, t)), threads=4)
    assert got == [png(rgb=(len(f"/img{i}.png"), 0, 0)) for i in range(12)]
    assert seen[-1] == (12, 12) and len(seen) == 12


def test_failures_fail_the_call_in_one_line(server: Server) -> None:
    urls = [
        (f"{server.url}/ok.png", None),
        (f"{server.url}/gone", None),
        (f"{server.url}/page", None),
    ]
    with pytest.raises(MediaError) as info:
        fetch_all(urls, direct, names=["a", "b", "c"])
    msg = str(info.value)
    assert msg == (
        "2 of 3 images could not be fetched; the first, item 'b': the server answered HTTP 404"
    )
    with pytest.raises(MediaError, match="not a PNG, JPEG"):
        fetch_all([(f"{server.url}/page", None)])
    with pytest.raises(MediaError, match="address policy refuses"):  # loopback, by default
        fetch_all([(f"{server.url}/ok.png", None)], policy=Policy())
    with pytest.raises(MediaError, match="no connector resolves it"):
        fetch_all([("/data/upload/1/x.png", "label-studio")])


def test_label_studio_paths_use_the_connector_and_its_token_only_there(
    client: TestClient, project: str, database_url: str, server: Server
) -> None:
    other = Server()  # another origin: must never see the token
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            project_id = conn.exec_driver_sql(
                "SELECT id FROM projects WHERE name = %s", (project,)
            ).scalar_one()
            with pytest.raises(MediaError, match="connector has no url"):
                resolver_for(conn, project_id)("/data/upload/1/x.png", "label-studio")
        config = {"from_name": "choice", "url": server.url, "token": TOKEN}
        r = client.put(f"/v1/projects/{project}/connectors/label-studio", json=config)
        assert r.status_code == 200, r.text
        with engine.connect() as conn:
            resolve = resolver_for(conn, project_id)
        urls = [
            ("/data/upload/1/x.png", "label-studio"),
            (f"{server.url}/data/upload/2/y.png", "label-studio"),  # absolute, same origin
            (f"{other.url}/data/upload/3/z.png", "label-studio"),  # another origin
            (f"{server.url}/plain.png", None),  # stored by the API: no connector's
        ]
        with pytest.raises(MediaError, match="item 'z': the server answered HTTP 401"):
            fetch_all(urls, resolve, names=["x", "y", "z", "p"])
        assert sorted(server.seen) == [
            ("/data/upload/1/x.png", f"Token {TOKEN}"),
            ("/data/upload/2/y.png", f"Token {TOKEN}"),
            ("/plain.png", None),
        ]
        assert other.seen == [("/data/upload/3/z.png", None)]
    finally:
        other.close()
        engine.dispose()
