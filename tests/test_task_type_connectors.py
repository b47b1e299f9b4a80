"""Label Studio's multiple-choice, rating and ordered-choices annotations on projects of the
matching task type, replayed from the captures of a real Label Studio 1.23.2
(tests/fixtures/label-studio/task-types, see the README there): every webhook in order, then
the JSON and JSON_MIN exports imported into fresh projects must give the same votes. Label
Studio validates none of the values; each bad one is a 422 naming the annotation's path."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import FIXTURES, assert_counts_recount, assert_ticks_recount, db_rows

TT = FIXTURES / "label-studio" / "task-types"
TOPICS = ["politics", "sports", "tech", "science", "culture"]
SEVERITY = ["none", "minor", "moderate", "major", "critical"]
STARS = ["1", "2", "3", "4", "5"]


def body(project: str, n: int) -> dict[str, Any]:
    path = next((TT / "webhooks" / project).glob(f"{n:02d}-*.json"))
    return json.loads(path.read_text())["body"]


def make(client: TestClient, task_type: str, classes: list[str], from_name: str) -> str:
    name = f"tt-{uuid.uuid4().hex[:10]}"
    r = client.post("/v1/projects", json={"name": name, "classes": classes, "task_type": task_type})
    assert r.status_code == 201, r.text
    r = client.put(
        f"/v1/projects/{name}/connectors/label-studio",
        json={"from_name": from_name, "item_field": "ref"},
    )
    assert r.status_code == 200, r.text
    return name


def send(client: TestClient, project: str, payload: dict[str, Any]) -> Any:
    return client.post(f"/v1/projects/{project}/connectors/label-studio/events", json=payload)


def votes(database_url: str, project: str) -> dict[tuple[str, str], object]:
    """(item, worker) -> the class or level name, or the sorted list of classes ticked."""
    rows = db_rows(
        database_url,
        "SELECT i.external_id, w.external_id, v.label, v.ticks, p.classes FROM votes v "
        "JOIN items i ON i.id = v.item_id JOIN workers w ON w.id = v.worker_id "
        "JOIN projects p ON p.id = v.project_id WHERE p.name = %s",
        project,
    )
    return {
        (i, w): classes[label] if ticks is None else [classes[k] for k in ticks]
        for i, w, label, ticks, classes in rows
    }


def replay(
    client: TestClient, project: str, capture: str, n: int, refused: dict[int, tuple[str, str]]
) -> None:
    """Post the capture's webhooks 1..n in order; those in `refused` must be a 422 naming
    (path, a fragment of the reason), the others a 200."""
    for k in range(1, n + 1):
        r = send(client, project, body(capture, k))
        if k in refused:
            assert r.status_code == 422, (k, r.text)
            err = r.json()["errors"][0]
            path, reason = refused[k]
            assert err["field"] == path and reason in err["reason"], (k, err)
        else:
            assert r.status_code == 200, (k, r.text)


MULTI_FINAL = {
    ("m-1", "1"): ["politics", "tech", "science"],
    ("m-1", "2"): ["sports", "culture"],  # updated from ["sports"] (multi/07)
    ("m-1", "3"): [],  # `result: []`: the control left blank, none apply
    ("m-2", "3"): [],  # `value.choices: []`
    ("m-3", "3"): ["science"],  # one pick on the multiple-choice control
}


def test_multi_choice_webhooks(client: TestClient, database_url: str) -> None:
    project = make(client, "multi_label", TOPICS, "topics")
    refused = {6: ("annotation.result[0].value.choices[1]", "unknown label 'weather'")}
    replay(client, project, "multi", 10, refused)
    assert votes(database_url, project) == MULTI_FINAL
    assert_ticks_recount(database_url, project)
    # A redelivered update changes nothing; the annotation's later state wins over an old one.
    r = send(client, project, body("multi", 7))
    assert r.status_code == 200 and r.json()["unchanged"] == 1
    counts = client.get(f"/v1/projects/{project}/items/m-1").json()
    assert counts["counts"] == [1, 1, 1, 1, 1] and counts["n_votes"] == 3


@pytest.mark.parametrize("fmt", ["json", "min.json"])
def test_multi_choice_exports_give_the_same_votes(
    client: TestClient, database_url: str, fmt: str
) -> None:
    doc = json.loads((TT / "exports" / f"multi.{fmt}").read_text())
    project = make(client, "multi_label", TOPICS, "topics")
    url = f"/v1/projects/{project}/imports/label-studio"
    params = {"from_name": "topics", "item_field": "ref"}
    r = client.post(url, params=params, content=json.dumps(doc))
    assert r.status_code == 422, r.text  # the choice Label Studio let through
    assert "unknown label 'weather'" in r.json()["errors"][0]["reason"]
    assert votes(database_url, project) == {}
    kept = _without_annotation(doc, 6)
    r = client.post(url, params=params, content=json.dumps(kept))
    assert r.status_code == 200, r.text
    assert votes(database_url, project) == MULTI_FINAL
    assert_ticks_recount(database_url, project)


def _without_annotation(doc: list[dict[str, Any]], ann: int) -> list[dict[str, Any]]:
    doc = copy.deepcopy(doc)
    if "annotations" in doc[0]:  # JSON: tasks with their annotations
        for task in doc:
            task["annotations"] = [a for a in task["annotations"] if a["id"] != ann]
        return doc
    return [row for row in doc if row["annotation_id"] != ann]


RATING_REFUSED = {
    4: ("annotation.result", "no result from the mapped control 'score'"),
    5: ("annotation.result[0].value.rating", "rating 7 is not on this project's scale"),
    6: ("annotation.result[0].value.rating", "rating 0 is not on this project's scale"),
    7: ("annotation.result[0].value.rating", "must be a whole number of stars, not 2.5"),
    8: ("annotation.result[0].value.rating", "must be a whole number of stars, not '4'"),
}


def test_rating_webhooks_become_ordinal_votes(client: TestClient, database_url: str) -> None:
    project = make(client, "ordinal", STARS, "score")
    replay(client, project, "rating", 10, RATING_REFUSED)
    # r-1: 5 stars (user 1), 1 then 2 stars (user 2, updated), 3 stars deleted (user 3).
    assert votes(database_url, project) == {("r-1", "1"): "5", ("r-1", "2"): "2"}
    assert_counts_recount(database_url, project)
    label = client.get(f"/v1/projects/{project}/items/r-1/soft-label").json()
    assert label["probs"] == [0, 0.5, 0, 0, 0.5] and label["mean"] == 3.5


def test_stars_map_to_the_levels_of_a_named_scale(client: TestClient, database_url: str) -> None:
    project = make(client, "ordinal", SEVERITY, "score")
    for k in (1, 2, 3):
        assert send(client, project, body("rating", k)).status_code == 200
    # 5, 1 and 3 stars: the 5th, 1st and 3rd levels.
    assert votes(database_url, project) == {
        ("r-1", "1"): "critical",
        ("r-1", "2"): "none",
        ("r-1", "3"): "moderate",
    }


def test_rating_exports(client: TestClient, database_url: str) -> None:
    for fmt in ("json", "min.json"):
        doc = json.loads((TT / "exports" / f"rating.{fmt}").read_text())
        project = make(client, "ordinal", STARS, "score")
        url = f"/v1/projects/{project}/imports/label-studio"
        params = {"from_name": "score", "item_field": "ref"}
        r = client.post(url, params=params, content=json.dumps(doc))
        assert r.status_code == 422, r.text
        reasons = " ".join(e["reason"] for e in r.json()["errors"])
        for bad in ("rating 7", "rating 0", "not 2.5", "not '4'"):
            assert bad in reasons, (fmt, reasons)
        for ann in (11, 12, 13, 14, 15):
            doc = _without_annotation(doc, ann)
        assert client.post(url, params=params, content=json.dumps(doc)).status_code == 200
        assert votes(database_url, project) == {("r-1", "1"): "5", ("r-1", "2"): "2"}, fmt


def test_ordered_choices_webhooks(client: TestClient, database_url: str) -> None:
    project = make(client, "ordinal", SEVERITY, "severity")
    refused = {
        4: ("annotation.result", "no result from the mapped control 'severity'"),
        5: ("annotation.result[0].value.choices", "has 2 choices; a vote is one level"),
    }
    replay(client, project, "severity", 8, refused)
    assert votes(database_url, project) == {
        ("s-1", "1"): "major",  # updated from minor (severity/07)
        ("s-1", "2"): "critical",
        ("s-1", "3"): "none",
    }
    assert_counts_recount(database_url, project)
    label = client.get(f"/v1/projects/{project}/items/s-1/soft-label").json()
    assert label["median"] == 3 and label["mean"] == pytest.approx(7 / 3)


def test_a_project_of_another_type_says_why(client: TestClient) -> None:
    single = make(client, "single", TOPICS, "topics")
    r = send(client, single, body("multi", 1))
    assert r.status_code == 422
    assert r.json()["errors"][0] == {
        "index": None,
        "field": "annotation.result[0].value.choices",
        "reason": "has 3 choices; a vote is one class (this project's task type is single: use "
        "a single-choice control, or a multi_label project)",
    }
    r = send(client, single, body("multi", 3))  # `result: []`
    assert r.status_code == 422 and "no result from the mapped control" in r.text
    stars = make(client, "multi_label", STARS, "score")
    r = send(client, stars, body("rating", 1))
    assert r.status_code == 422 and "a rating answers an ordinal project" in r.text
