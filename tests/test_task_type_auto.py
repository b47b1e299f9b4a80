"""`method=auto` and GET /methods/compare on multi-label and ordinal projects, over HTTP.

Each candidate's score is recomputed here from the pure per-type classes (multilabel.py,
ordinal.py, the single-label Dawid-Skene) on the same held-out split; on the shared real crowds,
auto's pick must be the method that predicts held-out annotators best in
benchmarks/results/task_types.json (ANAD for scales, MER for multi-label), or be reported as
indistinguishable from it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.aggregation import multilabel, ordinal
from app.aggregation.dawid_skene import DawidSkene
from app.aggregation.select import split_votes
from app.aggregation.votes import VoteArrays
from tests.helpers import REPO, post_votes, require_reference
from tests.task_type_crowds import (
    Crowd,
    load_real,
    real_path,
    simulate_multilabel,
    simulate_ordinal,
)

TOPICS = ["sports", "politics", "tech", "health"]
LEVELS = ["1", "2", "3", "4", "5"]


def make(client: TestClient, task_type: str, classes: list[str]) -> str:
    name = f"auto-{uuid.uuid4().hex[:12]}"
    r = client.post("/v1/projects", json={"name": name, "classes": classes, "task_type": task_type})
    assert r.status_code == 201, r.text
    return name


def sorted_dense(crowd: Crowd) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """The crowd's votes as the service indexes them (items and workers with votes, in external
    id order) and in the (item, worker) order auto splits them in; the third array is the
    vote's position in the crowd."""
    _, item = np.unique(crowd.item, return_inverse=True)
    _, worker = np.unique(crowd.worker, return_inverse=True)
    order = np.lexsort((worker, item))
    return item[order], worker[order], order, int(item.max()) + 1, int(worker.max()) + 1


def post_crowd(client: TestClient, crowd: Crowd, task_type: str, classes: list[str]) -> str:
    name = make(client, task_type, classes)
    _, item = np.unique(crowd.item, return_inverse=True)
    _, worker = np.unique(crowd.worker, return_inverse=True)
    if crowd.ticks is not None:
        labels: list[object] = [[classes[k] for k in np.flatnonzero(t)] for t in crowd.ticks]
    else:
        assert crowd.level is not None
        labels = [classes[lv] for lv in crowd.level]
    votes = [
        {"item": f"i{i:05d}", "worker": f"w{w:03d}", "label": lab}
        for i, w, lab in zip(item, worker, labels, strict=True)
    ]
    for start in range(0, len(votes), 5000):
        post_votes(client, name, votes[start : start + 5000])
    return name


def compare(client: TestClient, project: str, **params: object) -> dict:
    r = client.get(f"/v1/projects/{project}/methods/compare", params=params)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def log_lik(p: np.ndarray) -> float:
    return float(np.log(np.maximum(p, 1e-10)).mean())


# ----- multi-label ------------------------------------------------------------------------------


def test_multi_label_compare_scores_each_method_on_held_out_sets(client: TestClient) -> None:
    crowd = simulate_multilabel(11, n_items=60, n_workers=10, n_classes=4, per_item=4).crowd
    project = post_crowd(client, crowd, "multi_label", TOPICS)
    body = compare(client, project, holdout=0.3, seed=5)
    assert body["criterion"] == "held-out tick log-likelihood"
    got = {c["method"]: c for c in body["candidates"]}
    assert list(got) == ["normalized", "softmax", "binary-relevance", "tick-propensity"]
    assert {m: c["predicts"] for m, c in got.items()} == {
        "normalized": "item",
        "softmax": "item",
        "binary-relevance": "worker",
        "tick-propensity": "worker",
    }
    # The same split, recomputed from the pure classes: the log probability of each held-out
    # set, classes independent given the item.
    item, worker, order, n_items, n_workers = sorted_dense(crowd)
    assert crowd.ticks is not None
    ticks = crowd.ticks[order]
    split = VoteArrays(item, worker, np.zeros_like(item), n_items, n_workers, 4)
    _, held = split_votes(split, 0.3, 5)
    keep = np.ones(item.size, dtype=bool)
    keep[held] = False
    for name, model in (
        ("normalized", multilabel.MultiLabelNormalized()),
        ("softmax", multilabel.MultiLabelSoftmax()),
        ("binary-relevance", multilabel.BinaryRelevance()),
        ("tick-propensity", multilabel.TickPropensity()),
    ):
        fit = model.fit(item[keep], worker[keep], ticks[keep], n_items, n_workers)
        p = fit.predict_ticks(item[held], worker[held])
        per_vote = np.log(np.maximum(np.where(ticks[held], p, 1 - p), 1e-10)).sum(axis=1)
        assert got[name]["score"] == pytest.approx(per_vote.mean(), rel=1e-6), name
    best = max(got, key=lambda m: got[m]["score"])
    assert body["chosen"] == best and got[best]["std_err"] == 0.0
    assert body["decided"] == (body["indistinguishable"] == [])
    # method=auto serves the chosen method's soft labels and each annotator's view.
    auto = client.get(f"/v1/projects/{project}/items/i00003/soft-label?method=auto").json()
    chosen = client.get(f"/v1/projects/{project}/items/i00003/soft-label?method={best}").json()
    assert auto["probs"] == pytest.approx(chosen["probs"], abs=1e-9)
    view = f"/v1/projects/{project}/items/i00003/workers/w001/prediction"
    auto = client.get(view, params={"method": "auto"}).json()
    chosen = client.get(view, params={"method": best}).json()
    assert auto["probs"] == pytest.approx(chosen["probs"], abs=1e-9)
    assert auto["model"] == chosen["model"]


def test_auto_parameters_are_checked_per_type(client: TestClient) -> None:
    crowd = simulate_multilabel(2, n_items=10, n_workers=4, n_classes=4, per_item=3).crowd
    project = post_crowd(client, crowd, "multi_label", TOPICS)
    r = client.get(f"/v1/projects/{project}/methods/compare", params={"use_gold": 1})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "use_gold", r.text
    r = client.get(f"/v1/projects/{project}/methods/compare", params={"holdout": 1})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "holdout", r.text


# ----- ordinal ----------------------------------------------------------------------------------


def _ds(item: np.ndarray, worker: np.ndarray, level: np.ndarray, n: int, m: int) -> Callable:
    ds = DawidSkene().fit(VoteArrays(item, worker, level, n, m, 5))
    return lambda i, w: np.einsum("jc,jck->jk", ds.probas_[i], ds.confusions_[w])


def test_ordinal_compare_scores_each_method_on_held_out_levels(client: TestClient) -> None:
    crowd = simulate_ordinal(4, n_items=60, n_workers=10, n_levels=5, per_item=4).crowd
    project = post_crowd(client, crowd, "ordinal", LEVELS)
    body = compare(client, project)
    assert body["criterion"] == "held-out level log-likelihood"
    got = {c["method"]: c for c in body["candidates"]}
    assert list(got) == ["normalized", "softmax", "distance-smoothed", "dawid-skene", "rater-bias"]
    assert got["rater-bias"]["predicts"] == "worker" and got["softmax"]["predicts"] == "item"
    item, worker, order, n, m = sorted_dense(crowd)
    assert crowd.level is not None
    level = crowd.level[order]
    _, held = split_votes(VoteArrays(item, worker, level, n, m, 5), 0.2, 0)
    keep = np.ones(item.size, dtype=bool)
    keep[held] = False
    a = (item[keep], worker[keep], level[keep], n, m)
    predict: dict[str, Callable] = {
        "normalized": ordinal.OrdinalNormalized().fit(*a, 5).predict_answers,
        "softmax": ordinal.OrdinalSoftmax().fit(*a, 5).predict_answers,
        "distance-smoothed": ordinal.OrdinalSmoothed().fit(*a, 5).predict_answers,
        "dawid-skene": _ds(*a),
        "rater-bias": ordinal.RaterModel().fit(*a, 5).predict_answers,
    }
    for name, f in predict.items():
        p = f(item[held], worker[held])[np.arange(held.size), level[held]]
        assert got[name]["score"] == pytest.approx(log_lik(p), rel=1e-5), name
    assert body["chosen"] == max(got, key=lambda k: got[k]["score"])
    # The comparison is auto's cached fit: a second call gives the same answer.
    assert compare(client, project) == body


# ----- the shared real crowds against the benchmark ---------------------------------------------

# The benchmark's rows that are API methods (majority and the moments rater model are not).
BENCH_NAMES = {
    "item-distribution (= normalized)": "normalized",
    "softmax (T=1)": "softmax",
    "distance-smoothed (h=1)": "distance-smoothed",
    "dawid-skene (levels, unordered)": "dawid-skene",
    "rater-bias (likelihood)": "rater-bias",
    "binary-relevance (DS)": "binary-relevance",
    "tick-propensity": "tick-propensity",
}


def benchmark_best(crowd: str, score: str) -> str:
    rows = json.loads((REPO / "benchmarks" / "results" / "task_types.json").read_text())
    mine = [r for r in rows if r["crowd"] == crowd and r["method"] in BENCH_NAMES]
    return BENCH_NAMES[min(mine, key=lambda r: r[score])["method"]]


@pytest.mark.parametrize(
    ("crowd", "score"),
    [("convabuse_severity", "anad"), ("paraphrase", "anad"), ("convabuse_type_target", "mer")],
)
def test_auto_picks_what_predicts_held_out_annotators_best(
    client: TestClient, crowd: str, score: str
) -> None:
    require_reference(real_path(crowd).exists(), f"{real_path(crowd)} (shared/data/task-types)")
    real = load_real(crowd)
    if real.ticks is not None:
        project = post_crowd(client, real, "multi_label", list(real.classes))
    else:
        assert real.values is not None
        project = post_crowd(client, real, "ordinal", [str(int(v)) for v in real.values])
    body = compare(client, project)
    best = benchmark_best(crowd, score)
    assert best in [body["chosen"], *body["indistinguishable"]], (best, body)
    if body["chosen"] != best:  # then the response says it cannot tell them apart
        assert not body["decided"] and "cannot tell" in body["note"]
        assert "gold" not in body["note"]  # no gold criterion for these types
