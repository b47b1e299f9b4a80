"""Argilla's other question types and its record fields over HTTP: a `multi_label_selection`
answer (a list of option values) on a multi-label project, a `rating` answer (the option's
number) on an ordinal one, a blank optional question, and the record's text or image stored as
the item's content, from webhooks and from the records file import."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.webhooks.signing import new_secret
from tests.helpers import assert_ticks_recount, db_rows
from tests.test_connectors_argilla import EVENT, deliver
from tests.test_item_content import png

TOPICS = ["sports", "politics", "tech", "health"]


def question(name: str, kind: str, options: list[Any]) -> dict[str, Any]:
    return {
        "name": name,
        "title": name,
        "required": False,
        "settings": {"type": kind, "options": [{"value": o, "text": str(o)} for o in options]},
    }


def response(
    q: dict[str, Any],
    value: Any = None,
    *,
    rid: str = "r1",
    user: str = "ann",
    record: str = "rec-1",
    fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A response event to question `q`; `value` None leaves the question blank."""
    e = copy.deepcopy(EVENT)
    d = e["data"]
    d["id"] = rid
    d["values"] = {} if value is None else {q["name"]: {"value": value}}
    d["user"]["id"] = user
    d["record"]["external_id"] = record
    d["record"]["fields"] = fields if fields is not None else {"text": f"text of {record}"}
    d["record"]["dataset"]["questions"] = [q]
    return e


def connected(
    client: TestClient, task_type: str, classes: list[str], q: str, **cfg: Any
) -> tuple[str, str]:
    name = f"art-{uuid.uuid4().hex[:10]}"
    r = client.post("/v1/projects", json={"name": name, "classes": classes, "task_type": task_type})
    assert r.status_code == 201, r.text
    secret = new_secret()
    r = client.put(
        f"/v1/projects/{name}/connectors/argilla", json={"question": q, "secret": secret, **cfg}
    )
    assert r.status_code == 200, r.text
    return name, secret


def votes(database_url: str, project: str) -> dict[tuple[str, str], Any]:
    rows = db_rows(
        database_url,
        "SELECT i.external_id, w.external_id, v.label, v.ticks FROM votes v "
        "JOIN items i ON i.id = v.item_id JOIN workers w ON w.id = v.worker_id "
        "JOIN projects p ON p.id = v.project_id WHERE p.name = %s",
        project,
    )
    return {(i, w): (t if t is not None else label) for i, w, label, t in rows}


def test_multi_label_selection(client: TestClient, database_url: str) -> None:
    name, secret = connected(client, "multi_label", TOPICS, "topics")
    q = question("topics", "multi_label_selection", TOPICS)
    assert deliver(client, name, secret, response(q, ["tech", "sports"])).status_code == 200
    assert votes(database_url, name) == {("rec-1", "ann"): [0, 2]}
    # One pick to two and back, as an annotator edits the response.
    r = deliver(client, name, secret, response(q, ["health"]))
    assert r.status_code == 200 and r.json()["updated"] == 1, r.text
    # A blank optional question on a submitted response: none of the topics apply.
    r = deliver(client, name, secret, response(q, None, rid="r2", user="bob"))
    assert r.status_code == 200 and r.json()["inserted"] == 1, r.text
    assert votes(database_url, name) == {("rec-1", "ann"): [3], ("rec-1", "bob"): []}
    item = client.get(f"/v1/projects/{name}/items/rec-1").json()
    assert item["counts"] == [0, 0, 0, 1] and item["n_votes"] == 2
    # An option the project does not have: 422 naming the pick, nothing stored.
    r = deliver(client, name, secret, response(q, ["tech", "cooking"], rid="r3", user="cy"))
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "data.values.topics.value[1]"
    assert ("rec-1", "cy") not in votes(database_url, name)
    assert_ticks_recount(database_url, name)


def test_rating_is_a_level_not_an_index(client: TestClient, database_url: str) -> None:
    name, secret = connected(client, "ordinal", ["1", "2", "3", "4", "5"], "quality")
    q = question("quality", "rating", [1, 2, 3, 4, 5])
    assert deliver(client, name, secret, response(q, 4)).status_code == 200
    assert votes(database_url, name) == {("rec-1", "ann"): 3}  # the level named "4"
    for bad in (7, 0, 2.5, True):
        r = deliver(client, name, secret, response(q, bad, rid="r9", user="bob"))
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["errors"][0]["field"] == "data.values.quality.value"
    # A blank rating is no vote on a scale: a 422 that says so.
    r = deliver(client, name, secret, response(q, None, rid="r8", user="bob"))
    assert r.status_code == 422 and "missing" in r.json()["errors"][0]["reason"]
    # A rating question mapped onto a single-choice project is refused with the reason.
    single, s2 = connected(client, "single", ["bad", "ok", "good"], "quality")
    r = deliver(client, single, s2, response(q, 2))
    assert r.status_code == 422 and "ordinal" in r.json()["errors"][0]["reason"]
    assert votes(database_url, name) == {("rec-1", "ann"): 3}


@pytest.mark.parametrize("how", ["text", "data-uri", "url", "named-field"])
def test_record_fields_become_the_items_content(
    client: TestClient, database_url: str, how: str
) -> None:
    image = png(3, 3, (0, 128, 255))
    cfg: dict[str, Any] = {}
    fields: dict[str, Any] = {"text": "a review"}
    if how == "data-uri":
        fields = {"image": "data:image/png;base64," + base64.b64encode(image).decode()}
    elif how == "url":
        fields = {"image": "https://images.example.org/cat.png"}
    elif how == "named-field":
        fields = {"text": "not this", "prompt": "this one"}
        cfg = {"content_field": "prompt"}
    name, secret = connected(client, "single", ["pos", "neg"], "sentiment", **cfg)
    q = question("sentiment", "label_selection", ["pos", "neg"])
    assert deliver(client, name, secret, response(q, "pos", fields=fields)).status_code == 200
    item = client.get(f"/v1/projects/{name}/items/rec-1").json()
    if how == "text":
        assert item["text"] == "a review"
    elif how == "data-uri":
        got = client.get(f"/v1/projects/{name}/items/rec-1/image")
        assert got.status_code == 200 and got.content == image
    elif how == "url":
        assert item["image_url"] == "https://images.example.org/cat.png" and item["text"] is None
    else:
        assert item["text"] == "this one"


def test_records_import_takes_sets_ratings_and_content(
    client: TestClient, database_url: str
) -> None:
    name, _ = connected(client, "multi_label", TOPICS, "topics")
    records = [
        {
            "id": "r-a",
            "external_id": "a",
            "fields": {"text": "first text"},
            "responses": {
                "topics": [
                    {"value": ["sports"], "user_id": "u1"},
                    {"value": ["sports", "tech"], "user_id": "u2"},
                ]
            },
        },
        {
            "id": "r-b",
            "external_id": "b",
            "fields": {"body": "second text"},
            "responses": {"topics": [{"value": ["health"], "user_id": "u1"}]},
        },
    ]
    r = client.post(
        f"/v1/projects/{name}/imports/argilla",
        params={"question": "topics", "content_field": "body"},
        content=json.dumps(records),
    )
    assert r.status_code == 200 and r.json()["inserted"] == 3, r.text
    assert votes(database_url, name) == {("a", "u1"): [0], ("a", "u2"): [0, 2], ("b", "u1"): [3]}
    # content_field names `body`: b has it, a (only `text`) gets none.
    assert client.get(f"/v1/projects/{name}/items/b").json()["text"] == "second text"
    assert client.get(f"/v1/projects/{name}/items/a").json()["text"] is None
    bad = copy.deepcopy(records)
    bad[1]["responses"]["topics"][0]["value"] = {"not": "an answer"}
    r = client.post(
        f"/v1/projects/{name}/imports/argilla",
        params={"question": "topics"},
        content=json.dumps(bad),
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "[1].responses.topics[0].value"
    assert_ticks_recount(database_url, name)
