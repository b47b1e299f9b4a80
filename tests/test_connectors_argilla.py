"""Argilla v2 connector over HTTP: Standard Webhooks signatures (good, bad, stale), response
created / updated / discarded / deleted, redelivery, unknown label, unmapped question.
The event fixture (tests/fixtures/argilla) follows argilla-server's ResponseEventSchema."""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.webhooks.signing import new_secret, sign
from tests.helpers import assert_counts_recount, db_rows, version

FIXTURES = Path(__file__).parent / "fixtures" / "argilla"
EVENT = json.loads((FIXTURES / "response.created.json").read_text())
ANN = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
def ar_project(client: TestClient, secret: str) -> str:
    name = f"ar-{uuid.uuid4().hex[:10]}"
    r = client.post("/v1/projects", json={"name": name, "classes": ["pos", "neg", "neu"]})
    assert r.status_code == 201
    r = client.put(
        f"/v1/projects/{name}/connectors/argilla", json={"question": "sentiment", "secret": secret}
    )
    assert r.status_code == 200, r.text
    assert secret not in r.text
    return name


def deliver(
    client: TestClient,
    project: str,
    secret: str,
    event: dict[str, Any],
    *,
    msg_id: str | None = None,
    ts: int | None = None,
    key: bool = False,
) -> Any:
    """POST as Argilla does: no Authorization header, a Standard Webhooks signature."""
    raw = json.dumps(event).encode()
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    ts = int(time.time()) if ts is None else ts
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, raw),
        "Content-Type": "application/json",
    }
    if not key:
        headers["Authorization"] = ""
    return client.post(
        f"/v1/projects/{project}/connectors/argilla/events", content=raw, headers=headers
    )


def stored(database_url: str, project: str) -> set[tuple[str, str, str, str]]:
    rows = db_rows(
        database_url,
        "SELECT i.external_id, w.external_id, (p.classes)[v.label + 1], v.tool_ref FROM votes v "
        "JOIN items i ON i.id = v.item_id JOIN workers w ON w.id = v.worker_id "
        "JOIN projects p ON p.id = v.project_id WHERE p.name = %s",
        project,
    )
    return {tuple(r) for r in rows}  # type: ignore[misc]


def event(kind: str = "response.created", **data: Any) -> dict[str, Any]:
    e = copy.deepcopy(EVENT)
    e["type"] = kind
    e["data"].update(data)
    return e


def test_created_updated_discarded_deleted(
    client: TestClient, ar_project: str, secret: str, database_url: str
) -> None:
    rid = EVENT["data"]["id"]
    r = deliver(client, ar_project, secret, event())
    assert r.status_code == 200 and r.json()["inserted"] == 1, r.text
    assert stored(database_url, ar_project) == {("item-1", ANN, "pos", rid)}
    # Redelivered (Argilla retries up to 3 times): nothing changes.
    v = version(database_url, ar_project)
    r = deliver(client, ar_project, secret, event())
    assert r.json()["unchanged"] == 1 and version(database_url, ar_project) == v
    r = deliver(
        client,
        ar_project,
        secret,
        event("response.updated", values={"sentiment": {"value": "neg"}}),
    )
    assert r.json()["updated"] == 1
    assert_counts_recount(database_url, ar_project)
    # A draft or discarded response is not a vote: the stored one goes.
    r = deliver(client, ar_project, secret, event("response.updated", status="discarded"))
    assert r.json()["deleted"] == 1 and r.json()["skipped"] == 1
    assert stored(database_url, ar_project) == set()
    deliver(client, ar_project, secret, event())
    r = deliver(
        client,
        ar_project,
        secret,
        {
            "type": "response.deleted",
            "version": 1,
            "timestamp": "2026-11-30T06:01:00",
            "data": {"id": rid},
        },
    )
    assert r.status_code == 200 and r.json()["deleted"] == 1
    assert stored(database_url, ar_project) == set()
    assert_counts_recount(database_url, ar_project)
    # A deleted record takes its responses' votes with it.
    deliver(client, ar_project, secret, event())
    record = EVENT["data"]["record"]
    r = deliver(
        client,
        ar_project,
        secret,
        {
            "type": "record.deleted",
            "version": 1,
            "timestamp": "2026-11-30T06:02:00",
            "data": {k: v for k, v in record.items()},
        },
    )
    assert r.json()["deleted"] == 1 and stored(database_url, ar_project) == set()
    # Other events are acknowledged and ignored.
    r = deliver(client, ar_project, secret, {"type": "dataset.updated", "data": {}})
    assert r.json()["ignored"] is True


def test_record_without_external_id_uses_its_id(
    client: TestClient, ar_project: str, secret: str, database_url: str
) -> None:
    e = event()
    e["data"]["record"]["external_id"] = None
    deliver(client, ar_project, secret, e)
    assert {s[0] for s in stored(database_url, ar_project)} == {e["data"]["record"]["id"]}


def test_bad_and_stale_signatures(
    client: TestClient, ar_project: str, secret: str, database_url: str
) -> None:
    r = deliver(client, ar_project, new_secret(), event())  # another secret
    assert r.status_code == 401 and "does not verify" in r.json()["detail"]
    r = deliver(client, ar_project, secret, event(), ts=int(time.time()) - 3600)
    assert r.status_code == 401 and "stale" in r.json()["detail"]
    # Tampered body: signed one thing, sent another.
    raw = json.dumps(event()).encode()
    ts = int(time.time())
    r = client.post(
        f"/v1/projects/{ar_project}/connectors/argilla/events",
        content=raw.replace(b'"pos"', b'"neg"'),
        headers={
            "webhook-id": "m1",
            "webhook-timestamp": str(ts),
            "webhook-signature": sign(secret, "m1", ts, raw),
            "Authorization": "",
        },
    )
    assert r.status_code == 401
    # No key and no signature: 401 as everywhere.
    r = client.post(
        f"/v1/projects/{ar_project}/connectors/argilla/events",
        json=event(),
        headers={"Authorization": ""},
    )
    assert r.status_code == 401
    # A key does not replace the signature for Argilla.
    r = client.post(f"/v1/projects/{ar_project}/connectors/argilla/events", json=event())
    assert r.status_code == 401
    assert stored(database_url, ar_project) == set()
    # A key and a good signature: fine.
    assert deliver(client, ar_project, secret, event(), key=True).status_code == 200


def test_unknown_label_and_unmapped_question(
    client: TestClient, ar_project: str, secret: str, database_url: str
) -> None:
    r = deliver(client, ar_project, secret, event(values={"sentiment": {"value": "meh"}}))
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "data.values.sentiment.value"
    r = deliver(client, ar_project, secret, event(values={"topic": {"value": "pos"}}))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "data.values.sentiment"
    assert stored(database_url, ar_project) == set()


def test_records_file_import(client: TestClient, ar_project: str, database_url: str) -> None:
    raw = (FIXTURES / "records.json").read_bytes()
    r = client.post(
        f"/v1/projects/{ar_project}/imports/argilla",
        params={"question": "sentiment"},
        content=raw,
    )
    assert r.status_code == 200, r.text
    assert r.json()["inserted"] == 3 and r.json()["rows"] == 3
    got = {(i, w, lab) for i, w, lab, _ in stored(database_url, ar_project)}
    assert ("item-1", ANN, "pos") in got
    assert ("b4d3d5b1-2a8f-4d4a-9b64-6a2a7c2b8e21", ANN, "neg") in got
    assert_counts_recount(database_url, ar_project)


def signed(secret: str, raw: bytes, msg_id: str = "m-probe") -> dict[str, str]:
    ts = int(time.time())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, raw),
        "Authorization": "",
    }


def test_without_a_key_unknown_project_connector_and_signature_look_the_same(
    client: TestClient, ar_project: str, secret: str
) -> None:
    """A probe without a key learns nothing about which projects exist or have a connector."""
    raw = json.dumps(event()).encode()
    other = f"ls-{uuid.uuid4().hex[:8]}"
    assert (
        client.post("/v1/projects", json={"name": other, "classes": ["a", "b"]}).status_code == 201
    )
    answers = [
        client.post(f"/v1/projects/{p}/connectors/argilla/events", content=raw, headers=h)
        for p, h in [
            ("no-such-project", signed(secret, raw)),  # unknown project
            (other, signed(secret, raw)),  # project without an Argilla connector
            (ar_project, signed(new_secret(), raw)),  # wrong secret
        ]
    ]
    assert [r.status_code for r in answers] == [401, 401, 401]
    assert len({r.text for r in answers}) == 1, [r.text for r in answers]
    assert answers[0].json()["error"] == "unauthorized"


def test_without_a_key_a_large_body_is_refused_before_it_is_read(
    client: TestClient, ar_project: str, secret: str
) -> None:
    raw = b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    r = client.post(
        f"/v1/projects/{ar_project}/connectors/argilla/events",
        content=raw,
        headers=signed(secret, raw),
    )
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    # To an unknown project the same body is the same 401 as any probe, not a 413.
    r = client.post(
        "/v1/projects/nope/connectors/argilla/events", content=raw, headers=signed(secret, raw)
    )
    assert r.status_code == 401


def test_without_a_key_webhooks_are_rate_limited(settings: Any) -> None:
    from app.main import create_app

    limited = settings.model_copy(update={"rate_limit_per_s": 1, "rate_limit_burst": 2})
    with TestClient(create_app(limited)) as c:
        codes = [
            c.post(
                "/v1/projects/nope/connectors/argilla/events",
                content=b"{}",
                headers=signed(new_secret(), b"{}"),
            ).status_code
            for _ in range(6)
        ]
    assert 429 in codes and set(codes) <= {401, 429}, codes


def test_a_replayed_event_changes_nothing(
    client: TestClient, ar_project: str, secret: str, database_url: str
) -> None:
    """The same message id within the tolerance window: a deleted vote stays deleted."""
    created = json.dumps(event()).encode()
    replay_headers = signed(secret, created, msg_id=f"msg_{uuid.uuid4().hex}")
    url = f"/v1/projects/{ar_project}/connectors/argilla/events"
    r = client.post(url, content=created, headers=replay_headers)
    assert r.status_code == 200 and r.json()["inserted"] == 1, r.text
    rid = EVENT["data"]["id"]
    gone = {"type": "response.deleted", "version": 1, "timestamp": "t", "data": {"id": rid}}
    assert deliver(client, ar_project, secret, gone).json()["deleted"] == 1
    v = version(database_url, ar_project)
    r = client.post(url, content=created, headers=replay_headers)  # captured and replayed
    assert r.status_code == 200, r.text
    assert r.json()["ignored"] is True and r.json()["action"] == "replayed"
    assert stored(database_url, ar_project) == set()
    assert version(database_url, ar_project) == v
    # A new message (a real redelivery has its own id... or the same: either way idempotent).
    r = deliver(client, ar_project, secret, event())
    assert r.json()["inserted"] == 1
