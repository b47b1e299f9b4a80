"""File imports (CLI `softlabels import <format>` and POST /imports/{format}): Label Studio JSON
and JSON_MIN (the real exports), Argilla records, Prodigy JSONL, crowd-kit CSV, peerannot
answers.json; the duplicate policy; all or nothing."""

from __future__ import annotations

import json
import uuid

import pytest
from fastapi.testclient import TestClient

from tests.helpers import FIXTURES, assert_counts_recount, db_rows, version
from tests.test_cli import cli
from tests.test_connectors_label_studio import FINAL, stored

EXPORTS = FIXTURES / "label-studio" / "exports"


def new_project(client: TestClient, classes: list[str]) -> str:
    name = f"imp-{uuid.uuid4().hex[:10]}"
    assert client.post("/v1/projects", json={"name": name, "classes": classes}).status_code == 201
    return name


@pytest.fixture
def sentiment(client: TestClient) -> str:
    return new_project(client, ["pos", "neg", "neu"])


@pytest.mark.parametrize("export", ["project.json", "project.min.json"])
def test_cli_label_studio_exports(export: str, sentiment: str, database_url: str) -> None:
    args = [
        "import",
        "label-studio",
        str(EXPORTS / export),
        "-p",
        sentiment,
        "--from-name",
        "sentiment",
        "--item-field",
        "ref",
    ]
    r = cli(database_url, *args)
    assert r.returncode == 0, r.stderr
    assert "touched 11 votes" in r.stdout
    assert stored(database_url, sentiment) == FINAL
    assert_counts_recount(database_url, sentiment)
    v = version(database_url, sentiment)
    again = cli(database_url, *args)  # idempotent
    assert again.returncode == 0 and "unchanged 11" in again.stdout, again.stdout
    assert version(database_url, sentiment) == v
    sources = db_rows(
        database_url,
        "SELECT DISTINCT v.source FROM votes v JOIN projects p "
        "ON p.id = v.project_id WHERE p.name = %s",
        sentiment,
    )
    assert sources == [("import",)]


def test_cli_multi_choice_is_refused_with_its_path(client: TestClient, database_url: str) -> None:
    p = new_project(client, ["sports", "tech", "politics"])
    r = cli(
        database_url,
        "import",
        "label-studio",
        str(EXPORTS / "multi.json"),
        "-p",
        p,
        "--from-name",
        "topics",
    )
    assert r.returncode == 1
    assert "[0].annotations[0].result[0].value.choices" in r.stderr
    assert stored(database_url, p) == set()


def test_cli_prodigy_duplicate_policies(sentiment: str, database_url: str) -> None:
    path = str(FIXTURES / "prodigy" / "choice.jsonl")
    base = ["import", "prodigy", path, "-p", sentiment, "--id-field", "ref"]
    r = cli(database_url, *base, "--on-duplicate", "error")
    assert r.returncode == 1 and "line 5.accept[0]" in r.stderr, r.stderr
    assert stored(database_url, sentiment) == set()
    r = cli(database_url, *base, "--on-duplicate", "first")
    assert r.returncode == 0, r.stderr
    assert "7 rows, 1 duplicate" in r.stdout and "2 skipped" in r.stdout
    assert ("item-1", "reviews-bob", "neu") in stored(database_url, sentiment)
    r = cli(database_url, *base)  # default: last
    assert ("item-1", "reviews-bob", "pos") in stored(database_url, sentiment)
    assert stored(database_url, sentiment) == {
        ("item-1", "reviews-alice", "pos"),
        ("item-1", "reviews-bob", "pos"),
        ("item-2", "reviews-alice", "neg"),
        ("item-5", "reviews-carol", "neu"),
    }
    assert_counts_recount(database_url, sentiment)


def test_http_crowdkit_csv(client: TestClient, database_url: str) -> None:
    p = new_project(client, ["cat", "dog"])
    body = "task,worker,label\nt1,w1,cat\nt1,w2,1\nt2,w1,dog\n"
    r = client.post(f"/v1/projects/{p}/imports/crowdkit", content=body)
    assert r.status_code == 200, r.text
    assert r.json()["inserted"] == 3
    assert stored(database_url, p) == {
        ("t1", "w1", "cat"),
        ("t1", "w2", "dog"),
        ("t2", "w1", "dog"),
    }
    bad = "task,worker,label\nt3,w1,cat\nt3,w2,cow\n"
    r = client.post(f"/v1/projects/{p}/imports/crowdkit", content=bad)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "line 3.label"
    assert len(stored(database_url, p)) == 3  # nothing of the bad file
    r = client.post(f"/v1/projects/{p}/imports/crowdkit", content="a,b\n1,2\n")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "header"


def test_http_peerannot_answers(client: TestClient, database_url: str) -> None:
    p = new_project(client, ["a", "b", "c"])
    raw = (FIXTURES / "peerannot" / "answers.json").read_bytes()
    r = client.post(f"/v1/projects/{p}/imports/peerannot", content=raw)
    assert r.status_code == 200, r.text
    want = {
        (t, w, ["a", "b", "c"][k]) for t, ans in json.loads(raw).items() for w, k in ans.items()
    }
    assert stored(database_url, p) == want
    assert_counts_recount(database_url, p)


def test_http_label_studio_needs_from_name(client: TestClient, sentiment: str) -> None:
    raw = (EXPORTS / "project.json").read_bytes()
    r = client.post(f"/v1/projects/{sentiment}/imports/label-studio", content=raw)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "from_name"
    r = client.post(
        f"/v1/projects/{sentiment}/imports/label-studio",
        content=raw,
        params={"from_name": "sentiment", "item_field": "ref"},
    )
    assert r.status_code == 200 and r.json()["inserted"] == 11 and r.json()["skipped"] == 1
    r = client.post(f"/v1/projects/{sentiment}/imports/label-studio", content=b"{not json")
    assert r.status_code == 422


@pytest.mark.parametrize("fmt", ["crowdkit", "peerannot"])
def test_export_then_import_round_trip(client: TestClient, database_url: str, fmt: str) -> None:
    src = new_project(client, ["a", "b", "c"])
    votes = [{"item": f"t{i % 4}", "worker": f"w{i % 3}", "label": i % 3} for i in range(12)]
    r = client.post(f"/v1/projects/{src}/votes", json={"votes": votes})
    assert r.status_code == 200, r.text
    out = client.get(f"/v1/projects/{src}/votes/export", params={"format": fmt})
    assert out.status_code == 200
    if fmt == "peerannot":
        doc = json.loads(out.content)
        assert doc["t0"]["w0"] == 0 and len(doc) == 4
    else:
        assert out.text.splitlines()[0] == "task,worker,label"
    dst = new_project(client, ["a", "b", "c"])
    r = client.post(f"/v1/projects/{dst}/imports/{fmt}", content=out.content)
    assert r.status_code == 200 and r.json()["inserted"] == 12, r.text
    assert stored(database_url, dst) == stored(database_url, src)
