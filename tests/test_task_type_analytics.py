"""/stats, /workers and /items/next on multi-label and ordinal projects, over HTTP: Krippendorff's
alpha against the `krippendorff` package (ordinal metric; a Jaccard distance given to it as a
callable over sets written as bit masks), each worker's agreement and per-class rates against
hand computations, the chance screen on a worker who answers at random, and routing by per-class
uncertainty."""

from __future__ import annotations

import uuid

import krippendorff
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.aggregation import multilabel
from tests.helpers import post_votes

TOPICS = ["sports", "politics", "tech", "health"]
LEVELS = ["1", "2", "3", "4", "5"]


def make(client: TestClient, task_type: str, classes: list[str]) -> str:
    name = f"an-{uuid.uuid4().hex[:12]}"
    r = client.post("/v1/projects", json={"name": name, "classes": classes, "task_type": task_type})
    assert r.status_code == 201, r.text
    return name


def get(client: TestClient, project: str, path: str, **params: object) -> dict:
    r = client.get(f"/v1/projects/{project}/{path}", params=params)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def jaccard_sim(a: frozenset, b: frozenset) -> float:
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def bits(s: frozenset) -> int:
    return sum(1 << TOPICS.index(c) for c in s)


def jaccard_metric(v1, v2, i1, i2, n_v, dtype=np.float64):  # type: ignore[no-untyped-def]
    """The krippendorff package's metric protocol: element-wise over two arrays of values."""
    a, b = np.broadcast_arrays(np.asarray(v1, np.int64), np.asarray(v2, np.int64))
    count = np.vectorize(lambda x: bin(int(x)).count("1"))
    inter, union = count(a & b), count(a | b)
    return np.where(union > 0, 1.0 - inter / np.maximum(union, 1), 0.0).astype(dtype)


@pytest.fixture(scope="module")
def sets_crowd() -> dict[tuple[str, str], frozenset]:
    """Five careful workers tick the item's topics with a slip now and then; `rand` ticks each
    topic by a coin flip, whatever the item."""
    rng = np.random.default_rng(7)
    votes = {}
    for i in range(40):
        truth = rng.random(4) < 0.35
        for w in rng.choice(5, size=3, replace=False):
            slip = rng.random(4) < 0.08
            votes[(f"i{i:02d}", f"w{w}")] = frozenset(np.array(TOPICS)[truth ^ slip])
        votes[(f"i{i:02d}", "rand")] = frozenset(np.array(TOPICS)[rng.random(4) < 0.5])
    return votes


@pytest.fixture(scope="module")
def sets_project(client: TestClient, sets_crowd: dict) -> str:
    name = make(client, "multi_label", TOPICS)
    post_votes(
        client,
        name,
        [{"item": i, "worker": w, "label": sorted(s)} for (i, w), s in sets_crowd.items()],
    )
    return name


def test_multi_label_stats(client: TestClient, sets_project: str, sets_crowd: dict) -> None:
    s = get(client, sets_project, "stats")
    assert s["task_type"] == "multi_label" and s["krippendorff_metric"] == "jaccard"
    workers = sorted({w for _, w in sets_crowd})
    items = sorted({i for i, _ in sets_crowd})
    data = np.full((len(workers), len(items)), np.nan)
    for (i, w), ticked in sets_crowd.items():
        data[workers.index(w), items.index(i)] = bits(ticked)
    ref = krippendorff.alpha(reliability_data=data, level_of_measurement=jaccard_metric)
    assert s["krippendorff_alpha"] == pytest.approx(ref, abs=1e-9)
    assert s["fleiss_kappa"] is None and "Jaccard" in s["fleiss_kappa_reason"]
    # Normalized soft labels: each topic's share of the item's voters; entropy in bits per topic.
    h = []
    for i in items:
        sets = [t for (j, _), t in sets_crowd.items() if j == i]
        p = np.array([sum(c in t for t in sets) / len(sets) for c in TOPICS])
        with np.errstate(divide="ignore", invalid="ignore"):
            e = -(np.nan_to_num(p * np.log2(p)) + np.nan_to_num((1 - p) * np.log2(1 - p)))
        h.append(e.mean())
    assert s["mean_normalized_entropy"] == pytest.approx(float(np.mean(h)), abs=1e-12)


def test_multi_label_workers(client: TestClient, sets_project: str, sets_crowd: dict) -> None:
    body = get(client, sets_project, "workers")
    assert body["method"] == "binary-relevance"  # the multi-label default worker model
    assert "Jaccard" in body["agreement_rule"]
    rows = {r["worker"]: r for r in body["workers"]}
    for w, row in rows.items():
        sims = []
        for (i, v), mine in sets_crowd.items():
            if v != w:
                continue
            others = [t for (j, u), t in sets_crowd.items() if j == i and u != w]
            sims.append(np.mean([jaccard_sim(mine, t) for t in others]))
        assert row["agreement"] == pytest.approx(float(np.mean(sims)), abs=1e-12), w
        assert row["n_scored"] == len(sims)
    assert rows["rand"]["spammer"] is True
    assert not any(rows[f"w{k}"]["spammer"] for k in range(5))
    assert rows["rand"]["skill"] < min(rows[f"w{k}"]["skill"] for k in range(5))


def test_multi_label_worker_detail(client: TestClient, sets_project: str, sets_crowd: dict):
    one = get(client, sets_project, "workers/w1")
    assert one["confusion"] is None and one["confusion_source"] == "model"
    # The model's per-class rates: binary relevance refitted here on the same votes (items and
    # workers indexed in external id order, as the service stores one sorted batch).
    items = sorted({i for i, _ in sets_crowd})
    workers = sorted({w for _, w in sets_crowd})
    keys = list(sets_crowd)
    item = np.array([items.index(i) for i, _ in keys])
    worker = np.array([workers.index(w) for _, w in keys])
    ticks = np.array([[c in sets_crowd[k] for c in TOPICS] for k in keys])
    ref = multilabel.BinaryRelevance().fit(item, worker, ticks, len(items), len(workers))
    w = workers.index("w1")
    assert one["sensitivity"] == pytest.approx(ref.sensitivity_[w].tolist(), abs=1e-6)
    assert one["specificity"] == pytest.approx(ref.specificity_[w].tolist(), abs=1e-6)
    r = client.get(f"/v1/projects/{sets_project}/workers/w1", params={"method": "dawid-skene"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "method"
    r = client.get(f"/v1/projects/{sets_project}/workers", params={"method": "normalized"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "method"


def test_multi_label_routing(client: TestClient, sets_project: str, sets_crowd: dict) -> None:
    items = sorted({i for i, _ in sets_crowd})
    p = {}
    for i in items:
        sets = [t for (j, _), t in sets_crowd.items() if j == i]
        p[i] = np.array([sum(c in t for t in sets) / len(sets) for c in TOPICS])
    margin = get(client, sets_project, "items/next", strategy="margin", limit=100)["items"]
    want = {i: 1 - np.abs(2 * q - 1).min() for i, q in p.items()}
    assert {r["item"]: r["uncertainty"] for r in margin} == pytest.approx(want, abs=1e-12)
    got = [r["uncertainty"] for r in margin]
    assert got == sorted(got, reverse=True)
    entropy = get(client, sets_project, "items/next", limit=3)["items"]
    assert entropy[0]["uncertainty"] >= entropy[-1]["uncertainty"] > 0


# ----- ordinal ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scale_crowd() -> dict[tuple[str, str], int]:
    """Four raters within a level of the truth; `rand` answers any level."""
    rng = np.random.default_rng(3)
    votes = {}
    for i in range(40):
        truth = int(rng.integers(0, 5))
        for w in range(4):
            if rng.random() < 0.8:
                votes[(f"i{i:02d}", f"r{w}")] = int(np.clip(truth + rng.integers(-1, 2), 0, 4))
        votes[(f"i{i:02d}", "rand")] = int(rng.integers(0, 5))
    return votes


@pytest.fixture(scope="module")
def scale_project(client: TestClient, scale_crowd: dict) -> str:
    name = make(client, "ordinal", LEVELS)
    post_votes(
        client,
        name,
        [{"item": i, "worker": w, "label": LEVELS[lv]} for (i, w), lv in scale_crowd.items()],
    )
    return name


def test_ordinal_stats_and_workers(client: TestClient, scale_project: str, scale_crowd: dict):
    s = get(client, scale_project, "stats")
    assert s["krippendorff_metric"] == "ordinal"
    workers = sorted({w for _, w in scale_crowd})
    items = sorted({i for i, _ in scale_crowd})
    data = np.full((len(workers), len(items)), np.nan)
    for (i, w), lv in scale_crowd.items():
        data[workers.index(w), items.index(i)] = lv
    ref = krippendorff.alpha(
        reliability_data=data, level_of_measurement="ordinal", value_domain=list(range(5))
    )
    assert s["krippendorff_alpha"] == pytest.approx(ref, abs=1e-9)
    nominal = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    assert abs(s["krippendorff_alpha"] - nominal) > 0.05  # the order matters here
    body = get(client, scale_project, "workers")
    assert body["method"] == "dawid-skene" and "(K - 1)" in body["agreement_rule"]
    rows = {r["worker"]: r for r in body["workers"]}
    for w, row in rows.items():
        sims = [
            np.mean([1 - abs(lv - o) / 4 for (j, u), o in scale_crowd.items() if j == i and u != w])
            for (i, v), lv in scale_crowd.items()
            if v == w
        ]
        assert row["agreement"] == pytest.approx(float(np.mean(sims)), abs=1e-12), w
    assert rows["rand"]["spammer"] is True
    assert not any(rows[f"r{k}"]["spammer"] for k in range(4))
    one = get(client, scale_project, "workers/r0")
    assert len(one["confusion"]) == 5 and one["sensitivity"] is None


def test_chance_agreement_is_the_mean_similarity_to_other_items_votes() -> None:
    from app.aggregation.agreement_types import pairwise_agreement

    rng = np.random.default_rng(0)
    item = rng.integers(0, 12, size=60)
    ticks = rng.random((60, 4)) < 0.3
    sets = [frozenset(np.flatnonzero(t)) for t in ticks]
    sim, scored, chance = pairwise_agreement(item, ticks)
    for v in range(60):
        other = [jaccard_sim(sets[v], sets[u]) for u in range(60) if item[u] != item[v]]
        assert chance[v] == pytest.approx(np.mean(other), abs=1e-12)
        mine = [jaccard_sim(sets[v], sets[u]) for u in range(60) if item[u] == item[v] and u != v]
        assert scored[v] == bool(mine)
        assert sim[v] == pytest.approx(np.mean(mine) if mine else 0.0, abs=1e-12)


def test_many_distinct_sets_estimate_the_expected_term_closely(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Past 4096 distinct sets the expected disagreement is summed against a seeded sample of
    votes: on 3000 items of 16 classes (about 9000 distinct sets) it stays within 0.01 of the
    exact sum, and is the same figure on every call."""
    from app.aggregation import agreement_types

    rng = np.random.default_rng(1)
    truth = rng.random((3000, 16)) < 0.3
    item = np.repeat(np.arange(3000), 4)
    ticks = truth[item] ^ (rng.random((item.size, 16)) < 0.15)
    assert np.unique(ticks, axis=0).shape[0] > agreement_types._REFERENCE
    sampled = agreement_types.krippendorff_alpha_sets(item, ticks)
    assert agreement_types.krippendorff_alpha_sets(item, ticks) == sampled
    monkeypatch.setattr(agreement_types, "_REFERENCE", 10**9)
    exact = agreement_types.krippendorff_alpha_sets(item, ticks)
    assert sampled is not None and exact is not None
    assert sampled == pytest.approx(exact, abs=0.01) and sampled != exact
