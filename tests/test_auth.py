"""Access control: 401/403/404 decisions, keys (shown once, hashed, listed, revoked), the admin
key from the environment and from the first start, --no-auth on loopback only, rate limits, and
logs that carry a request id but never a key or a vote."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.auth.bootstrap import KEY_FILE, is_loopback
from app.auth.ratelimit import RateLimiter
from app.config import Settings
from app.logging import JsonFormatter
from app.main import create_app
from tests.helpers import (
    ADMIN_HEADERS,
    ADMIN_KEY,
    REPO,
    LiveServer,
    db_rows,
    migrated_database,
)

CLASSES = ["cat", "dog"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def auth_settings(settings: Settings, **update: object) -> Settings:
    return settings.model_copy(
        update={"auth": True, "admin_key": ADMIN_KEY, "rate_limit_per_s": 0, **update}
    )


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[TestClient]:
    """The API with auth on; no key is sent unless a request names one."""
    with TestClient(create_app(auth_settings(settings))) as c:
        yield c


def make_project(api: TestClient) -> str:
    name = f"auth-{uuid.uuid4().hex[:10]}"
    r = api.post("/v1/projects", json={"name": name, "classes": CLASSES}, headers=ADMIN_HEADERS)
    assert r.status_code == 201, r.text
    return name


def make_key(api: TestClient, scopes: list[str], projects: list[str] | str) -> dict:
    body = {"label": f"test {scopes} {projects}", "scopes": scopes, "projects": projects}
    r = api.post("/v1/keys", json=body, headers=ADMIN_HEADERS)
    assert r.status_code == 201, r.text
    return r.json()


def make_job(database_url: str, project: str) -> int:
    """A training job row, already ended, so no worker ever takes it."""
    rows = db_rows(
        database_url,
        "INSERT INTO training_jobs (project_id, config, status, finished_at) "
        "SELECT id, '{}'::jsonb, 'cancelled', now() FROM projects WHERE name = %s RETURNING id",
        project,
    )
    return int(rows[0][0])


# --- 401 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer sl_not-a-real-key"},
        {"Authorization": f"Basic {ADMIN_KEY}"},
        {"Authorization": ADMIN_KEY},
        {"Authorization": f"Bearer {ADMIN_KEY}x"},
    ],
)
def test_no_valid_key_is_401(api: TestClient, headers: dict[str, str]) -> None:
    project = make_project(api)
    for method, path in [
        ("GET", "/v1/projects"),
        ("GET", f"/v1/projects/{project}"),
        ("POST", f"/v1/projects/{project}/votes"),
        ("GET", "/v1/keys"),
        ("GET", "/v1/training-jobs/1"),
    ]:
        r = api.request(method, path, headers=headers, json={"votes": []})
        assert r.status_code == 401, (method, path, r.text)
        assert r.json()["error"] == "unauthorized"
        assert r.headers["WWW-Authenticate"] == "Bearer"


def test_healthz_needs_no_key(api: TestClient) -> None:
    assert api.get("/healthz").status_code == 200


# --- keys: created once, listed without secret, stored as a hash, revoked -----------------------


def test_key_secret_is_shown_once_and_stored_as_hash(api: TestClient, database_url: str) -> None:
    project = make_project(api)
    created = make_key(api, ["read"], [project])
    secret = created["key"]
    assert secret.startswith("sl_") and len(secret) >= 3 + 43  # 256 random bits
    assert set(created) == {
        "id",
        "key",
        "label",
        "scopes",
        "projects",
        "rate_limit_per_s",
        "created_at",
    }
    assert (created["scopes"], created["projects"]) == (["read"], [project])

    listed = api.get("/v1/keys", headers=ADMIN_HEADERS)
    assert listed.status_code == 200
    assert secret not in listed.text and secret[3:] not in listed.text
    mine = [k for k in listed.json()["keys"] if k["id"] == created["id"]]
    assert mine and "key" not in mine[0] and mine[0]["label"] == created["label"]

    rows = db_rows(database_url, "SELECT * FROM api_keys WHERE id = %s", created["id"])
    assert secret not in repr(rows)
    (key_hash,) = db_rows(
        database_url, "SELECT key_hash FROM api_keys WHERE id = %s", created["id"]
    )[0]
    assert key_hash == hashlib.sha256(secret.encode()).hexdigest()

    assert api.get(f"/v1/projects/{project}", headers=bearer(secret)).status_code == 200
    assert make_key(api, ["read"], [project])["key"] != secret


def test_revoke_takes_effect_at_once(api: TestClient) -> None:
    project = make_project(api)
    key = make_key(api, ["annotate", "read"], "*")
    assert api.get(f"/v1/projects/{project}", headers=bearer(key["key"])).status_code == 200
    r = api.delete(f"/v1/keys/{key['id']}", headers=ADMIN_HEADERS)
    assert r.status_code == 204 and r.content == b""
    r = api.get(f"/v1/projects/{project}", headers=bearer(key["key"]))
    assert r.status_code == 401, r.text
    assert key["id"] not in [
        k["id"] for k in api.get("/v1/keys", headers=ADMIN_HEADERS).json()["keys"]
    ]
    again = api.delete(f"/v1/keys/{key['id']}", headers=ADMIN_HEADERS)
    assert again.status_code == 404 and again.json()["error"] == "not_found"


@pytest.mark.parametrize(
    "body",
    [
        {"label": "x", "scopes": ["admin"], "projects": ["a"]},  # admin is global
        {"label": "x", "scopes": ["write"], "projects": "*"},
        {"label": "x", "scopes": [], "projects": "*"},
        {"label": "x", "scopes": ["read"], "projects": []},
        {"label": "x", "scopes": ["read"], "projects": ["Not A Name"]},
        {"label": "", "scopes": ["read"], "projects": "*"},
        {"label": "x", "scopes": ["read"], "projects": "*", "key": "sl_mine"},  # no chosen keys
    ],
)
def test_bad_key_requests_are_422(api: TestClient, body: dict) -> None:
    r = api.post("/v1/keys", json=body, headers=ADMIN_HEADERS)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"


def test_admin_key_from_environment(settings: Settings) -> None:
    """SOFTLABELS_ADMIN_KEY is read by Settings and is an admin key; without it, it is not."""
    env_key = f"sl_env-{uuid.uuid4().hex}"
    os.environ["SOFTLABELS_ADMIN_KEY"] = env_key
    try:
        from_env = Settings(DATABASE_URL=settings.database_url, rate_limit_per_s=0)
    finally:
        del os.environ["SOFTLABELS_ADMIN_KEY"]
    assert from_env.admin_key is not None and env_key not in repr(from_env)
    with TestClient(create_app(from_env)) as c:
        r = c.post(
            "/v1/keys",
            json={"label": "by env admin", "scopes": ["read"], "projects": "*"},
            headers=bearer(env_key),
        )
        assert r.status_code == 201, r.text
        assert c.get("/v1/keys", headers=ADMIN_HEADERS).status_code == 401  # not this app's
    without = Settings(DATABASE_URL=settings.database_url)
    with TestClient(create_app(without)) as c:
        assert c.get("/v1/keys", headers=bearer(env_key)).status_code == 401


# --- 403 and not learning about other projects ---------------------------------------------------


def test_scope_outside_the_key_is_403(api: TestClient) -> None:
    project = make_project(api)
    vote = {"votes": [{"item": "i", "worker": "w", "label": "cat"}]}
    read = bearer(make_key(api, ["read"], [project])["key"])
    annotate = bearer(make_key(api, ["annotate"], [project])["key"])
    train = bearer(make_key(api, ["train"], [project])["key"])
    cases = [
        (read, "POST", f"/v1/projects/{project}/votes", vote),
        (read, "POST", "/v1/keys", {"label": "x", "scopes": ["read"], "projects": "*"}),
        (read, "GET", "/v1/keys", None),
        (read, "PATCH", f"/v1/projects/{project}", {"description": "x"}),
        (read, "POST", f"/v1/projects/{project}/training-jobs", {}),
        (annotate, "GET", f"/v1/projects/{project}/soft-labels", None),
        (annotate, "GET", f"/v1/projects/{project}", None),
        (train, "POST", f"/v1/projects/{project}/votes", vote),
        (read, "GET", "/v1/projects", None),  # spans every project: not for a one-project key
    ]
    for headers, method, path, body in cases:
        r = api.request(method, path, headers=headers, json=body)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"] == "forbidden"
    # ... while what the scopes allow goes through (train includes read).
    assert api.post(f"/v1/projects/{project}/votes", headers=annotate, json=vote).status_code == 200
    assert api.get(f"/v1/projects/{project}/items/i/soft-label", headers=read).status_code == 200
    assert api.get(f"/v1/projects/{project}/items/i/soft-label", headers=train).status_code == 200
    everything = bearer(make_key(api, ["read"], "*")["key"])
    assert api.get("/v1/projects", headers=everything).status_code == 200


def test_other_project_is_indistinguishable_from_a_missing_one(
    api: TestClient, database_url: str
) -> None:
    mine, other = make_project(api), make_project(api)
    other_job = make_job(database_url, other)
    missing_job = other_job + 1_000_000
    key = bearer(make_key(api, ["annotate", "train"], [mine])["key"])
    vote = {"votes": [{"item": "i", "worker": "w", "label": "cat"}]}

    def answer(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        r = api.request(method, path, headers=key, json=body)
        return r.status_code, r.json()

    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    for method, suffix, body in [
        ("GET", "", None),
        ("POST", "/votes", vote),
        ("POST", "/items", {"items": [{"id": "i"}]}),
        ("GET", "/soft-labels", None),
        ("GET", "/items/i/soft-label", None),
        ("GET", "/training-jobs", None),
        ("POST", "/training-jobs", {}),
    ]:
        status_b, body_b = answer(method, f"/v1/projects/{other}{suffix}", body)
        status_x, body_x = answer(method, f"/v1/projects/{ghost}{suffix}", body)
        assert status_b == status_x == 404, (suffix, body_b, body_x)
        assert body_b["error"] == body_x["error"] == "not_found"
        assert body_b["detail"].replace(other, ghost) == body_x["detail"]
    for method, suffix, body in [
        ("GET", "", None),
        ("POST", "/cancel", None),
        ("GET", "/model", None),
        ("POST", "/predict", {"features": [[1.0]]}),
    ]:
        status_b, body_b = answer(method, f"/v1/training-jobs/{other_job}{suffix}", body)
        status_x, body_x = answer(method, f"/v1/training-jobs/{missing_job}{suffix}", body)
        assert status_b == status_x == 404, (suffix, body_b, body_x)
        assert body_b["detail"].replace(str(other_job), str(missing_job)) == body_x["detail"]
    # The key's own job is answered (the job has ended: 409 for cancel, not 404).
    own_job = make_job(database_url, mine)
    assert answer("GET", f"/v1/training-jobs/{own_job}")[0] == 200
    assert answer("POST", f"/v1/training-jobs/{own_job}/cancel")[0] == 409


# --- rate limits -------------------------------------------------------------------------------


def test_rate_limit_is_429_with_retry_after(settings: Settings) -> None:
    limited = auth_settings(settings, rate_limit_per_s=0.5, rate_limit_burst=3)
    with TestClient(create_app(limited)) as c:
        one = bearer(make_key(c, ["read"], "*")["key"])
        other = bearer(make_key(c, ["read"], "*")["key"])
        codes = [c.get("/v1/projects", headers=one).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429], codes
        r = c.get("/v1/projects", headers=one)
        assert r.status_code == 429 and r.json()["error"] == "rate_limited"
        assert 1 <= int(r.headers["Retry-After"]) <= 2
        assert c.get("/v1/projects", headers=other).status_code == 200  # per key
        assert c.get("/healthz").status_code == 200


def test_token_bucket_refills() -> None:
    bucket = RateLimiter(per_s=20, burst=2)
    assert [bucket.wait_s("k") for _ in range(2)] == [0.0, 0.0]
    assert 0 < bucket.wait_s("k") <= 0.05
    time.sleep(0.06)
    assert bucket.wait_s("k") == 0.0
    assert RateLimiter(per_s=0, burst=1).wait_s("k") == 0.0  # 0: no limit


# --- --no-auth, and the first start --------------------------------------------------------------


@pytest.mark.slow
def test_no_auth_is_refused_off_loopback(settings: Settings) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("::")
    with pytest.raises(RuntimeError, match="no-auth"):
        create_app(settings.model_copy(update={"auth": False, "host": "0.0.0.0"}))
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--no-auth", "--host", "0.0.0.0"],
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "refused" in r.stderr


@pytest.fixture
def fresh_database(server_url: str) -> Iterator[str]:
    with migrated_database(server_url, prefix="softlabels_auth") as url:
        yield url


@pytest.mark.slow
def test_first_start_makes_an_admin_key_file(fresh_database: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k != "SOFTLABELS_ADMIN_KEY"}
    env.update(DATABASE_URL=fresh_database, SOFTLABELS_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    server = LiveServer(env, ["--no-worker"], tmp_path / "server.log", auth=True)
    try:
        server.start()
        key_file = data_dir / KEY_FILE
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        assert key.startswith("sl_")
        assert httpx.get(f"{server.url}/v1/keys", timeout=10).status_code == 401
        listed = httpx.get(f"{server.url}/v1/keys", headers=bearer(key), timeout=10)
        assert listed.status_code == 200 and len(listed.json()["keys"]) == 1, listed.text
        assert server.log.read_text().count(key) == 1  # printed once, at the first start

        # Votes and the request id: the log has neither the key again nor the vote.
        project = f"boot-{uuid.uuid4().hex[:8]}"
        secret_item, secret_worker = f"item-{uuid.uuid4().hex}", f"worker-{uuid.uuid4().hex}"
        r = httpx.post(
            f"{server.url}/v1/projects",
            json={"name": project, "classes": CLASSES},
            headers=bearer(key),
            timeout=10,
        )
        assert r.status_code == 201, r.text
        r = httpx.post(
            f"{server.url}/v1/projects/{project}/votes",
            json={"votes": [{"item": secret_item, "worker": secret_worker, "label": "dog"}]},
            headers={**bearer(key), "X-Request-ID": "trace-me-42"},
            timeout=10,
        )
        assert r.status_code == 200 and r.headers["X-Request-ID"] == "trace-me-42"

        # A restart finds a key: no new one, the file is untouched.
        server.stop()
        server.start()
        assert key_file.read_text().strip() == key
        assert len(httpx.get(f"{server.url}/v1/keys", headers=bearer(key)).json()["keys"]) == 1
        server.stop()
        log = server.log.read_text()
        assert log.count(key) == 1 and secret_item not in log and secret_worker not in log
        access = [json.loads(line) for line in log.splitlines() if '"softlabels.access"' in line]
        traced = [a for a in access if a.get("request_id") == "trace-me-42"]
        assert len(traced) == 1 and traced[0]["http"]["status"] == 200
        assert traced[0]["http"]["route"] == "/v1/projects/{project}/votes"
    finally:
        server.stop()


@pytest.mark.slow
def test_cli_keys_create_list_revoke(api: TestClient, database_url: str) -> None:
    project = make_project(api)
    env = {**os.environ, "DATABASE_URL": database_url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", "keys", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    made = cli("create", "--label", "cli tool", "--scope", "read", "--project", project)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("sl_") and secret not in made.stderr
    assert api.get(f"/v1/projects/{project}", headers=bearer(secret)).status_code == 200

    listed = cli("list")
    assert listed.returncode == 0 and "cli tool" in listed.stdout
    assert secret not in listed.stdout + listed.stderr

    key_id = next(
        k["id"]
        for k in api.get("/v1/keys", headers=ADMIN_HEADERS).json()["keys"]
        if k["label"] == "cli tool" and k["projects"] == [project]
    )
    assert cli("revoke", str(key_id)).returncode == 0
    deadline = time.monotonic() + 3  # the API's key cache: 1 s
    while api.get(f"/v1/projects/{project}", headers=bearer(secret)).status_code != 401:
        assert time.monotonic() < deadline, "a revoked key still works after 3 s"
        time.sleep(0.1)
    assert cli("revoke", str(key_id)).returncode == 1
    bad = cli("create", "--label", "x", "--scope", "admin", "--project", project)
    assert bad.returncode == 2 and "admin" in bad.stderr


# --- logs ----------------------------------------------------------------------------------------


def test_logs_carry_request_id_but_no_key_or_vote(
    api: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    project = make_project(api)
    key = make_key(api, ["annotate", "read"], [project])["key"]
    item, worker = f"item-{uuid.uuid4().hex}", f"worker-{uuid.uuid4().hex}"
    with caplog.at_level(logging.INFO):
        r = api.post(
            f"/v1/projects/{project}/votes",
            json={"votes": [{"item": item, "worker": worker, "label": "cat"}]},
            headers=bearer(key),
        )
        assert r.status_code == 200
        bad = api.get(f"/v1/projects/{project}", headers=bearer(key + "x"))
        assert bad.status_code == 401
    rid = r.headers["X-Request-ID"]
    assert len(rid) >= 16 and bad.headers["X-Request-ID"] != rid
    lines = [JsonFormatter().format(rec) for rec in caplog.records]
    text = "\n".join(lines) + caplog.text
    for secret in (key, key[3:], ADMIN_KEY, item, worker):
        assert secret not in text
    mine = [json.loads(line) for line in lines if rid in line]
    assert len(mine) == 1 and mine[0]["http"]["status"] == 200 and mine[0]["http"]["key_id"]
    # A client's own request id is echoed; a hostile one is replaced.
    assert api.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == (
        "abc-123"
    )
    hostile = api.get("/healthz", headers={"X-Request-ID": "a b!"}).headers["X-Request-ID"]
    assert hostile != "a b!" and len(hostile) == 32
