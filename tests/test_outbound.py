"""The address policy (app/outbound.py) over real HTTP servers on loopback: refused by default,
allowed by SOFTLABELS_ALLOWED_NETWORKS, checked again on every redirect; credentials never go to
another origin; one deadline and a size cap; errors that do not echo the remote. And the two
callers: the Label Studio sync and webhook deliveries (creation and delivery)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

import app.webhooks.deliver as webhooks
from app import outbound
from app.config import Settings
from app.main import create_app
from app.outbound import AddressRefused, OutboundError, Policy, parse_networks
from tests.helpers import ADMIN_HEADERS, ADMIN_KEY

LOOPBACK = Policy(allowed=parse_networks("127.0.0.0/8,::1/128"))
SECRET_BODY = b"INTERNAL-SECRET-CONTENT"

Route = Callable[[BaseHTTPRequestHandler], None]


class Server:
    """A loopback HTTP server whose answer each test sets; it records what it received."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.hits: list[dict[str, Any]] = []
        self.route: Route = lambda h: reply(h, 200, b'{"ok": true}')
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                srv.hits.append({"path": self.path, "headers": dict(self.headers), "body": body})
                srv.route(self)

            do_GET = do_POST = _any

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def reply(h: BaseHTTPRequestHandler, code: int, body: bytes, **headers: str) -> None:
    h.send_response(code)
    for k, v in headers.items():
        h.send_header(k.replace("_", "-"), v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture
def other() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


# --- the policy --------------------------------------------------------------------------------


def test_default_policy_refuses_loopback_in_every_spelling(server: Server) -> None:
    port = server.server.server_address[1]
    for url in (
        server.url,
        f"http://localhost:{port}/",
        f"http://2130706433:{port}/",
        f"http://0x7f.1:{port}/",
        f"http://0.0.0.0:{port}/",
        f"http://[::ffff:127.0.0.1]:{port}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
    ):
        with pytest.raises(AddressRefused, match="SOFTLABELS_ALLOWED_NETWORKS"):
            outbound.request("GET", url, policy=Policy())
    assert server.hits == []  # nothing reached it


def test_only_http_and_https(server: Server) -> None:
    for url in ("ftp://127.0.0.1/x", "file:///etc/passwd", "gopher://127.0.0.1/"):
        with pytest.raises(AddressRefused, match="only http and https"):
            outbound.request("GET", url, policy=LOOPBACK)


def test_allowed_networks_let_loopback_through(server: Server) -> None:
    got = outbound.request("GET", f"{server.url}/x", policy=LOOPBACK)
    assert got.status == 200 and got.body == b'{"ok": true}'
    port = server.server.server_address[1]
    assert outbound.request("GET", f"http://localhost:{port}/", policy=LOOPBACK).status == 200


def test_every_redirect_is_checked_again(server: Server, other: Server) -> None:
    # Only 127.0.0.1 is allowed; a redirect to another loopback address must be refused.
    only_one = Policy(allowed=parse_networks("127.0.0.1/32"))
    port = other.server.server_address[1]
    server.route = lambda h: reply(h, 302, b"", Location=f"http://127.0.0.2:{port}/")
    with pytest.raises(AddressRefused):
        outbound.request("GET", server.url, policy=only_one)
    server.route = lambda h: reply(h, 307, b"", Location="ftp://127.0.0.1/")
    with pytest.raises(AddressRefused, match="only http and https"):
        outbound.request("GET", server.url, policy=LOOPBACK)
    assert other.hits == []


def test_credentials_never_go_to_another_origin(server: Server, other: Server) -> None:
    server.route = lambda h: reply(h, 302, b"", Location=f"{other.url}/landing")
    got = outbound.request(
        "GET",
        f"{server.url}/api",
        headers={"Authorization": "Token ls-secret", "Cookie": "s=1", "X-Other": "kept"},
        policy=LOOPBACK,
    )
    assert got.status == 200
    assert server.hits[0]["headers"]["Authorization"] == "Token ls-secret"
    landed = other.hits[0]["headers"]
    assert "Authorization" not in landed and "Cookie" not in landed
    assert landed["X-Other"] == "kept"
    # The same origin keeps them.
    server.hits.clear()
    server.route = lambda h: (
        reply(h, 302, b"", Location="/second") if h.path == "/first" else reply(h, 200, b"{}")
    )
    outbound.request(
        "GET", f"{server.url}/first", headers={"Authorization": "Token t"}, policy=LOOPBACK
    )
    assert [hit["headers"].get("Authorization") for hit in server.hits] == ["Token t"] * 2


def test_reply_size_is_capped(server: Server) -> None:
    big = b"x" * (3 * 1024 * 1024)
    server.route = lambda h: reply(h, 200, big)
    with pytest.raises(OutboundError, match="byte limit"):
        outbound.request("GET", server.url, policy=LOOPBACK, max_bytes=1024 * 1024)
    got = outbound.request("GET", server.url, policy=LOOPBACK, max_bytes=1024, truncate=True)
    assert len(got.body) <= 64 * 1024  # cut short, not read whole


def test_a_dripping_server_is_cut_at_the_deadline(server: Server) -> None:
    def drip(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        try:
            for _ in range(1000):
                h.wfile.write(b"x")
                h.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    server.route = drip
    start = time.monotonic()
    with pytest.raises(OutboundError, match="deadline"):
        outbound.request("GET", server.url, policy=LOOPBACK, deadline_s=1.5)
    assert time.monotonic() - start < 3.5


# --- the Label Studio sync ---------------------------------------------------------------------


@pytest.fixture
def strict_client(settings: Settings) -> Iterator[TestClient]:
    """The app with the default policy: no allowed networks."""
    update = {"auth": True, "admin_key": ADMIN_KEY, "rate_limit_per_s": 0, "allowed_networks": ""}
    with TestClient(create_app(settings.model_copy(update=update)), headers=ADMIN_HEADERS) as c:
        yield c


def new_project(client: TestClient) -> str:
    name = f"ob-{uuid.uuid4().hex[:10]}"
    r = client.post("/v1/projects", json={"name": name, "classes": ["pos", "neg"]})
    assert r.status_code == 201, r.text
    return name


def ls_config(url: str) -> dict[str, Any]:
    return {"from_name": "sentiment", "url": url, "ls_project": 1, "token": "legacy-secret"}


def test_label_studio_url_on_loopback_is_refused_by_default(
    strict_client: TestClient, server: Server
) -> None:
    p = new_project(strict_client)
    for url in (server.url, "http://localhost:8080", "http://2130706433/", "http://0.0.0.0/"):
        r = strict_client.put(f"/v1/projects/{p}/connectors/label-studio", json=ls_config(url))
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == "url"
        assert "SOFTLABELS_ALLOWED_NETWORKS" in r.json()["detail"]
    assert server.hits == []


def test_label_studio_sync_errors_do_not_echo_the_remote(
    client: TestClient, server: Server
) -> None:
    p = new_project(client)
    url = f"/v1/projects/{p}/connectors/label-studio"
    assert client.put(url, json=ls_config(server.url)).status_code == 200
    server.route = lambda h: reply(h, 403, SECRET_BODY)
    r = client.post(f"{url}/sync")
    assert r.status_code == 502 and r.json()["error"] == "tool_unreachable"
    assert "403" in r.json()["detail"]
    for leak in ("INTERNAL-SECRET", "/api/projects", "legacy-secret"):
        assert leak not in r.text
    server.route = lambda h: reply(h, 200, SECRET_BODY)  # not JSON
    r = client.post(f"{url}/sync")
    assert r.status_code == 502 and "INTERNAL-SECRET" not in r.text


def test_label_studio_token_does_not_follow_a_redirect_elsewhere(
    client: TestClient, server: Server, other: Server
) -> None:
    p = new_project(client)
    url = f"/v1/projects/{p}/connectors/label-studio"
    assert client.put(url, json=ls_config(server.url)).status_code == 200
    server.route = lambda h: reply(h, 302, b"", Location=f"{other.url}/steal")
    other.route = lambda h: reply(h, 200, b"[]")
    client.post(f"{url}/sync")
    assert server.hits and server.hits[0]["headers"]["Authorization"] == "Token legacy-secret"
    assert other.hits and "Authorization" not in other.hits[0]["headers"]


# --- webhook deliveries ------------------------------------------------------------------------


def test_webhook_subscription_to_an_internal_address_is_refused(
    strict_client: TestClient,
) -> None:
    p = new_project(strict_client)
    for target in ("http://127.0.0.1:9/hook", "http://169.254.169.254/", "http://[::1]/"):
        r = strict_client.post(
            f"/v1/projects/{p}/webhooks", json={"url": target, "events": ["training_job.finished"]}
        )
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == "url"


def test_webhook_delivery_checks_the_policy_and_redirects(server: Server, other: Server) -> None:
    status, error = webhooks._post(server.url, {"X": "1"}, b"{}", policy=Policy())
    assert status is None and error is not None and "address policy" in error
    assert server.hits == []
    # A receiver that redirects to an internal address is refused there, not followed.
    only_one = Policy(allowed=parse_networks("127.0.0.1/32"))
    port = other.server.server_address[1]
    server.route = lambda h: reply(h, 307, b"", Location=f"http://127.0.0.2:{port}/")
    status, error = webhooks._post(server.url, {}, b"{}", policy=only_one)
    assert status is None and error is not None and "address policy" in error
    assert other.hits == []
    # The log says what failed, not what the receiver said.
    server.route = lambda h: reply(h, 401, SECRET_BODY)
    status, error = webhooks._post(server.url, {}, b"{}", policy=LOOPBACK)
    assert (status, error) == (401, "HTTP 401")
