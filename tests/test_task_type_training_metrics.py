"""Training per task type without a database: the ordinal and multi-label metrics against hand
computations, scipy and scikit-learn; the config's per-type checks; the trainer on tiny data.
(tests/test_task_type_training.py runs the same over HTTP with a real worker.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.stats import wasserstein_distance
from sklearn.metrics import f1_score

from app.aggregation.registry import METHODS_BY_TASK, resolve_method
from app.training.config import LOSSES_BY_TASK, TrainingConfig
from app.training.data import build_training_data
from app.training.item_scores import Rows
from app.training.task_metrics import MultiLabelEvalSet, OrdinalEvalSet
from app.training.trainer import load_checkpoint, predict_probs, train

# --- ordinal ---------------------------------------------------------------------------------


def test_ordinal_metrics_by_hand_on_an_uneven_scale() -> None:
    # Levels valued 1, 2, 5. Model p = [.5, .5, 0]: E_p = 1.5.
    # Gold: the top level (value 5): mae = 3.5.
    # Humans: one vote each for levels 2 and 3, h = [0, .5, .5]: E_h = 3.5, mae_human = 2.
    # W1: CDFs [.5, 1, 1] and [0, .5, 1]: gaps |.5| * (2 - 1) + |.5| * (5 - 2) = 2.
    labels = OrdinalEvalSet.build(np.array([[0, 1, 1]]), np.array([2]), np.array([1.0, 2, 5]))
    m = labels.metrics(np.array([[0.5, 0.5, 0.0]]), n_train=3)
    assert m["mae"] == pytest.approx(3.5)
    assert m["mae_human"] == pytest.approx(2.0)
    assert m["wasserstein_human"] == pytest.approx(2.0)
    assert m["manhattan_human"] == pytest.approx(1.0)  # the single-label figures are kept
    assert m["rps_human"] == pytest.approx(0.5)  # squared CDF gaps .25 + .25, in level steps
    values = [1.0, 2.0, 5.0]
    assert wasserstein_distance(values, values, [0.5, 0.5, 0.0], [0, 0.5, 0.5]) == 2.0


def test_wasserstein_equals_scipy_on_random_distributions() -> None:
    rng = np.random.default_rng(3)
    k, n = 6, 40
    values = np.cumsum(rng.uniform(0.2, 3.0, k))  # an uneven increasing scale
    counts = rng.integers(0, 4, (n, k))
    counts[counts.sum(axis=1) == 0, 0] = 1
    probs = rng.dirichlet(np.ones(k), n)
    labels = OrdinalEvalSet.build(counts, np.full(n, -1), values)
    h = counts / counts.sum(axis=1, keepdims=True)
    expected = [wasserstein_distance(values, values, probs[i], h[i]) for i in range(n)]
    assert labels.metrics(probs, n_train=1)["wasserstein_human"] == pytest.approx(
        np.mean(expected), abs=1e-12
    )
    assert labels.metrics(probs, n_train=1)["mae"] is None  # no gold: no figure, not 0


# --- multi-label -----------------------------------------------------------------------------

# Item 0: 2 voters ticked [2, 1, 0] -> shares [1, .5, 0], majority [1, 0, 0] (half is none).
# Item 1: 3 voters ticked [0, 3, 3] -> shares [0, 1, 1], majority [0, 1, 1].
TICKS = np.array([[2, 1, 0], [0, 3, 3]])
VOTERS = np.array([2, 3])
PROBS = np.array([[0.8, 0.6, 0.1], [0.3, 0.4, 0.9]])


def test_multi_label_metrics_by_hand() -> None:
    m = MultiLabelEvalSet.build(TICKS, VOTERS).metrics(PROBS, n_train=7)
    # Brier vs the majority: item 0 (.04 + .36 + .01) / 3, item 1 (.09 + .36 + .01) / 3.
    assert m["brier"] == pytest.approx(0.87 / 6)
    assert m["per_class_brier"] == pytest.approx([0.065, 0.36, 0.01])
    # Thresholded predictions [1, 1, 0] and [0, 0, 1] against [1, 0, 0] and [0, 1, 1]:
    # class 0 F1 1, class 1 (one false positive, one miss) 0, class 2 1.
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["per_class_f1"] == [1.0, 0.0, 1.0]
    # Manhattan: |1-.8| + |.5-.6| + |0-.1| = .4 and .3 + .6 + .1 = 1.0.
    assert m["manhattan_human"] == pytest.approx(0.7)
    bce = [
        -math.log(0.8),
        -(0.5 * math.log(0.6) + 0.5 * math.log(0.4)),
        -math.log(0.9),
        -math.log(0.7),
        -math.log(0.4),
        -math.log(0.9),
    ]
    assert m["bce_human"] == pytest.approx(np.mean(bce))
    # KL = BCE - the shares' own entropy: only item 0's class 1 (h = .5) has any, ln 2.
    assert m["kl_human"] == pytest.approx((sum(bce) - math.log(2)) / 6)
    assert (m["n_eval"], m["n_train"]) == (2, 7)


def test_multi_label_macro_f1_equals_scikit_learn_on_the_classes_present() -> None:
    rng = np.random.default_rng(5)
    n, k = 60, 5
    voters = rng.integers(1, 5, n)
    ticks = rng.binomial(voters[:, None], [0.6, 0.3, 0.1, 0.02, 0.5], (n, k))
    ticks[:, 3] = 0  # a class nobody ticks ...
    probs = rng.uniform(0, 1, (n, k))
    probs[:, 3] = 0.1  # ... and the model never predicts: no F1, not a 0 or a 1
    m = MultiLabelEvalSet.build(ticks, voters).metrics(probs, n_train=1)
    ref, pred = ticks / voters[:, None] > 0.5, probs > 0.5
    present = [c for c in range(k) if ref[:, c].any() or pred[:, c].any()]
    assert 3 not in present and m["per_class_f1"][3] is None
    assert m["macro_f1"] == pytest.approx(
        f1_score(ref, pred, average="macro", labels=present, zero_division=0)
    )


@pytest.mark.parametrize("metric", ["brier", "bce_human", "kl_human", "manhattan_human", "mer"])
def test_multi_label_per_item_values_average_to_the_metric(metric: str) -> None:
    """The sweep's paired bootstrap resamples these per-item values."""
    rows = Rows("multi_label", PROBS, TICKS, np.full(2, -1), VOTERS, None)
    m = rows.labels().metrics(PROBS, n_train=1)
    assert np.mean(rows.per_item(metric)) == pytest.approx(m[metric])


def test_ordinal_per_item_values_average_to_the_metric() -> None:
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), 10)
    counts = rng.integers(1, 3, (10, 4))
    gold = np.where(np.arange(10) < 4, 2, -1)
    rows = Rows("ordinal", probs, counts, gold, None, np.array([0.0, 1, 2, 4]))
    m = rows.labels().metrics(probs, n_train=1)
    for metric in (
        "mae",
        "mae_human",
        "wasserstein_human",
        "rps_human",
        "kl_human",
        "anad",
        "annotator_error_rate",
    ):
        per = rows.per_item(metric)
        assert np.nanmean(per) == pytest.approx(m[metric]), metric
    assert np.isnan(rows.per_item("mae")[5])  # no gold there


def test_each_annotators_view_by_hand() -> None:
    """LeWiDi 2025's perspectivist scores when the model gives one answer for all annotators
    of an item, votes listed one by one and scored per item, then averaged over items."""
    # Ordinal, 4 levels. Item 0: votes 0, 0, 3; model median level 1, mode level 0.
    # Item 1: votes 2, 3; model median 3, mode 3.
    probs = np.array([[0.45, 0.10, 0.05, 0.40], [0.1, 0.1, 0.2, 0.6]])
    counts = np.array([[2, 0, 0, 1], [0, 0, 1, 1]])
    m = OrdinalEvalSet.build(counts, np.full(2, -1), np.arange(4.0)).metrics(probs, n_train=1)
    anad_0 = (abs(1 - 0) + abs(1 - 0) + abs(1 - 3)) / 3 / 3
    anad_1 = (abs(3 - 2) + abs(3 - 3)) / 2 / 3
    assert m["anad"] == pytest.approx((anad_0 + anad_1) / 2)
    assert m["annotator_error_rate"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    # Multi-label, 3 classes. Item 0: voters ticked {0}, {0, 1}, {} ; model ticks {0, 2}.
    ticks, voters = np.array([[2, 1, 0]]), np.array([3])
    pm = np.array([[0.9, 0.4, 0.6]])
    wrong = [  # per voter, classes whose tick the model gets wrong
        [c for c in range(3) if (c in {0, 2}) != (c in voted)] for voted in ({0}, {0, 1}, set())
    ]
    expected = sum(len(w) for w in wrong) / (3 * 3)
    got = MultiLabelEvalSet.build(ticks, voters).metrics(pm, n_train=1)["mer"]
    assert got == pytest.approx(expected)


# --- the config, per task type ---------------------------------------------------------------


def test_every_method_of_every_type_resolves_as_that_types_method() -> None:
    """A request body is parsed before its project is known, where a name several types share
    (normalized, softmax, auto, ...) is read as the single-label method; for_task then resolves
    what the request sent in the project's type, not the single-label defaults: "auto" of
    ticks, for one, takes no `use_gold`."""
    for task, table in METHODS_BY_TASK.items():
        for name in table:
            if name == "crowdlab":  # needs a job id: tested with training jobs
                continue
            cfg = TrainingConfig.model_validate({"labels": {"method": name}}).for_task(task)
            expected = {"method": name, **resolve_method(name, {}, task).params()}
            assert cfg.labels == expected, (task, name)


def test_for_task_defaults_and_refusals() -> None:
    cfg = TrainingConfig.model_validate({"labels": {"method": "tick-propensity"}})
    assert cfg.labels == {"method": "tick-propensity"}  # resolved once the type is known
    multi = cfg.for_task("multi_label")
    assert multi.loss == "soft-bce" and multi.labels["pseudo_votes"] == 2.0
    assert TrainingConfig().for_task("ordinal").loss == "soft-ce"
    for task, losses in LOSSES_BY_TASK.items():
        for loss in losses:
            assert TrainingConfig(loss=loss).for_task(task).loss == loss  # type: ignore[arg-type]

    def refused(raw: dict, task: str) -> tuple:
        with pytest.raises(ValidationError) as info:
            TrainingConfig.model_validate(raw).for_task(task)
        return info.value.errors()[0]["loc"]

    assert refused({"loss": "squared-emd"}, "single") == ("loss",)
    assert refused({"loss": "soft-ce"}, "multi_label") == ("loss",)
    assert refused({"loss": "soft-bce"}, "ordinal") == ("loss",)
    assert refused({"labels": {"method": "majority"}}, "ordinal") == ("labels", "method")
    assert refused({"labels": {"method": "rater-bias", "nope": 1}}, "ordinal") == (
        "labels",
        "nope",
    )
    assert refused({"temperature_scaling": True}, "multi_label") == ("temperature_scaling",)
    assert refused({"lwr": {"k": 2}}, "multi_label") == ("lwr",)
    with pytest.raises(ValidationError):  # unknown to every type: refused as it arrives
        TrainingConfig.model_validate({"labels": {"method": "nope"}})


# --- the trainer on tiny data ----------------------------------------------------------------

TINY = {"epochs": 40, "model": {"kind": "linear"}, "batch_size": 16, "lr": 0.05}


def multi_label_data(n: int = 160) -> tuple:
    """3 classes; class k applies when feature k > 0, and each of 3 voters ticks it with
    probability .8 then (.1 otherwise)."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (n, 3))
    truth = x > 0
    voters = np.full(n, 3)
    ticks = rng.binomial(3, np.where(truth, 0.8, 0.1))
    return [f"i{i}" for i in range(n)], x, ticks, voters


@pytest.mark.parametrize("loss", ["soft-bce", "hard-bce"])
def test_trainer_fits_a_multi_label_head(loss: str) -> None:
    ids, x, ticks, voters = multi_label_data()
    cfg = TrainingConfig.model_validate({**TINY, "loss": loss}).for_task("multi_label")
    data = build_training_data(
        ids, x, ticks, None, cfg.labels, task_type="multi_label", n_voters=voters
    )
    assert data.targets.max() <= 1 and not np.allclose(data.targets.sum(axis=1), 1)
    result = train(cfg, data)
    test = result.metrics["test"]
    assert set(test) >= {"brier", "macro_f1", "bce_human", "kl_human", "manhattan_human"}
    assert test["macro_f1"] > 0.8  # a linear boundary per class: easy
    assert "test_gold" not in result.metrics["splits"]
    # Per-class sigmoids: a row is not a distribution, and the checkpoint says so.
    probs = predict_probs(result.model, x[:20], "multi_label")
    assert not np.allclose(probs.sum(axis=1), 1.0)
    _, _, ckpt = load_checkpoint(result.checkpoint)
    assert ckpt["task_type"] == "multi_label"
    assert result.predictions["test_voters"].shape == result.predictions["test_ids"].shape


def test_soft_bce_fits_the_human_shares_better_than_hard_bce() -> None:
    ids, x, ticks, voters = multi_label_data(400)
    out = {}
    for loss in ("soft-bce", "hard-bce"):
        cfg = TrainingConfig.model_validate({**TINY, "loss": loss}).for_task("multi_label")
        data = build_training_data(
            ids, x, ticks, None, cfg.labels, task_type="multi_label", n_voters=voters
        )
        out[loss] = train(cfg, data).metrics["test"]
    # Hard targets push every sigmoid toward 0 or 1; the voters split 2-1 on many items.
    assert out["soft-bce"]["bce_human"] < out["hard-bce"]["bce_human"]
    assert out["soft-bce"]["kl_human"] < out["hard-bce"]["kl_human"]


def test_the_default_sweep_scores_are_proper_and_lewidis_distances_are_not() -> None:
    """Why a sweep ranks multi-label recipes by bce_human and ordinal ones by rps_human by
    default. A class that applies at rate .8, 3 voters per item: over 1,000 items the shares
    are 1, 2/3, 1/3, 0 on 512, 384, 96 and 8 of them (Binomial(3, .8)). Predicting the true .8
    should score best; Manhattan prefers a confident 1 (E|h - 1| = .2 < E|h - .8| = .2048)."""
    ticks = np.repeat([3, 2, 1, 0], [512, 384, 96, 8])[:, None]
    labels = MultiLabelEvalSet.build(ticks, np.full(1000, 3))

    def score(p: float, metric: str) -> float:
        return float(labels.metrics(np.full((1000, 1), p), n_train=1)[metric])

    assert score(1.0, "manhattan_human") == pytest.approx(0.2)
    assert score(0.8, "manhattan_human") == pytest.approx(0.2048)
    grid = np.linspace(0.5, 0.99, 50)
    assert grid[np.argmin([score(p, "bce_human") for p in grid])] == pytest.approx(0.8, abs=0.01)
    # Ordinal, 2 levels at rate .8 for the top one: the same story for W1 and the RPS.
    counts = np.stack([3 - ticks[:, 0], ticks[:, 0]], axis=1)
    scale = OrdinalEvalSet.build(counts, np.full(1000, -1), np.array([0.0, 1.0]))

    def ordinal(p: float, metric: str) -> float:
        return float(scale.metrics(np.tile([1 - p, p], (1000, 1)), n_train=1)[metric])

    assert ordinal(1.0, "wasserstein_human") < ordinal(0.8, "wasserstein_human")
    assert grid[np.argmin([ordinal(p, "rps_human") for p in grid])] == pytest.approx(0.8, abs=0.01)


def test_trainer_with_squared_emd_on_a_scale() -> None:
    rng = np.random.default_rng(2)
    n = 200
    x = rng.normal(0, 1, (n, 2))
    latent = np.clip(np.round(1.5 * x[:, 0] + 2), 0, 4).astype(int)
    counts = np.zeros((n, 5), np.int64)
    for _ in range(4):  # 4 voters, each off by up to one level
        np.add.at(counts, (np.arange(n), np.clip(latent + rng.integers(-1, 2, n), 0, 4)), 1)
    cfg = TrainingConfig.model_validate({**TINY, "loss": "squared-emd"}).for_task("ordinal")
    data = build_training_data(
        [f"i{i}" for i in range(n)],
        x,
        counts,
        None,
        cfg.labels,
        task_type="ordinal",
        scale=np.arange(1.0, 6.0),
    )
    result = train(cfg, data)
    test = result.metrics["test"]
    assert test["wasserstein_human"] < 0.6 and test["mae_human"] < 0.5
    assert result.predictions["scale"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert np.allclose(predict_probs(result.model, x[:5], "ordinal").sum(axis=1), 1.0)
