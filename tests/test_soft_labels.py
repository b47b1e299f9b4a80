"""Soft labels out: the single-item endpoint and the streamed export (JSONL, CSV, Parquet).

Every export row must equal what the single-item endpoint says for that item, for every method,
and both must match the formulas computed here independently from the votes the test sent.
The published CIFAR-10H soft labels are reproduced bit for bit through the API.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.helpers import SHARED_DATA, require_reference

CIFAR10H = SHARED_DATA / "cifar10h"
FORMATS = ("jsonl", "csv", "parquet")
CLASSES = ["cat", "dog", "bird", "fish"]

# Item ids that are awkward in a URL path, a CSV cell or a JSON line.
HOSTILE_IDS = [
    "img/cat 01.jpg",
    '=HYPERLINK("http://x")',
    'quote"and,comma',
    "new\nline",
    "cr\rreturn",
    "ünïcødé-😀",
    " padded ",
    "q?x=1#frag&y=2",
    # No "%": Starlette's TestClient percent-decodes the path a second time (a real server does
    # not), so an id like "a%20b" cannot be sent through it.
]


# --- helpers --------------------------------------------------------------------------------


def label_url(project: str, item: str) -> str:
    return f"/v1/projects/{project}/items/{quote(item, safe='')}/soft-label"


def get_single(client: TestClient, project: str, item: str, params: dict[str, Any]) -> dict:
    r = client.get(label_url(project, item), params=params)
    assert r.status_code == 200, r.text
    return r.json()


def export(client: TestClient, project: str, fmt: str, params: dict[str, Any]) -> bytes:
    r = client.get(f"/v1/projects/{project}/soft-labels", params={**params, "format": fmt})
    assert r.status_code == 200, r.text
    return r.content


def unquote_cell(cell: str) -> str:
    """A CSV cell as stored: exports prefix formula-leading cells with "'" (app/labels/csv_safe.py;
    tests/test_csv_safety.py checks which)."""
    if cell[:1] == "'" and cell[1:2] in ("=", "+", "-", "@", "\t", "\r", "|", "%"):
        return cell[1:].replace("\\|", "|")
    return cell


def parse_export(fmt: str, content: bytes, classes: list[str]) -> dict[str, dict[str, Any]]:
    """Any export format -> {item: {"n_votes", "probs" (None if no votes), "gold"}}, in order."""
    rows: list[dict[str, Any]] = []
    if fmt == "jsonl":
        text = content.decode()
        assert text == "" or text.endswith("\n")
        for line in text.split("\n")[:-1]:
            row = json.loads(line)
            assert set(row) <= {"item", "n_votes", "probs", "gold"}, row
            rows.append({"gold": None, **row})
    elif fmt == "csv":
        reader = csv.reader(io.StringIO(content.decode(), newline=""))
        header = next(reader)
        assert header == ["item", "n_votes", "gold", *(f"p_{c}" for c in classes)], header
        for cells in reader:
            assert len(cells) == 3 + len(classes), cells
            item, n_votes, gold, *probs = cells
            rows.append(
                {
                    "item": unquote_cell(item),
                    "n_votes": int(n_votes),
                    "gold": unquote_cell(gold) or None,
                    "probs": None if probs == [""] * len(classes) else [float(p) for p in probs],
                }
            )
    else:
        table = pq.read_table(io.BytesIO(content))
        assert table.column_names == ["item", "n_votes", "gold", *(f"p_{c}" for c in classes)]
        for rec in table.to_pylist():
            probs = [rec[f"p_{c}"] for c in classes]
            rows.append(
                {
                    "item": rec["item"],
                    "n_votes": rec["n_votes"],
                    "gold": rec["gold"],
                    "probs": None if probs == [None] * len(classes) else probs,
                }
            )
    out = {row.pop("item"): row for row in rows}
    assert len(out) == len(rows), "an item appears twice in the export"
    return out


def expected_probs(method: str, params: dict[str, float], counts: list[int]) -> np.ndarray:
    """The methods' formulas, written out again here (Uma et al. 2020, eqs. 3 and 4)."""
    c = np.asarray(counts, dtype=np.float64)
    k = len(c)
    if method == "normalized":
        a = params.get("alpha", 0.0)
        return (c + a) / (c.sum() + k * a)
    if method == "majority":
        top = (c == c.max()).astype(np.float64)
        return top / top.sum()
    x = c / c.sum() if method == "softmax-normalized" else c
    e = np.exp((x - x.max()) / params.get("temperature", 1.0))
    return e / e.sum()


# --- one project with known votes, shared by the module ---------------------------------------


class Labeled:
    def __init__(self, name: str, counts: dict[str, list[int]], gold: dict[str, str]) -> None:
        self.name, self.counts, self.gold = name, counts, gold

    def n_votes(self, item: str) -> int:
        return sum(self.counts[item])


@pytest.fixture(scope="module")
def small_chunks(settings: Settings) -> Iterator[TestClient]:
    """The API with 7-row export chunks, so every export crosses chunk boundaries (no API keys
    and no rate limit: this module sends hundreds of requests a second)."""
    update = {"export_chunk_rows": 7, "auth": False, "rate_limit_per_s": 0}
    with TestClient(create_app(settings.model_copy(update=update))) as c:
        yield c


@pytest.fixture(scope="module")
def labeled(small_chunks: TestClient) -> Labeled:
    client = small_chunks
    rng = random.Random(20260101)
    name = f"sl-{uuid.uuid4().hex[:12]}"
    r = client.post("/v1/projects", json={"name": name, "classes": CLASSES})
    assert r.status_code == 201, r.text

    sizes = [0, 1, 2, 3, 5, 8, 13, 30]
    ids = HOSTILE_IDS + [f"i{n:02d}" for n in range(32)]
    n_votes = {item: sizes[n % len(sizes)] for n, item in enumerate(ids)}
    n_votes["tie"] = 2  # one vote each for cat and dog: majority splits the mass
    counts = {item: [0] * len(CLASSES) for item in n_votes}
    votes = []
    for item, n in n_votes.items():
        for j in range(n):
            label = rng.randrange(len(CLASSES)) if item != "tie" else j
            counts[item][label] += 1
            # Labels by name and by index both count.
            votes.append(
                {"item": item, "worker": f"w{j}", "label": rng.choice([label, CLASSES[label]])}
            )
    rng.shuffle(votes)

    # Every item exists (zero-vote ones only through /items); some carry a gold label.
    gold = {item: rng.choice(CLASSES) for item in list(counts)[::3]}
    items = [{"id": item, **({"gold": gold[item]} if item in gold else {})} for item in counts]
    r = client.post(f"/v1/projects/{name}/items", json={"items": items})
    assert r.status_code == 200, r.text
    for start in range(0, len(votes), 100):
        r = client.post(f"/v1/projects/{name}/votes", json={"votes": votes[start : start + 100]})
        assert r.status_code == 200, r.text
    assert any(n == 0 for n in n_votes.values()) and any(n >= 13 for n in n_votes.values())
    return Labeled(name, counts, gold)


METHOD_CASES = [
    ("normalized", {}),
    ("normalized", {"alpha": 0.5}),
    ("normalized", {"alpha": 3}),
    ("softmax", {}),
    ("softmax", {"temperature": 0.25}),
    ("softmax-normalized", {}),
    ("softmax-normalized", {"temperature": 0.1}),
    ("majority", {}),
]
DEFAULTS = {
    "normalized": {"alpha": 0.0},
    "softmax": {"temperature": 1.0},
    "softmax-normalized": {"temperature": 1.0},
    "majority": {},
}


@pytest.mark.parametrize(("method", "params"), METHOD_CASES)
def test_exports_agree_with_single_endpoint(
    small_chunks: TestClient, labeled: Labeled, method: str, params: dict[str, float]
) -> None:
    query = {"method": method, **params}
    singles = {item: get_single(small_chunks, labeled.name, item, query) for item in labeled.counts}
    for item, one in singles.items():
        assert one["item"] == item and one["method"] == method and one["classes"] == CLASSES
        assert one["params"] == {**DEFAULTS[method], **params}
        assert one["n_votes"] == labeled.n_votes(item)
        assert one["gold"] == labeled.gold.get(item)
        if one["n_votes"] == 0:
            assert one["probs"] is None
        else:
            want = expected_probs(method, params, labeled.counts[item])
            np.testing.assert_allclose(one["probs"], want, rtol=1e-12, atol=0, err_msg=repr(item))
            assert abs(sum(one["probs"]) - 1.0) < 1e-12

    voted = [item for item in labeled.counts if labeled.n_votes(item) >= 1]
    for fmt in FORMATS:
        rows = parse_export(fmt, export(small_chunks, labeled.name, fmt, query), CLASSES)
        assert set(rows) == set(voted), fmt  # min_votes defaults to 1
        for item, row in rows.items():
            one = singles[item]
            # Exact: every format carries float64 losslessly.
            assert row == {k: one[k] for k in ("n_votes", "probs", "gold")}, (fmt, item)
    if method == "majority":
        tie = get_single(small_chunks, labeled.name, "tie", query)["probs"]
        assert tie == [0.5, 0.5, 0.0, 0.0]


@pytest.mark.parametrize("min_votes", [0, 1, 3, 13, 31])
def test_min_votes_filters(small_chunks: TestClient, labeled: Labeled, min_votes: int) -> None:
    keep = {item for item in labeled.counts if labeled.n_votes(item) >= min_votes}
    for fmt in FORMATS:
        content = export(small_chunks, labeled.name, fmt, {"min_votes": min_votes})
        rows = parse_export(fmt, content, CLASSES)
        assert set(rows) == keep, fmt
        for item, row in rows.items():
            assert row["n_votes"] == labeled.n_votes(item)
            # An item without votes has no distribution, in every format, as on its own.
            assert (row["probs"] is None) == (row["n_votes"] == 0), (fmt, item)
    if not keep:
        assert export(small_chunks, labeled.name, "jsonl", {"min_votes": min_votes}) == b""


def test_item_without_votes_is_null(client: TestClient, project: str) -> None:
    r = client.post(f"/v1/projects/{project}/items", json={"items": [{"id": "lonely", "gold": 1}]})
    assert r.status_code == 200, r.text
    body = get_single(client, project, "lonely", {})
    assert body["probs"] is None and body["n_votes"] == 0 and body["gold"] == "dog"
    assert get_single(client, project, "lonely", {"method": "majority"})["probs"] is None
    # Not in the default export (min_votes=1); in it with min_votes=0, still without probs.
    assert export(client, project, "jsonl", {}) == b""
    line = json.loads(export(client, project, "jsonl", {"min_votes": 0}))
    assert line == {"item": "lonely", "n_votes": 0, "probs": None, "gold": "dog"}


def test_unknown_project_or_item_is_404(client: TestClient, project: str) -> None:
    for url in (
        "/v1/projects/no-such-project/items/a/soft-label",
        "/v1/projects/no-such-project/soft-labels",
        f"/v1/projects/{project}/items/no-such-item/soft-label",
        f"/v1/projects/{project}/items/{quote('no/such item', safe='')}/soft-label",
    ):
        r = client.get(url)
        assert r.status_code == 404, (url, r.text)
        assert r.json()["error"] == "not_found"
    assert (
        "no-such-item"
        in client.get(f"/v1/projects/{project}/items/no-such-item/soft-label").json()["detail"]
    )


BAD_QUERIES = [
    ({"method": "mean"}, "method"),
    ({"method": ""}, "method"),
    ({"alpha": "-1"}, "alpha"),
    ({"alpha": "abc"}, "alpha"),
    ({"alpha": "nan"}, "alpha"),
    ({"alpha": "inf"}, "alpha"),
    ({"method": "softmax", "temperature": "0"}, "temperature"),
    ({"method": "softmax", "temperature": "-2"}, "temperature"),
    ({"method": "softmax-normalized", "temperature": "1e999"}, "temperature"),
    ({"method": "normalized", "temperature": "2"}, "temperature"),  # does not apply
    ({"method": "softmax", "alpha": "1"}, "alpha"),  # does not apply
    ({"method": "majority", "alpha": "0"}, "alpha"),  # does not apply
    ({"beta": "1"}, "beta"),  # unknown
    ({"method": "majority", "Method": "x"}, "Method"),  # names are case-sensitive
]


@pytest.mark.parametrize("where", ["single", "export"])
@pytest.mark.parametrize(("query", "field"), BAD_QUERIES)
def test_bad_query_is_422(
    client: TestClient, project: str, where: str, query: dict[str, str], field: str
) -> None:
    r = client.post(
        f"/v1/projects/{project}/votes", json={"votes": [{"item": "a", "worker": "w", "label": 0}]}
    )
    assert r.status_code == 200
    url = (
        f"/v1/projects/{project}/items/a/soft-label"
        if where == "single"
        else f"/v1/projects/{project}/soft-labels"
    )
    r = client.get(url, params=query)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "validation_error"
    assert field in [e["field"] for e in body["errors"]], body


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"format": "xml"}, "format"),
        ({"min_votes": "-1"}, "min_votes"),
        ({"min_votes": "two"}, "min_votes"),
        ({"min_votes": str(2**31)}, "min_votes"),
    ],
)
def test_bad_export_query_is_422(
    client: TestClient, project: str, query: dict[str, str], field: str
) -> None:
    r = client.get(f"/v1/projects/{project}/soft-labels", params=query)
    assert r.status_code == 422, r.text
    assert field in [e["field"] for e in r.json()["errors"]], r.json()


def test_hostile_class_names_round_trip(client: TestClient, database_url: str) -> None:
    classes = [
        "a,b",
        'say "hi"',
        "line\nbreak",
        "cr\rreturn",
        "=SUM(A1:A9)",
        "+1",
        "@cmd",
        "-2",
        "ünï 😀",
        " padded ",
        "gold",
        "item",
        "n_votes",
        "p_cat",
        "1",
    ]
    name = f"hostile-{uuid.uuid4().hex[:8]}"
    r = client.post("/v1/projects", json={"name": name, "classes": classes})
    assert r.status_code == 201, r.text
    r = client.post(
        f"/v1/projects/{name}/items",
        json={"items": [{"id": f"x{k}", "gold": c} for k, c in enumerate(classes)]},
    )
    assert r.status_code == 200, r.text
    # Item xk gets k+1 votes for class k and one for class 0 (by name), so each has a clear shape.
    votes = [
        {"item": f"x{k}", "worker": f"w{j}", "label": c}
        for k, c in enumerate(classes)
        for j in range(k + 1)
    ]
    votes += [
        {"item": f"x{k}", "worker": "extra", "label": classes[0]} for k in range(len(classes))
    ]
    r = client.post(f"/v1/projects/{name}/votes", json={"votes": votes})
    assert r.status_code == 200, r.text

    singles = {f"x{k}": get_single(client, name, f"x{k}", {}) for k in range(len(classes))}
    for k, c in enumerate(classes):
        one = singles[f"x{k}"]
        assert one["classes"] == classes and one["gold"] == c
        counts = [0] * len(classes)
        counts[k] += k + 1
        counts[0] += 1
        assert one["probs"] == (np.asarray(counts) / sum(counts)).tolist()
    for fmt in FORMATS:
        content = export(client, name, fmt, {})
        rows = parse_export(fmt, content, classes)  # checks the header / column names
        assert rows == {
            item: {k: one[k] for k in ("n_votes", "probs", "gold")} for item, one in singles.items()
        }, fmt
    # In the CSV header every class cell starts with "p_", never with a formula character.
    header = next(csv.reader(io.StringIO(export(client, name, "csv", {}).decode(), newline="")))
    assert all(cell.startswith("p_") for cell in header[3:])


@pytest.mark.parametrize("fmt", FORMATS)
def test_content_disposition_names_a_file(client: TestClient, project: str, fmt: str) -> None:
    client.post(
        f"/v1/projects/{project}/votes", json={"votes": [{"item": "a", "worker": "w", "label": 0}]}
    )
    r = client.get(
        f"/v1/projects/{project}/soft-labels", params={"format": fmt, "method": "softmax"}
    )
    assert r.status_code == 200
    disposition = r.headers["content-disposition"]
    match = re.fullmatch(r'attachment; filename="([^"/\\]+)"', disposition)
    assert match, disposition
    filename = match.group(1)
    assert filename.endswith(f".{fmt}") and project in filename and "softmax" in filename
    media = {
        "jsonl": "application/x-ndjson",
        "csv": "text/csv",
        "parquet": "application/vnd.apache.parquet",
    }[fmt]
    assert r.headers["content-type"].startswith(media)


# --- CIFAR-10H -------------------------------------------------------------------------------


def cifar_votes(counts: np.ndarray, item_ids: list[str]) -> Iterator[dict[str, Any]]:
    """Votes with the given per-image class counts; worker j casts an image's j-th vote."""
    for item, row in zip(item_ids, counts.tolist(), strict=True):
        j = 0
        for label, n in enumerate(row):
            for _ in range(n):
                yield {"item": item, "worker": f"w{j}", "label": label}
                j += 1


@pytest.mark.slow
@pytest.mark.timeout(1200)  # 511k votes through the API on a 2-core machine
def test_cifar10h_soft_labels_reproduced(client: TestClient) -> None:
    """511,000 votes in through the API; the export equals the published soft labels exactly."""
    require_reference(
        (CIFAR10H / "counts.npy").exists(),
        f"CIFAR-10H counts.npy in {CIFAR10H} (../shared/data beside the clone)",
    )
    counts = np.load(CIFAR10H / "counts.npy")
    probs = np.load(CIFAR10H / "probs.npy")
    gold = np.load(CIFAR10H / "cifar10_test_labels.npy")
    classes = (CIFAR10H / "classes.txt").read_text().split()
    assert counts.shape == probs.shape == (10_000, 10) and len(classes) == 10

    name = f"cifar10h-{uuid.uuid4().hex[:8]}"
    r = client.post("/v1/projects", json={"name": name, "classes": classes})
    assert r.status_code == 201, r.text
    item_ids = [f"test-{i:05d}" for i in range(len(counts))]
    r = client.post(
        f"/v1/projects/{name}/items",
        json={"items": [{"id": i, "gold": int(g)} for i, g in zip(item_ids, gold, strict=True)]},
    )
    assert r.status_code == 200, r.text

    votes = list(cifar_votes(counts, item_ids))
    assert len(votes) == counts.sum() == 511_000
    inserted = 0
    # Batches of 10,000: the one-call ingest function is slow on 50k batches (README, Benchmarks:
    # bulk ingest); this test is about the labels, not bulk speed.
    for start in range(0, len(votes), 10_000):
        body = json.dumps({"votes": votes[start : start + 10_000]}).encode()
        r = client.post(
            f"/v1/projects/{name}/votes", content=body, headers={"content-type": "application/json"}
        )
        assert r.status_code == 200, r.text
        inserted += r.json()["inserted"]
    assert inserted == 511_000

    rows = parse_export("jsonl", export(client, name, "jsonl", {"method": "normalized"}), classes)
    assert list(rows) == item_ids
    got = np.array([rows[i]["probs"] for i in item_ids], dtype=np.float64)
    assert float(np.abs(got - probs).max()) == 0.0
    assert np.array_equal(got, probs)
    assert [rows[i]["n_votes"] for i in item_ids] == counts.sum(axis=1).tolist()
    assert [rows[i]["gold"] for i in item_ids] == [classes[g] for g in gold.tolist()]
    # Spot-check the single endpoint on the three images with a tied top count and a few more.
    ties = np.flatnonzero((counts == counts.max(axis=1, keepdims=True)).sum(axis=1) > 1)
    for i in [*ties.tolist(), 0, 4_999, 9_999]:
        one = get_single(client, name, item_ids[i], {})
        assert one["probs"] == probs[i].tolist() and one["n_votes"] == counts[i].sum()
