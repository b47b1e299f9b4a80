"""Label Studio connector over HTTP with real Label Studio 1.23.2 requests
(tests/fixtures/label-studio/webhooks, see its README): created, updated, redelivered,
deleted, task deleted, cancelled, bulk, unknown label, unmapped field; and a sync that repairs
missed events against a fake Label Studio API serving the real JSON export."""

from __future__ import annotations

import copy
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings, get_settings
from app.main import create_app
from tests.helpers import FIXTURES, assert_counts_recount, db_rows, version

LS = FIXTURES / "label-studio"
SHARE_TOKEN = "Q3WM0UC6rly1DoOyhuibxDUsjaGhx7mxIJP9LO9q"  # in every body's `project`

# What Label Studio holds at the end (exports/project.json): (item, user, label).
FINAL = {
    ("item-1", "1", "pos"),
    ("item-1", "2", "pos"),
    ("item-1", "3", "neu"),
    ("item-2", "1", "neg"),
    ("item-3", "1", "neu"),
    ("item-3", "3", "neg"),
    ("item-4", "2", "pos"),
    ("item-5", "3", "neg"),
    ("item-6", "2", "pos"),
    ("item-6", "3", "neg"),
    ("item-8", "1", "pos"),
}
# What the webhooks alone deliver: item-6's annotations were imported inline (TASKS_CREATED only).
FROM_EVENTS = FINAL - {("item-6", "2", "pos"), ("item-6", "3", "neg")}


def request(n: int) -> dict[str, Any]:
    path = next((LS / "webhooks").glob(f"{n:02d}-*.json"))
    return json.loads(path.read_text())


def body(n: int) -> dict[str, Any]:
    return request(n)["body"]


def make_project(client: TestClient, classes: list[str], **config: Any) -> str:
    name = f"ls-{uuid.uuid4().hex[:10]}"
    assert client.post("/v1/projects", json={"name": name, "classes": classes}).status_code == 201
    r = client.put(f"/v1/projects/{name}/connectors/label-studio", json=config)
    assert r.status_code == 200, r.text
    return name


@pytest.fixture
def ls_project(client: TestClient) -> str:
    return make_project(client, ["pos", "neg", "neu"], from_name="sentiment", item_field="ref")


def send(client: TestClient, project: str, payload: dict[str, Any], **kw: Any) -> Any:
    return client.post(f"/v1/projects/{project}/connectors/label-studio/events", json=payload, **kw)


def stored(database_url: str, project: str) -> set[tuple[str, str, str]]:
    rows = db_rows(
        database_url,
        "SELECT i.external_id, w.external_id, (p.classes)[v.label + 1] FROM votes v "
        "JOIN items i ON i.id = v.item_id JOIN workers w ON w.id = v.worker_id "
        "JOIN projects p ON p.id = v.project_id WHERE p.name = %s",
        project,
    )
    return {tuple(r) for r in rows}  # type: ignore[misc]


def test_replay_every_captured_request(
    client: TestClient, ls_project: str, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    results = {}
    for n in range(1, 21):
        r = send(client, ls_project, body(n))
        assert r.status_code == 200, (n, r.text)
        results[n] = r.json()
        assert_counts_recount(database_url, ls_project)
    assert stored(database_url, ls_project) == FROM_EVENTS
    assert results[1]["ignored"] and results[20]["ignored"]  # TASKS_CREATED, PROJECT_UPDATED
    assert results[2]["inserted"] == 1
    assert results[11]["updated"] == 1  # ANNOTATION_UPDATED: same annotation, new label
    assert results[12]["deleted"] == 1  # ANNOTATIONS_DELETED, ids only
    assert results[13]["skipped"] == 1 and results[13]["inserted"] == 0  # cancelled
    assert results[15]["inserted"] == 1  # bulk ANNOTATIONS_CREATED
    assert results[16]["deleted"] == 0  # item-7's inline annotations never reached us
    assert results[19]["deleted"] == 1  # TASKS_DELETED takes the task's votes
    sources = db_rows(
        database_url,
        "SELECT DISTINCT source FROM votes v JOIN projects p ON p.id = v.project_id "
        "WHERE p.name = %s",
        ls_project,
    )
    assert sources == [("label-studio",)]
    # Nothing logged or stored the body (it carries the project's share token).
    assert SHARE_TOKEN not in caplog.text
    dump = db_rows(
        database_url,
        "SELECT coalesce(string_agg(t::text, ' '), '') FROM ("
        "SELECT c::text AS t FROM connectors c UNION ALL SELECT v::text FROM votes v "
        "UNION ALL SELECT i::text FROM items i) x",
    )[0][0]
    assert SHARE_TOKEN not in dump and "capture-single" not in dump


def test_redelivered_event_changes_nothing(
    client: TestClient, ls_project: str, database_url: str
) -> None:
    first = send(client, ls_project, body(2)).json()
    v = version(database_url, ls_project)
    again = send(client, ls_project, body(2)).json()
    assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, 1)
    assert again["votes_version"] == v == first["votes_version"]
    assert stored(database_url, ls_project) == {("item-1", "1", "pos")}
    # An update redelivered after a later one is idempotent too.
    send(client, ls_project, body(7))
    send(client, ls_project, body(11))
    assert send(client, ls_project, body(11)).json()["unchanged"] == 1
    assert ("item-3", "3", "neg") in stored(database_url, ls_project)


def test_event_log_line_names_the_action_and_its_effect(
    client: TestClient, ls_project: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by hand against a real Label Studio: the JSON log line of each event dropped its
    `extra` fields, so the log never said which action arrived. It does now, with the counts,
    and still without the body."""
    from app.logging import JsonFormatter

    caplog.set_level(logging.INFO)
    for n in (1, 2, 12):  # TASKS_CREATED (ignored), ANNOTATION_CREATED, ANNOTATIONS_DELETED
        assert send(client, ls_project, body(n)).status_code == 200
    lines = [
        json.loads(JsonFormatter().format(r))
        for r in caplog.records
        if r.getMessage() == "connector event"
    ]
    events = [line["connector"] for line in lines]
    assert [e["action"] for e in events] == [
        "TASKS_CREATED",
        "ANNOTATION_CREATED",
        "ANNOTATIONS_DELETED",
    ]
    assert all(e["tool"] == "label-studio" for e in events)
    assert events[0]["ignored"] is True
    assert events[1]["inserted"] == 1 and "deleted" not in events[1]
    assert "deleted" not in events[2]  # annotation 5 never reached this project: 0, left out
    assert SHARE_TOKEN not in caplog.text


def test_cancelled_after_vote_removes_it(
    client: TestClient, ls_project: str, database_url: str
) -> None:
    created = body(9)  # user 2 on item-4, annotation 8
    send(client, ls_project, created)
    skip = copy.deepcopy(created)
    skip["action"] = "ANNOTATION_UPDATED"
    skip["annotation"].update(was_cancelled=True, result=[])
    r = send(client, ls_project, skip).json()
    assert r["deleted"] == 1 and r["skipped"] == 1
    assert stored(database_url, ls_project) == set()
    assert_counts_recount(database_url, ls_project)


def test_unknown_label_is_422_naming_the_path(
    client: TestClient, ls_project: str, database_url: str
) -> None:
    bad = body(2)
    bad["annotation"]["result"][0]["value"]["choices"] = ["great"]
    r = send(client, ls_project, bad)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"  # the one error shape; a sync rejects instead
    err = r.json()["errors"][0]
    assert err["field"] == "annotation.result[0].value.choices[0]"
    assert "great" in err["reason"]
    assert SHARE_TOKEN not in r.text
    # Bulk: one bad annotation rejects the whole request.
    bulk = body(15)
    good = copy.deepcopy(bulk["annotation"][0])
    bad_ann = copy.deepcopy(good)
    bad_ann.update(id=99)
    bad_ann["result"][0]["value"]["choices"] = ["nope"]
    bulk["annotation"] = [good, bad_ann]
    r = send(client, ls_project, bulk)
    assert r.status_code == 422 and set(r.json()) >= {"error", "detail", "errors"}
    assert r.json()["errors"][0]["field"] == "annotation[1].result[0].value.choices[0]"
    assert stored(database_url, ls_project) == set()


def test_unmapped_fields_are_422(client: TestClient, database_url: str) -> None:
    wrong_control = make_project(client, ["pos", "neg", "neu"], from_name="topics")
    r = send(client, wrong_control, body(2))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "annotation.result"
    wrong_field = make_project(
        client, ["pos", "neg", "neu"], from_name="sentiment", item_field="filename"
    )
    r = send(client, wrong_field, body(2))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "task.data.filename"
    assert stored(database_url, wrong_field) == set()
    # Multi-choice: a vote is one class; the path says which result.
    multi = make_project(
        client, ["sports", "tech", "politics"], from_name="topics", item_field="ref"
    )
    r = send(client, multi, body(22))
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "annotation.result[0].value.choices"


def test_item_field_null_means_task_id(client: TestClient, database_url: str) -> None:
    p = make_project(client, ["pos", "neg", "neu"], from_name="sentiment", item_field=None)
    send(client, p, body(2))
    assert stored(database_url, p) == {("1", "1", "pos")}


def test_access_and_config(client: TestClient, ls_project: str) -> None:
    anon = TestClient(client.app)
    assert send(anon, ls_project, body(2), headers={"Authorization": ""}).status_code == 401
    key = client.post(
        "/v1/keys", json={"label": "ro", "scopes": ["read"], "projects": [ls_project]}
    ).json()["key"]
    r = send(client, ls_project, body(2), headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403
    key = client.post(
        "/v1/keys", json={"label": "ls", "scopes": ["annotate"], "projects": [ls_project]}
    ).json()["key"]
    r = send(client, ls_project, body(2), headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    # The token is stored but never shown; leaving it out of a PUT keeps it.
    url = f"/v1/projects/{ls_project}/connectors/label-studio"
    cfg = {
        "from_name": "sentiment",
        "item_field": "ref",
        "url": "http://127.0.0.1:9/",
        "ls_project": 1,
        "token": "secret-token-xyz",
    }
    r = client.put(url, json=cfg)
    assert r.status_code == 200 and "secret-token-xyz" not in r.text and r.json()["secret_set"]
    cfg.pop("token")
    r = client.put(url, json=cfg)
    assert r.json()["secret_set"] is True and "secret-token-xyz" not in client.get(url).text
    events = f"/v1/projects/{ls_project}/connectors/label-studio/events"
    assert r.json()["events_url"].endswith(events)
    r = client.put(url, json={"item_field": "ref"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "from_name"
    assert client.delete(url).status_code == 204
    assert send(client, ls_project, body(2)).status_code == 404
    assert client.get(url).status_code == 404


class FakeLabelStudio:
    """Label Studio's API as sync uses it: trade a personal access token (a JWT) for an access
    token, then GET the project's JSON export (the real file)."""

    def __init__(self, export: Path) -> None:
        self.export = export.read_bytes()
        self.seen: list[tuple[str, str | None]] = []
        self.on_export: Callable[[], None] | None = None  # runs before the export is sent
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, payload: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.seen.append((self.path, None))
                if self.path == "/api/token/refresh/" and data.get("refresh") == "a.b.c":
                    self._send(200, b'{"access": "access-123"}')
                else:
                    self._send(401, b'{"detail": "bad token"}')

            def do_GET(self) -> None:
                fake.seen.append((self.path, self.headers.get("Authorization")))
                if self.headers.get("Authorization") != "Bearer access-123":
                    self._send(401, b'{"detail": "no"}')
                elif self.path.startswith("/api/projects/1/export"):
                    if fake.on_export is not None:
                        fake.on_export()
                    self._send(200, fake.export)
                else:
                    self._send(404, b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def fake_ls() -> Iterator[FakeLabelStudio]:
    fake = FakeLabelStudio(LS / "exports" / "project.json")
    yield fake
    fake.server.shutdown()


def connect(client: TestClient, project: str, fake: FakeLabelStudio, **extra: Any) -> str:
    url = f"/v1/projects/{project}/connectors/label-studio"
    cfg = {"from_name": "sentiment", "item_field": "ref", "url": fake.url, "ls_project": 1}
    r = client.put(url, json=cfg | {"token": "a.b.c"} | extra)
    assert r.status_code == 200, r.text
    return url


def test_sync_repairs_missed_events(
    client: TestClient, ls_project: str, database_url: str, fake_ls: FakeLabelStudio
) -> None:
    # Missed: 04 (user 3 on item-1), 11 (an update), 12 (a delete), 19 (the task delete).
    for n in (2, 3, 5, 6, 7, 8, 9, 10, 13, 15, 18):
        assert send(client, ls_project, body(n)).status_code == 200
    # And a vote Label Studio never had under this connector stays untouched (source api).
    client.post(
        f"/v1/projects/{ls_project}/votes",
        json={"votes": [{"item": "item-1", "worker": "api-user", "label": "neg"}]},
    )
    have = stored(database_url, ls_project)
    assert ("item-9", "2", "neu") in have and ("item-3", "3", "pos") in have
    url = connect(client, ls_project, fake_ls)
    r = client.post(f"{url}/sync")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["annotations"] == 12  # 11 votes and 1 cancelled in the export
    assert (out["inserted"], out["updated"], out["deleted"], out["skipped"]) == (3, 1, 2, 1)
    assert stored(database_url, ls_project) == FINAL | {("item-1", "api-user", "neg")}
    assert_counts_recount(database_url, ls_project)
    assert ("/api/projects/1/export?exportType=JSON", "Bearer access-123") in fake_ls.seen
    # A second sync finds nothing to do.
    again = client.post(f"{url}/sync").json()
    assert (again["inserted"], again["updated"], again["deleted"]) == (0, 0, 0)
    assert again["votes_version"] == out["votes_version"]
    assert client.get(url).json()["last_sync"]["annotations"] == 12
    assert "a.b.c" not in client.get(url).text


def test_sync_unreachable_is_502(client: TestClient, ls_project: str) -> None:
    url = f"/v1/projects/{ls_project}/connectors/label-studio"
    client.put(
        url,
        json={
            "from_name": "sentiment",
            "url": "http://127.0.0.1:9",
            "ls_project": 1,
            "token": "legacy-token",
        },
    )
    r = client.post(f"{url}/sync")
    assert r.status_code == 502 and "legacy-token" not in r.text, r.text


def test_periodic_sync_runs_when_due(
    client: TestClient, ls_project: str, database_url: str, fake_ls: FakeLabelStudio
) -> None:
    """The worker's periodic task (softlabels.connector_sync, every minute) syncs connectors
    whose sync_interval_s has passed; a failure is recorded, not raised."""
    from app.connectors.store import sync_due
    from app.db.session import make_engine

    url = connect(client, ls_project, fake_ls, sync_interval_s=3600)
    pid = db_rows(database_url, "SELECT id FROM projects WHERE name = %s", ls_project)[0][0]
    engine = make_engine(database_url)
    try:
        assert pid in sync_due(engine)
        assert stored(database_url, ls_project) == FINAL
        assert_counts_recount(database_url, ls_project)
        assert pid not in sync_due(engine)  # synced a moment ago: not due
        db_rows(
            database_url,
            "UPDATE connectors SET last_sync_at = now() - interval '2 hours', "
            'config = config || \'{"url": "http://127.0.0.1:9"}\' WHERE project_id = %s '
            "RETURNING 1",
            pid,
        )
        assert pid in sync_due(engine)  # unreachable: recorded
    finally:
        engine.dispose()
    last = client.get(url).json()["last_sync"]
    assert "could not be read" in last["error"] and "a.b.c" not in json.dumps(last)
    assert stored(database_url, ls_project) == FINAL  # a failed sync changes nothing


def test_tasks_imported_with_annotations_request_a_sync(
    client: TestClient, ls_project: str, database_url: str, fake_ls: FakeLabelStudio
) -> None:
    """14-TASKS_CREATED (item-6, item-7 imported with annotations) sends no annotation event:
    the connector asks the worker's next periodic tick to sync, which fetches them."""
    from app.connectors.store import sync_due
    from app.db.session import make_engine

    connect(client, ls_project, fake_ls)  # no periodic interval
    pid = db_rows(database_url, "SELECT id FROM projects WHERE name = %s", ls_project)[0][0]
    engine = make_engine(database_url)
    try:
        assert send(client, ls_project, body(1)).json()["ignored"]  # no inline annotations
        assert pid not in sync_due(engine)
        assert send(client, ls_project, body(14)).json()["ignored"]
        assert pid in sync_due(engine)
        assert pid not in sync_due(engine)  # done: the request is cleared
    finally:
        engine.dispose()
    assert {("item-6", "2", "pos"), ("item-6", "3", "neg")} <= stored(database_url, ls_project)


def test_sync_without_waiting_is_queued_for_the_worker(
    client: TestClient, ls_project: str, database_url: str, fake_ls: FakeLabelStudio
) -> None:
    """wait=false answers 202 at once (Label Studio may take minutes to build a large export)
    and the worker's next tick runs the sync; a connector that cannot sync is still a 422."""
    from app.connectors.store import sync_due
    from app.db.session import make_engine

    r = client.post(f"/v1/projects/{ls_project}/connectors/label-studio/sync?wait=false")
    assert r.status_code == 422 and {e["field"] for e in r.json()["errors"]} >= {"url", "token"}
    url = connect(client, ls_project, fake_ls)
    r = client.post(f"/v1/projects/{ls_project}/connectors/label-studio/sync?wait=false")
    assert (r.status_code, r.json()["queued"]) == (202, True)
    assert stored(database_url, ls_project) == set()  # nothing yet: the worker does it
    pid = db_rows(database_url, "SELECT id FROM projects WHERE name = %s", ls_project)[0][0]
    engine = make_engine(database_url)
    try:
        assert pid in sync_due(engine)
    finally:
        engine.dispose()
    assert stored(database_url, ls_project) == FINAL
    assert client.get(url).json()["last_sync"]["inserted"] == len(FINAL)


def export_data() -> list[dict[str, Any]]:
    return json.loads((LS / "exports" / "project.json").read_text())


def annotation(data: list[dict[str, Any]], ann_id: int) -> tuple[int, int, dict[str, Any]]:
    """(task index, annotation index, annotation) of annotation `ann_id` in an export."""
    for i, task in enumerate(data):
        for j, a in enumerate(task["annotations"]):
            if a["id"] == ann_id:
                return i, j, a
    raise KeyError(ann_id)


def test_sync_stores_the_good_annotations_and_reports_the_bad(
    client: TestClient, ls_project: str, database_url: str, fake_ls: FakeLabelStudio
) -> None:
    """Found against a real Label Studio: one annotation with a choice that is not a class made
    every sync a 422, so nothing synced. Now the good ones are stored and the bad reported."""
    data = export_data()
    i, j, a = annotation(data, 7)  # user 3 on item-3: a choice added to Label Studio later
    a["result"][0]["value"]["choices"] = ["mixed"]
    del data[4]["data"]["ref"]  # item-5's task lost the mapped field (annotation 9)
    fake_ls.export = json.dumps(data).encode()
    url = connect(client, ls_project, fake_ls)
    r = client.post(f"{url}/sync")
    assert r.status_code == 200, r.text
    out = r.json()
    good = FINAL - {("item-3", "3", "neg"), ("item-5", "3", "neg")}
    assert stored(database_url, ls_project) == good
    assert_counts_recount(database_url, ls_project)
    assert (out["annotations"], out["inserted"], out["skipped"], out["deleted"]) == (12, 9, 1, 0)
    assert out["rejected"] == 2
    assert out["rejections"] == [
        {
            "annotation": "7",
            "task": "3",
            "field": f"[{i}].annotations[{j}].result[0].value.choices[0]",
            "reason": "unknown label 'mixed'; the project's classes are ['pos', 'neg', 'neu']",
            "kept_vote": False,
        },
        {
            "annotation": "9",
            "task": "5",
            "field": "[4].data.ref",
            "reason": "missing: the connector maps the item id to task data field 'ref'",
            "kept_vote": False,
        },
    ]  # in the export's order
    assert client.get(url).json()["last_sync"]["rejections"] == out["rejections"]
    # A second sync changes nothing and reports the same.
    again = client.post(f"{url}/sync").json()
    assert (again["inserted"], again["updated"], again["deleted"]) == (0, 0, 0)
    assert again["unchanged"] == 9 and again["votes_version"] == out["votes_version"]
    assert again["rejections"] == out["rejections"]
    assert stored(database_url, ls_project) == good
    # Fixed in Label Studio: the next sync takes them.
    fake_ls.export = (LS / "exports" / "project.json").read_bytes()
    fixed = client.post(f"{url}/sync").json()
    assert (fixed["inserted"], fixed["rejected"], fixed["rejections"]) == (2, 0, [])
    assert stored(database_url, ls_project) == FINAL


def test_sync_keeps_the_vote_of_an_annotation_now_rejected(
    client: TestClient, ls_project: str, database_url: str, fake_ls: FakeLabelStudio
) -> None:
    """An annotation stored before and unreadable now (e.g. its choice renamed in Label Studio)
    keeps its vote, neither updated nor deleted, and the rejection says so; the periodic sync
    records the rejections in `last_sync` too."""
    from app.connectors.store import sync_due
    from app.db.session import make_engine

    url = connect(client, ls_project, fake_ls)
    assert client.post(f"{url}/sync").json()["inserted"] == 11
    data = export_data()
    _, _, a = annotation(data, 7)
    a["result"][0]["value"]["choices"] = ["mixed"]
    fake_ls.export = json.dumps(data).encode()
    out = client.post(f"{url}/sync").json()
    assert (out["inserted"], out["updated"], out["deleted"], out["unchanged"]) == (0, 0, 0, 10)
    assert out["rejected"] == 1
    [rej] = out["rejections"]
    assert rej["annotation"] == "7" and rej["kept_vote"] is True
    assert rej["reason"].endswith("; the vote stored from this annotation before is kept")
    assert stored(database_url, ls_project) == FINAL
    # The worker's periodic sync: same result, recorded where the API shows it.
    connect(client, ls_project, fake_ls, sync_interval_s=3600)
    pid = db_rows(database_url, "SELECT id FROM projects WHERE name = %s", ls_project)[0][0]
    db_rows(
        database_url,
        "UPDATE connectors SET last_sync_at = now() - interval '2 hours' WHERE project_id = %s "
        "RETURNING 1",
        pid,
    )
    engine = make_engine(database_url)
    try:
        assert pid in sync_due(engine)
    finally:
        engine.dispose()
    last = client.get(url).json()["last_sync"]
    assert "error" not in last and last["rejected"] == 1
    assert last["rejections"] == [rej] and last["unchanged"] == 10
    assert stored(database_url, ls_project) == FINAL


def test_sync_rejections_are_capped_and_counted(
    client: TestClient, ls_project: str, database_url: str, fake_ls: FakeLabelStudio
) -> None:
    data = [
        {
            "id": 1000 + n,
            "data": {"ref": f"bulk-{n}"},
            "annotations": [
                {
                    "id": 5000 + n,
                    "completed_by": 1,
                    "result": [{"from_name": "sentiment", "value": {"choices": ["mixed"]}}],
                }
            ],
        }
        for n in range(120)
    ] + export_data()
    fake_ls.export = json.dumps(data).encode()
    url = connect(client, ls_project, fake_ls)
    out = client.post(f"{url}/sync").json()
    assert out["rejected"] == 120 and len(out["rejections"]) == 100
    assert out["rejections"][0]["annotation"] == "5000" and out["inserted"] == 11
    assert stored(database_url, ls_project) == FINAL


def test_sync_of_a_worker_s_replacing_annotation_is_an_update(
    client: TestClient, ls_project: str, database_url: str, fake_ls: FakeLabelStudio
) -> None:
    """A worker's newer annotation on the same item replaced the stored one while the webhook
    was lost: a sync reports it as 1 updated (as the webhook would have), not 1 inserted and 1
    deleted, and the vote now belongs to the new annotation."""
    url = connect(client, ls_project, fake_ls)
    first = client.post(f"{url}/sync").json()
    data = export_data()
    _, _, a = annotation(data, 8)  # user 2 on item-4: pos
    a.update(id=15)
    a["result"][0]["value"]["choices"] = ["neg"]
    fake_ls.export = json.dumps(data).encode()
    out = client.post(f"{url}/sync").json()
    assert (out["inserted"], out["updated"], out["deleted"]) == (0, 1, 0), out
    assert out["votes_version"] > first["votes_version"]
    assert stored(database_url, ls_project) == FINAL - {("item-4", "2", "pos")} | {
        ("item-4", "2", "neg")
    }
    assert_counts_recount(database_url, ls_project)
    # Same label, new annotation id: unchanged, but the vote follows the new id, so deleting
    # that annotation in Label Studio (a webhook naming it) removes the vote.
    a.update(id=16)
    fake_ls.export = json.dumps(data).encode()
    out = client.post(f"{url}/sync").json()
    assert (out["inserted"], out["updated"], out["deleted"], out["unchanged"]) == (0, 0, 0, 11)
    r = send(client, ls_project, {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 16}]})
    assert r.json()["deleted"] == 1
    assert ("item-4", "2", "neg") not in stored(database_url, ls_project)


def test_sync_unreadable_export_or_incomplete_connector(
    client: TestClient, ls_project: str, database_url: str, fake_ls: FakeLabelStudio
) -> None:
    url = connect(client, ls_project, fake_ls)
    client.post(f"{url}/sync")
    for export in ({"detail": "not a list"}, [1, 2], [{"id": 1, "annotations": None}]):
        fake_ls.export = json.dumps(export).encode()
        r = client.post(f"{url}/sync")
        assert r.status_code == 502, r.text
        assert r.json()["error"] == "tool_unreachable" and "export could not be read" in r.text
        assert stored(database_url, ls_project) == FINAL  # nothing deleted
    other = make_project(client, ["pos", "neg", "neu"], from_name="sentiment")
    r = client.post(f"/v1/projects/{other}/connectors/label-studio/sync")
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["url", "ls_project", "token"]


def test_sync_reads_an_export_past_the_outbound_limit_up_to_its_own(
    settings: Settings,
    database_url: str,
    fake_ls: FakeLabelStudio,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Label Studio's export is read up to label_studio_export_max_bytes, not the general
    outbound_max_bytes: a real export of 50,000 tasks with 3 annotations is over its 100 MiB
    (benchmarks/results/ls_real_scale.md). Here the general limit is 1 KiB and the export
    9 KiB; past its own limit the sync is a 502 naming the setting, and nothing changes."""
    small = settings.model_copy(update={"outbound_max_bytes": 1024})
    assert len(fake_ls.export) > small.outbound_max_bytes
    monkeypatch.delenv("SOFTLABELS_LABEL_STUDIO_EXPORT_MAX_BYTES", raising=False)
    get_settings.cache_clear()
    try:
        with TestClient(create_app(small)) as client:
            project = make_project(client, ["pos", "neg", "neu"], from_name="sentiment")
            url = connect(client, project, fake_ls)
            r = client.post(f"{url}/sync")
            assert r.status_code == 200, r.text
            assert stored(database_url, project) == FINAL
            monkeypatch.setenv("SOFTLABELS_LABEL_STUDIO_EXPORT_MAX_BYTES", "2048")
            get_settings.cache_clear()
            fake_ls.export = fake_ls.export.replace(b'"pos"', b'"neg"')
            r = client.post(f"{url}/sync")
            assert r.status_code == 502, r.text
            assert r.json()["error"] == "tool_unreachable"
            assert "2048-byte limit" in r.text
            assert "SOFTLABELS_LABEL_STUDIO_EXPORT_MAX_BYTES" in r.text
            assert stored(database_url, project) == FINAL
    finally:
        get_settings.cache_clear()  # monkeypatch restores the variable after this


def test_sync_holds_no_transaction_while_label_studio_builds_its_export(
    client: TestClient, ls_project: str, database_url: str, fake_ls: FakeLabelStudio
) -> None:
    """Label Studio takes minutes to build a large export (136-198 s for 20,000 tasks,
    benchmarks/results/ls_real_scale.md): meanwhile no session of the sync, the API's or the
    worker's, sits idle in a transaction holding locks on projects or connectors."""
    from app.connectors.store import sync_due
    from app.db.session import make_engine

    seen: list[tuple[int, int]] = []

    def look() -> None:
        idle, locks = db_rows(
            database_url,
            "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state LIKE 'idle in transaction%%' AND pid <> pg_backend_pid()), "
            "(SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND c.relname IN ('projects', 'connectors') AND l.pid <> pg_backend_pid())",
        )[0]
        seen.append((idle, locks))

    fake_ls.on_export = look
    url = connect(client, ls_project, fake_ls)
    r = client.post(f"{url}/sync")
    assert r.status_code == 200 and r.json()["inserted"] == len(FINAL), r.text
    pid = db_rows(database_url, "SELECT id FROM projects WHERE name = %s", ls_project)[0][0]
    assert client.post(f"{url}/sync?wait=false").status_code == 202
    engine = make_engine(database_url)
    try:
        assert pid in sync_due(engine)
    finally:
        engine.dispose()
    assert seen == [(0, 0), (0, 0)]  # the API's sync, then the worker's
    assert stored(database_url, ls_project) == FINAL
    assert client.get(url).json()["last_sync"]["unchanged"] == len(FINAL)


def test_sync_openapi_lists_its_errors(client: TestClient) -> None:
    op = client.get("/openapi.json").json()["paths"][
        "/v1/projects/{project}/connectors/label-studio/sync"
    ]["post"]
    assert {"401", "403", "404", "422", "502"} <= set(op["responses"])
    assert "rejections" in op["responses"]["422"]["description"]
    schema = client.get("/openapi.json").json()["components"]["schemas"]["SyncResult"]
    assert {"rejected", "rejections"} <= set(schema["properties"])
