"""The Python client on task types, in-process (the app behind FastAPI's TestClient): a
multi-label and an ordinal project created, fed and read through softlabels_client."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from softlabels_client import Client, SoftlabelsError

from tests.helpers import ADMIN_KEY


@pytest.fixture
def sl(client: TestClient) -> Client:
    c = Client("http://testserver", key=ADMIN_KEY)
    c.http.close()
    c.http = client  # the app in-process: TestClient is an httpx.Client with the admin key
    return c


def test_multi_label_and_ordinal_through_the_client(sl: Client) -> None:
    multi = f"c-{uuid.uuid4().hex[:10]}"
    assert sl.create_project(multi, ["a", "b", "c"], task_type="multi_label")["task_type"] == (
        "multi_label"
    )
    sl.add_votes(multi, [("i", "w1", ["a", "b"]), ("i", "w2", []), ("i", "w3", ["b"])])
    assert sl.soft_label(multi, "i")["probs"] == pytest.approx([1 / 3, 2 / 3, 0])
    view = sl.worker_prediction(multi, "i", "w2")
    assert view["method"] == "tick-propensity" and len(view["probs"]) == 3
    frame = sl.soft_labels(multi, "softmax", temperature=1)
    assert list(frame.columns) == ["item", "n_votes", "gold", "p_a", "p_b", "p_c"]

    scale = f"c-{uuid.uuid4().hex[:10]}"
    sl.create_project(scale, ["low", "mid", "high"], task_type="ordinal", level_values=[0, 5, 10])
    sl.add_votes(scale, [("j", "w1", "low"), ("j", "w2", "high")])
    label = sl.soft_label(scale, "j")
    assert (label["mean"], label["median"], label["spread"]) == (5, 0, 5)
    with pytest.raises(SoftlabelsError) as err:
        sl.soft_label(scale, "j", method="tick-propensity")
    assert err.value.status == 422 and err.value.errors[0]["field"] == "method"
