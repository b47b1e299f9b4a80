"""Set-valued and rating votes from files: `softlabels import-votes` CSV cells (a JSON list, or
names joined by ';'; an ordinal level's name, index or value), and the file imports' crowd-kit
CSV, peerannot answers and Prodigy multiple-choice tasks on multi-label and ordinal projects,
over the CLI and HTTP on real PostgreSQL. A bad cell names its line and stores nothing of it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from fastapi.testclient import TestClient

from tests.helpers import assert_ticks_recount, vote_rows
from tests.test_cli import cli, write_votes

TOPICS = ["sports", "politics", "tech", "health"]
LEVELS = ["1", "2", "3", "4", "5"]


def make(client: TestClient, task_type: str, classes: list[str], **extra: object) -> str:
    name = f"imp-{uuid.uuid4().hex[:10]}"
    body = {"name": name, "classes": classes, "task_type": task_type, **extra}
    assert client.post("/v1/projects", json=body).status_code == 201
    return name


def stored_sets(database_url: str, project: str) -> dict[tuple[str, str], set[str]]:
    rows = vote_rows(database_url, project, "ticks")
    return {(i, w): {TOPICS[k] for k in ticks} for i, w, ticks in rows}


def stored_levels(database_url: str, project: str) -> dict[tuple[str, str], str]:
    return {(i, w): LEVELS[k] for i, w, k in vote_rows(database_url, project)}


SET_ROWS = [
    ("i1", "w1", '["sports", "tech"]'),  # a JSON list, as the raw-vote CSV export writes it
    ("i1", "w2", "sports;tech"),  # names joined by ';'
    ("i1", "w3", " health ; 1 "),  # spaces around, and an index
    ("i2", "w1", ""),  # none apply
    ("i2", "w2", "[]"),
    ("i2", "w3", "politics"),
    ("i3", "w1", "[0, 3]"),
]
SET_WANT = {
    ("i1", "w1"): {"sports", "tech"},
    ("i1", "w2"): {"sports", "tech"},
    ("i1", "w3"): {"health", "politics"},
    ("i2", "w1"): set(),
    ("i2", "w2"): set(),
    ("i2", "w3"): {"politics"},
    ("i3", "w1"): {"sports", "health"},
}


def test_import_votes_takes_sets(client: TestClient, database_url: str, tmp_path: Path) -> None:
    project = make(client, "multi_label", TOPICS)
    path = tmp_path / "sets.csv"
    write_votes(path, SET_ROWS)
    r = cli(database_url, "import-votes", str(path), "--project", project)
    assert r.returncode == 0, r.stderr
    assert stored_sets(database_url, project) == SET_WANT
    assert_ticks_recount(database_url, project)
    # Our own raw-vote CSV export reads back as the same votes.
    export = client.get(f"/v1/projects/{project}/votes/export", params={"format": "csv"})
    copy = make(client, "multi_label", TOPICS)
    (tmp_path / "export.csv").write_bytes(export.content)
    r = cli(database_url, "import-votes", str(tmp_path / "export.csv"), "--project", copy)
    assert r.returncode == 0, r.stderr
    assert stored_sets(database_url, copy) == SET_WANT


def test_import_votes_bad_set_cells_name_their_line(
    client: TestClient, database_url: str, tmp_path: Path
) -> None:
    project = make(client, "multi_label", TOPICS)
    path = tmp_path / "bad.csv"
    for cell, reason in [
        ('["sports", ', "not a JSON list"),
        ("sports;;tech", "empty class name"),
        ("sports;cooking", "unknown class 'cooking'"),
        ("[true]", "JSON list of class names"),
    ]:
        write_votes(path, [("i1", "w1", "sports"), ("i2", "w1", cell)])
        r = cli(database_url, "import-votes", str(path), "--project", project)
        assert r.returncode == 1, (cell, r.stderr)
        assert "line 3" in r.stderr and reason in r.stderr, (cell, r.stderr)
        assert stored_sets(database_url, project) == {}  # nothing of the bad batch


def test_import_votes_takes_ratings(client: TestClient, database_url: str, tmp_path: Path) -> None:
    project = make(client, "ordinal", LEVELS, level_values=[0, 25, 50, 75, 100])
    path = tmp_path / "ratings.csv"
    # A level's name, its value (50 is level "3"; 100.0 is "5"), its index (0 is "1").
    write_votes(path, [("a", "w1", "3"), ("a", "w2", "50"), ("a", "w3", "100.0"), ("b", "w1", "0")])
    r = cli(database_url, "import-votes", str(path), "--project", project)
    assert r.returncode == 0, r.stderr
    assert stored_levels(database_url, project) == {
        ("a", "w1"): "3",
        ("a", "w2"): "3",
        ("a", "w3"): "5",
        ("b", "w1"): "1",
    }
    write_votes(path, [("c", "w1", "2"), ("c", "w2", "60")])
    r = cli(database_url, "import-votes", str(path), "--project", project)
    assert r.returncode == 1 and "line 3" in r.stderr and "scale" in r.stderr, r.stderr
    assert ("c", "w1") not in stored_levels(database_url, project)


def test_http_crowdkit_sets_and_ratings(client: TestClient, database_url: str) -> None:
    project = make(client, "multi_label", TOPICS)
    body = 'task,worker,label\nt1,w1,sports;tech\nt1,w2,"[""health""]"\nt2,w1,\n'
    r = client.post(f"/v1/projects/{project}/imports/crowdkit", content=body)
    assert r.status_code == 200 and r.json()["inserted"] == 3, r.text
    assert stored_sets(database_url, project) == {
        ("t1", "w1"): {"sports", "tech"},
        ("t1", "w2"): {"health"},
        ("t2", "w1"): set(),
    }
    bad = "task,worker,label\nt3,w1,tech\nt3,w2,[tech\nt3,w3,sports;golf\n"
    r = client.post(f"/v1/projects/{project}/imports/crowdkit", content=bad)
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert errors[0]["field"] == "line 3.label" and "JSON" in errors[0]["reason"]
    assert errors[1]["field"] == "line 4.label[1]" and "golf" in errors[1]["reason"]
    assert ("t3", "w1") not in stored_sets(database_url, project)  # all or nothing

    scale = make(client, "ordinal", LEVELS, level_values=[-2, -1, 0, 1, 2])
    body = "task,worker,label\nt1,w1,-2\nt1,w2,4\nt1,w3,1.0\n"
    r = client.post(f"/v1/projects/{scale}/imports/crowdkit", content=body)
    assert r.status_code == 200, r.text
    # -2 and 1.0 are values; 4 is the level named "4".
    assert stored_levels(database_url, scale) == {
        ("t1", "w1"): "1",
        ("t1", "w2"): "4",
        ("t1", "w3"): "4",
    }
    r = client.post(f"/v1/projects/{scale}/imports/crowdkit", content="task,worker,label\nx,w,9\n")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "line 2.label", r.text


def test_http_peerannot_and_prodigy_sets(client: TestClient, database_url: str) -> None:
    project = make(client, "multi_label", TOPICS)
    answers = {"t1": {"w1": [0, 2], "w2": ["health"], "w3": []}}
    r = client.post(f"/v1/projects/{project}/imports/peerannot", content=json.dumps(answers))
    assert r.status_code == 200, r.text
    assert stored_sets(database_url, project) == {
        ("t1", "w1"): {"sports", "tech"},
        ("t1", "w2"): {"health"},
        ("t1", "w3"): set(),
    }
    r = client.post(
        f"/v1/projects/{project}/imports/peerannot",
        content=json.dumps({"t2": {"w1": [0, None]}}),
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "t2.w1", r.text

    options = [{"id": c, "text": c} for c in TOPICS]
    lines = [
        {"ref": "p1", "_annotator_id": "a", "options": options, "accept": ["tech", "health"]},
        {"ref": "p1", "_annotator_id": "b", "options": options, "accept": []},  # none apply
        {"ref": "p2", "_annotator_id": "a", "options": options, "accept": ["golf"]},
    ]
    for line in lines:
        line["answer"] = "accept"
    jsonl = "\n".join(json.dumps(x) for x in lines)
    url = f"/v1/projects/{project}/imports/prodigy"
    r = client.post(url, content=jsonl, params={"item_field": "ref"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "line 3.accept[0]", r.text
    r = client.post(url, content="\n".join(jsonl.splitlines()[:2]), params={"item_field": "ref"})
    assert r.status_code == 200, r.text
    got = stored_sets(database_url, project)
    assert got[("p1", "a")] == {"tech", "health"} and got[("p1", "b")] == set()
    # On a single-choice project two picks are still refused, naming the list.
    single = f"imp-{uuid.uuid4().hex[:10]}"
    assert client.post("/v1/projects", json={"name": single, "classes": TOPICS}).status_code == 201
    r = client.post(
        f"/v1/projects/{single}/imports/prodigy",
        content=jsonl.splitlines()[0],
        params={"item_field": "ref"},
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "line 1.accept", r.text
