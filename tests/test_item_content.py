"""Items carry their content (text, an uploaded image, or an image URL) beside their votes: the
API stores and returns it, refuses what is not content, and the Label Studio connector stores
the mapped task data field with each annotation."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from typing import Any

from fastapi.testclient import TestClient

from tests.helpers import FIXTURES, db_rows


def png(width: int = 2, height: int = 2, rgb: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    """A real PNG file (8-bit RGB), written by hand so no imaging library is needed here."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def post_items(client: TestClient, project: str, items: list[dict[str, Any]]) -> Any:
    return client.post(f"/v1/projects/{project}/items", json={"items": items})


def test_text_and_image_round_trip(client: TestClient, project: str) -> None:
    image = png()
    r = post_items(
        client,
        project,
        [
            {"id": "t1", "text": "a short text"},
            {"id": "i1", "image": b64(image)},
            {"id": "u1", "image_url": "https://example.org/cat.jpg"},
        ],
    )
    assert r.status_code == 200, r.text
    t1 = client.get(f"/v1/projects/{project}/items/t1").json()
    assert (t1["text"], t1["image"], t1["image_url"]) == ("a short text", None, None)
    i1 = client.get(f"/v1/projects/{project}/items/i1").json()
    assert i1["text"] is None and i1["image"].endswith(f"/v1/projects/{project}/items/i1/image")
    got = client.get(f"/v1/projects/{project}/items/i1/image")
    assert got.status_code == 200
    assert got.content == image and got.headers["content-type"] == "image/png"
    u1 = client.get(f"/v1/projects/{project}/items/u1").json()
    assert u1["image_url"] == "https://example.org/cat.jpg" and u1["image"] is None
    assert client.get(f"/v1/projects/{project}/items/t1/image").status_code == 404


def test_fields_not_sent_are_kept_and_a_new_image_replaces_the_url(
    client: TestClient, project: str
) -> None:
    assert (
        post_items(
            client, project, [{"id": "x", "text": "first", "image_url": "https://e.org/a.png"}]
        ).status_code
        == 200
    )
    assert post_items(client, project, [{"id": "x", "gold": 0}]).status_code == 200
    x = client.get(f"/v1/projects/{project}/items/x").json()
    assert (x["text"], x["image_url"]) == ("first", "https://e.org/a.png")
    assert post_items(client, project, [{"id": "x", "image": b64(png())}]).status_code == 200
    x = client.get(f"/v1/projects/{project}/items/x").json()
    assert x["text"] == "first" and x["image_url"] is None and x["image"] is not None
    # Clearing every field removes the content row.
    clear = [{"id": "x", "text": None, "image": None}]
    assert post_items(client, project, clear).status_code == 200
    x = client.get(f"/v1/projects/{project}/items/x").json()
    assert (x["text"], x["image"], x["image_url"]) == (None, None, None)


def test_content_that_is_not_content_is_422_naming_the_row(
    client: TestClient, project: str, database_url: str
) -> None:
    cases = [
        ({"id": "a", "image": "not base64!"}, "image", "base64"),
        ({"id": "a", "image": b64(b"GIF8 but not really an image")}, "image", "PNG, JPEG"),
        ({"id": "a", "image_url": "file:///etc/passwd"}, "image_url", "http"),
        (
            {"id": "a", "image": b64(png()), "image_url": "https://e.org/a.png"},
            "image_url",
            "not both",
        ),
        ({"id": "a", "text": "nul \x00 inside"}, "text", "NUL"),
    ]
    for row, field, words in cases:
        r = post_items(client, project, [{"id": "ok", "text": "fine"}, row])
        assert r.status_code == 422, (row, r.text)
        errors = r.json()["errors"]
        assert any(field in e["field"] and words in e["reason"] for e in errors), (row, errors)
    # All or nothing: the good row of each refused batch was not stored either.
    assert db_rows(
        database_url,
        "SELECT count(*) FROM items i JOIN projects p ON p.id = i.project_id WHERE p.name = %s",
        project,
    ) == [(0,)]


def test_label_studio_events_store_the_task_text(client: TestClient) -> None:
    name = "ls-content"
    assert (
        client.post(
            "/v1/projects", json={"name": name, "classes": ["pos", "neg", "neu"]}
        ).status_code
        == 201
    )
    r = client.put(
        f"/v1/projects/{name}/connectors/label-studio",
        json={"from_name": "sentiment", "item_field": "ref"},
    )
    assert r.status_code == 200, r.text
    for path in sorted((FIXTURES / "label-studio" / "webhooks").glob("*.json"))[:11]:
        body = json.loads(path.read_text())["body"]
        client.post(f"/v1/projects/{name}/connectors/label-studio/events", json=body)
    item = client.get(f"/v1/projects/{name}/items/item-1").json()
    assert item["text"] == "great product" and item["n_votes"] > 0


def test_label_studio_content_field_names_an_image_url(client: TestClient) -> None:
    name = "ls-image"
    assert (
        client.post(
            "/v1/projects", json={"name": name, "classes": ["pos", "neg", "neu"]}
        ).status_code
        == 201
    )
    config = {"from_name": "sentiment", "item_field": "ref", "content_field": "photo"}
    assert (
        client.put(f"/v1/projects/{name}/connectors/label-studio", json=config).status_code == 200
    )
    event = next(
        json.loads(p.read_text())["body"]
        for p in sorted((FIXTURES / "label-studio" / "webhooks").glob("*ANNOTATION_CREATED.json"))
    )
    event["task"]["data"]["photo"] = "/data/upload/1/cat.png"
    r = client.post(f"/v1/projects/{name}/connectors/label-studio/events", json=event)
    assert r.status_code == 200, r.text
    ref = event["task"]["data"]["ref"]
    item = client.get(f"/v1/projects/{name}/items/{ref}").json()
    assert item["image_url"] == "/data/upload/1/cat.png" and item["text"] is None
