"""No 5xx from client input: each input that once raised inside the service answers 4xx in the one
error shape, and property-based tests (hypothesis) over cursors, features, labels, webhook
timestamps and imports keep it so. Real PostgreSQL, the app over HTTP (TestClient)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.webhooks.signing import new_secret, sign

ONE_SHAPE = {"error", "detail"}
PROPERTY = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def assert_4xx(r: Any) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:500])
    body = r.json()
    assert body.keys() >= ONE_SHAPE, body


def cursor(data: Any) -> str:
    raw = data if isinstance(data, str) else json.dumps(data)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.fixture
def voted(client: TestClient, project: str) -> str:
    votes = [{"item": f"i{i:02d}", "worker": f"w{i % 3}", "label": i % 3} for i in range(30)]
    assert client.post(f"/v1/projects/{project}/votes", json={"votes": votes}).status_code == 200
    return project


def real_cursor(client: TestClient, project: str, sort: str) -> dict[str, Any]:
    r = client.get(f"/v1/projects/{project}/items", params={"sort": sort, "limit": 2})
    assert r.status_code == 200, r.text
    raw = r.json()["next_cursor"]
    return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))


@pytest.mark.parametrize(
    ("sort", "edit"),
    [
        ("entropy", {"o": 1e400}),
        ("entropy", {"o": True}),
        ("entropy", {"o": -1}),
        ("entropy", {"f": [[1], {}]}),
        ("votes", {"t": "Infinity"}),
        ("votes", {"k": [4, True]}),
        ("votes", {"k": [2**70, 1]}),
        ("item", {"k": [None]}),
        ("item", {"t": 1e400}),
    ],
)
def test_edited_cursor_is_a_422(client: TestClient, voted: str, sort: str, edit: dict) -> None:
    data = real_cursor(client, voted, sort) | edit
    raw = json.dumps(data).replace('"Infinity"', "Infinity")  # JSON's out-of-spec constant
    r = client.get(f"/v1/projects/{voted}/items", params={"sort": sort, "cursor": cursor(raw)})
    assert_4xx(r)


@given(
    data=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(), c, max_size=3),
        max_leaves=6,
    ),
    sort=st.sampled_from(["entropy", "votes", "item"]),
)
@PROPERTY
def test_any_cursor_is_never_a_5xx(client: TestClient, voted: str, data: Any, sort: str) -> None:
    real = real_cursor(client, voted, sort)
    edited = real | ({k: data for k in ("o", "k", "t", "f")} if data is not None else {})
    for c in (cursor(edited), cursor(json.dumps(edited, allow_nan=True)), cursor(str(data))):
        r = client.get(f"/v1/projects/{voted}/items", params={"sort": sort, "cursor": c})
        assert r.status_code < 500, r.text


@pytest.mark.parametrize("value", [1e300, -1e39, 1e-50, 5e-45, 3.4e38])
def test_features_out_of_float32_range(client: TestClient, project: str, value: float) -> None:
    r = client.post(
        f"/v1/projects/{project}/items", json={"items": [{"id": "x", "features": [value, 1.0]}]}
    )
    if abs(value) > 3.5e38:
        assert_4xx(r)
        assert r.json()["errors"][0]["index"] == 0
        return
    assert r.status_code == 200, r.text  # stored as the 32-bit float it rounds to
    stored = client.get(f"/v1/projects/{project}/items/x").json()["features"][0]
    assert stored == pytest.approx(value, rel=1e-6, abs=1e-44)


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=4))
@PROPERTY
def test_any_finite_features_are_never_a_5xx(
    client: TestClient, project: str, features: list[float]
) -> None:
    r = client.post(
        f"/v1/projects/{project}/items",
        json={"items": [{"id": f"f{len(features)}", "features": features}]},
    )
    assert r.status_code < 500, r.text


CROWDKIT_LABELS = ["²", "٣", "1" * 5000, "-1", "99999999999999999999", "", " 1"]


@pytest.mark.parametrize("label", CROWDKIT_LABELS)
def test_crowdkit_import_odd_labels(client: TestClient, project: str, label: str) -> None:
    body = f"task,worker,label\nt1,w1,{label}\n"
    r = client.post(f"/v1/projects/{project}/imports/crowdkit", content=body)
    assert_4xx(r)


@given(st.text(max_size=30) | st.integers().map(str) | st.text("0123456789²³¹٣", max_size=5000))
@PROPERTY
def test_any_crowdkit_label_is_never_a_5xx(client: TestClient, project: str, label: str) -> None:
    body = "task,worker,label\n" + f"t1,w1,{json.dumps(label)}\n"
    r = client.post(f"/v1/projects/{project}/imports/crowdkit", content=body)
    assert r.status_code < 500, r.text


@pytest.mark.parametrize("label", [["cat"], {"a": 1}, 1.5, "²", "9" * 5000, True])
def test_peerannot_import_odd_labels(client: TestClient, project: str, label: Any) -> None:
    r = client.post(
        f"/v1/projects/{project}/imports/peerannot", content=json.dumps({"t1": {"w1": label}})
    )
    assert_4xx(r)


def test_vote_with_a_5000_digit_label(client: TestClient, project: str) -> None:
    raw = '{"votes": [{"item": "a", "worker": "w", "label": ' + "7" * 5000 + "}]}"
    r = client.post(
        f"/v1/projects/{project}/votes",
        content=raw,
        headers={"Content-Type": "application/json"},
    )
    assert_4xx(r)


# --- Argilla events: labels and timestamps --------------------------------------------------


@pytest.fixture
def argilla(client: TestClient) -> tuple[str, str]:
    secret = new_secret()
    name = f"ar-{uuid.uuid4().hex[:10]}"
    assert (
        client.post("/v1/projects", json={"name": name, "classes": ["cat", "dog"]}).status_code
        == 201
    )
    r = client.put(
        f"/v1/projects/{name}/connectors/argilla", json={"question": "q", "secret": secret}
    )
    assert r.status_code == 200, r.text
    return name, secret


def argilla_event(value: Any) -> dict[str, Any]:
    return {
        "type": "response.created",
        "timestamp": "2026-01-01T00:00:00Z",
        "data": {
            "id": str(uuid.uuid4()),
            "status": "submitted",
            "values": {"q": {"value": value}},
            "record": {"id": str(uuid.uuid4()), "external_id": "r1"},
            "user": {"id": str(uuid.uuid4()), "username": "u1"},
        },
    }


def post_event(
    client: TestClient, project: str, secret: str, event: Any, stamp: str | None = None
) -> Any:
    raw = json.dumps(event).encode()
    msg_id = f"msg_{uuid.uuid4().hex}"
    ts = int(time.time())
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp if stamp is not None else str(ts),
        "webhook-signature": sign(secret, msg_id, ts, raw),
        "Content-Type": "application/json",
        "Authorization": "",
    }
    return client.post(
        f"/v1/projects/{project}/connectors/argilla/events", content=raw, headers=headers
    )


@pytest.mark.parametrize("value", [["cat"], {"x": 1}, "²", "1" * 5000, 10**30, None])
def test_argilla_event_odd_label_values(
    client: TestClient, argilla: tuple[str, str], value: Any
) -> None:
    r = post_event(client, *argilla, argilla_event(value))
    assert_4xx(r)


@pytest.mark.parametrize("stamp", ["9" * 401, "-" + "9" * 401, "1e9", "", " ", "NaN", "0x10"])
def test_argilla_odd_timestamps_are_a_401(
    client: TestClient, argilla: tuple[str, str], stamp: str
) -> None:
    r = post_event(client, *argilla, argilla_event("cat"), stamp=stamp)
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized"


@given(st.text(max_size=500) | st.integers().map(str))
@PROPERTY
def test_any_webhook_timestamp_is_never_a_5xx(
    client: TestClient, argilla: tuple[str, str], stamp: str
) -> None:
    if not stamp.isascii() or any(c in stamp for c in "\r\n\x00"):
        stamp = stamp.encode("ascii", "ignore").decode().replace("\r", "").replace("\n", "")
        stamp = stamp.replace("\x00", "")
    r = post_event(client, *argilla, argilla_event("cat"), stamp=stamp)
    assert r.status_code < 500, r.text


def test_argilla_event_shape_is_accepted(client: TestClient, argilla: tuple[str, str]) -> None:
    # The odd-value cases above are refused for their value, not for the event's shape.
    r = post_event(client, *argilla, argilla_event("cat"))
    assert r.status_code == 200, r.text
    assert r.json()["inserted"] == 1


@pytest.mark.parametrize("value", [["cat"], {"v": "cat"}, "²", "1" * 5000, 2.5])
def test_argilla_records_import_odd_values(client: TestClient, project: str, value: Any) -> None:
    records = [
        {
            "id": "r1",
            "external_id": "item-1",
            "responses": {"q": [{"value": value, "user_id": "u1", "status": "submitted"}]},
        }
    ]
    r = client.post(
        f"/v1/projects/{project}/imports/argilla",
        params={"question": "q"},
        content=json.dumps(records),
    )
    assert_4xx(r)


@pytest.mark.parametrize(
    ("signature", "body"),
    [("garbage", b"{}"), ("v1,@@@", b"{}"), ("v1,AAAA", b"\xff\xfe"), ("v2,x v1", b"{}")],
)
def test_malformed_signatures_and_bodies_are_a_401(
    client: TestClient, argilla: tuple[str, str], signature: str, body: bytes
) -> None:
    """standardwebhooks 1.1.0 raises ValueError for a signature without a comma and
    UnicodeDecodeError for a body that is not UTF-8: both must be a refusal, not a 500."""
    headers = {
        "webhook-id": f"msg_{uuid.uuid4().hex}",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": signature,
        "Authorization": "",
    }
    r = client.post(
        f"/v1/projects/{argilla[0]}/connectors/argilla/events", content=body, headers=headers
    )
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized"
