"""CSV exports are safe to open in a spreadsheet: a cell led by =, +, -, @, a tab or a CR (OWASP's
CSV injection list) is prefixed with a quote in the soft-label, raw-vote and crowd-kit CSVs,
while JSONL and Parquet keep the ids as they are. Real PostgreSQL, the app over HTTP."""

from __future__ import annotations

import csv
import io
import json

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

DANGEROUS = ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(1)", "\tx", "\rx", "=1"]
SAFE = ["plain", "-5", "a=b", "1.5"]


@pytest.fixture
def tricky(client: TestClient, project: str) -> str:
    votes = [
        {"item": i, "worker": "=w" if n % 2 else "w1", "label": 0}
        for n, i in enumerate(DANGEROUS + SAFE)
    ]
    r = client.post(f"/v1/projects/{project}/votes", json={"votes": votes})
    assert r.status_code == 200, r.text
    return project


def rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def assert_no_formula(cells: list[str]) -> None:
    for cell in cells:
        assert (
            not cell or cell[0] not in "=+-@\t\r" or cell.lstrip("-").replace(".", "").isdigit()
        ), cell


@pytest.mark.parametrize(
    ("path", "params", "item_col", "worker_col"),
    [
        ("soft-labels", {"format": "csv", "method": "normalized"}, 0, None),
        ("votes/export", {"format": "csv"}, 0, 1),
        ("votes/export", {"format": "crowdkit"}, 0, 1),
    ],
)
def test_csv_cells_never_start_a_formula(
    client: TestClient, tricky: str, path: str, params: dict, item_col: int, worker_col: int | None
) -> None:
    r = client.get(f"/v1/projects/{tricky}/{path}", params=params)
    assert r.status_code == 200, r.text
    body = rows(r.text)[1:]
    items = {row[item_col] for row in body}
    assert items == {"'" + i for i in DANGEROUS} | set(SAFE)
    for row in body:
        assert_no_formula(row)
    if worker_col is not None:
        assert {row[worker_col] for row in body} == {"w1", "'=w"}


def test_jsonl_and_parquet_keep_ids_unchanged(client: TestClient, tricky: str) -> None:
    r = client.get(f"/v1/projects/{tricky}/votes/export", params={"format": "jsonl"})
    assert {json.loads(line)["item"] for line in r.text.splitlines()} == set(DANGEROUS + SAFE)
    r = client.get(f"/v1/projects/{tricky}/soft-labels", params={"format": "parquet"})
    assert r.status_code == 200, r.text
    table = pq.read_table(io.BytesIO(r.content))
    assert set(table.column("item").to_pylist()) == set(DANGEROUS + SAFE)
