"""Training losses against hand computation on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from app.training.losses import (
    distillation_term,
    hard_bce_targets,
    hard_ce,
    hard_targets,
    lwr_beta,
    lwr_term,
    soft_bce,
    soft_ce,
    squared_emd,
    with_distillation,
    with_lwr,
)

LN3 = math.log(3.0)


def test_soft_ce_by_hand() -> None:
    # Row 1: softmax([0, ln 3]) = [1/4, 3/4]; target [1/2, 1/2]
    #   -(1/2 ln 1/4 + 1/2 ln 3/4) = ln 4 - (ln 3)/2 = 1.386294 - 0.549306 = 0.836988
    # Row 2: softmax([0, 0]) = [1/2, 1/2]; target [1, 0]  ->  ln 2 = 0.693147
    # Mean over the batch: (0.836988 + 0.693147) / 2 = 0.765068
    logits = torch.tensor([[0.0, LN3], [0.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([[0.5, 0.5], [1.0, 0.0]], dtype=torch.float64)
    expected = (math.log(4) - LN3 / 2 + math.log(2)) / 2
    assert soft_ce(logits, target).item() == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.765068, abs=1e-6)


def test_soft_ce_on_one_hot_is_ordinary_cross_entropy() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], dtype=torch.float64)
    index = torch.tensor([1, 2])
    assert soft_ce(logits, F.one_hot(index, 3).double()).item() == pytest.approx(
        F.cross_entropy(logits, index).item(), abs=1e-12
    )


def test_hard_ce_equals_cross_entropy_on_argmax() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [0.3, 0.2, 0.1]])
    probs = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3], [0.4, 0.4, 0.2]])
    # argmax per row: 1, 0, and 0 for the tie between classes 0 and 1 (lowest index wins)
    index = torch.tensor([1, 0, 0])
    assert hard_ce(logits, probs).item() == F.cross_entropy(logits, index).item()
    assert torch.equal(hard_targets(probs), F.one_hot(index, 3).float())
    assert soft_ce(logits, hard_targets(probs)).item() == pytest.approx(
        hard_ce(logits, probs).item(), abs=1e-6
    )


def test_distillation_term_by_hand_with_t_squared() -> None:
    # T = 2. Teacher softmax([2 ln 3, 0] / 2) = softmax([ln 3, 0]) = [3/4, 1/4];
    # student softmax([0, 0] / 2) = [1/2, 1/2].
    # KL(teacher || student) = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.304099 - 0.173287 = 0.130812
    # times T^2 = 4  ->  0.523248
    student = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    teacher = torch.tensor([[2 * LN3, 0.0]], dtype=torch.float64)
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kl == pytest.approx(0.130812, abs=1e-6)
    assert distillation_term(student, teacher, 2.0).item() == pytest.approx(4 * kl, abs=1e-12)
    # Same distributions: zero; T = 1 has no scaling.
    assert distillation_term(teacher, teacher, 3.0).item() == pytest.approx(0.0, abs=1e-12)
    t1 = distillation_term(student, torch.tensor([[LN3, 0.0]], dtype=torch.float64), 1.0)
    assert t1.item() == pytest.approx(kl, abs=1e-12)


def test_distillation_term_is_mean_over_batch() -> None:
    student = torch.tensor([[0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    teacher = torch.tensor([[2 * LN3, 0.0], [0.0, 0.0]], dtype=torch.float64)
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert distillation_term(student, teacher, 2.0).item() == pytest.approx(4 * kl / 2, abs=1e-12)


def test_lwr_term_by_hand() -> None:
    # tau = 2. softmax([0, 2 ln 3] / 2) = [1/4, 3/4].
    # stored [1/2, 1/2]: KL = 1/2 ln(1/2 / 1/4) + 1/2 ln(1/2 / 3/4) = (ln 2 + ln 2/3) / 2
    #   = (0.693147 - 0.405465) / 2 = 0.143841, times tau^2 = 4 -> 0.575364
    # stored [1, 0]: KL = 1 ln(1 / 1/4) + 0 = ln 4 (the zero entry adds 0), times 4 -> 5.545177
    logits = torch.tensor([[0.0, 2 * LN3], [0.0, 2 * LN3]], dtype=torch.float64)
    stored = torch.tensor([[0.5, 0.5], [1.0, 0.0]], dtype=torch.float64)
    row1 = 4 * (math.log(2) + math.log(2 / 3)) / 2
    row2 = 4 * math.log(4)
    assert row1 == pytest.approx(0.575364, abs=1e-6)
    assert lwr_term(logits[:1], stored[:1], 2.0).item() == pytest.approx(row1, abs=1e-12)
    assert lwr_term(logits[1:], stored[1:], 2.0).item() == pytest.approx(row2, abs=1e-12)
    assert lwr_term(logits, stored, 2.0).item() == pytest.approx((row1 + row2) / 2, abs=1e-12)


@pytest.mark.parametrize(
    ("epoch", "beta"),
    [
        (0, 0.0),  # first k = 5 epochs: nothing stored yet
        (4, 0.0),
        (5, 0.9 * 5 / 100),  # t = 5   -> 0.045
        (9, 0.9 * 5 / 100),  # still t = 5
        (10, 0.9 * 10 / 100),  # t = 10  -> 0.09
        (57, 0.9 * 55 / 100),  # t = 55  -> 0.495
        (99, 0.9 * 95 / 100),  # t = 95  -> 0.855, the last epoch (always < 0.9)
    ],
)
def test_lwr_beta_schedule(epoch: int, beta: float) -> None:
    assert lwr_beta(epoch, k=5, epochs=100) == pytest.approx(beta, abs=1e-15)


def test_combinations() -> None:
    loss, extra = torch.tensor(2.0), torch.tensor(10.0)
    assert with_lwr(loss, extra, 0.25).item() == pytest.approx(0.75 * 2 + 0.25 * 10)
    assert with_lwr(loss, extra, 0.0).item() == 2.0
    assert with_distillation(loss, extra, 0.3).item() == pytest.approx(0.3 * 10 + 0.7 * 2)
    assert with_distillation(loss, extra, 0.0).item() == 2.0
    assert with_distillation(loss, extra, 1.0).item() == 10.0


# --- per task type: multi-label BCE and the ordinal squared EMD (app/training/heads.py) ------


def test_soft_bce_by_hand() -> None:
    # Item 1: logits [0, ln 3] -> sigmoids [1/2, 3/4]; targets [1/2, 1]:
    #   class 0: -(1/2 ln 1/2 + 1/2 ln 1/2) = ln 2 = 0.693147
    #   class 1: -(1 ln 3/4) = 0.287682              -> item sum 0.980829
    # Item 2: logits [0, 0] -> [1/2, 1/2]; targets [0, 0]: 2 ln 2 = 1.386294
    # Mean over items of the per-item sum over classes: (0.980829 + 1.386294) / 2 = 1.183562
    logits = torch.tensor([[0.0, LN3], [0.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([[0.5, 1.0], [0.0, 0.0]], dtype=torch.float64)
    expected = (math.log(2) - math.log(0.75) + 2 * math.log(2)) / 2
    assert soft_bce(logits, target).item() == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(1.183562, abs=1e-6)


def test_soft_bce_is_finite_where_the_sigmoid_saturates() -> None:
    # sigmoid(-200) underflows to 0 in float32; the loss is still the exact 200 (log s(z) =
    # -softplus(-z)), not inf.
    logits = torch.tensor([[-200.0, 0.0]])
    assert soft_bce(logits, torch.tensor([[1.0, 0.5]])).item() == pytest.approx(
        200 + math.log(2), rel=1e-6
    )


def test_hard_bce_targets_threshold_at_a_strict_majority() -> None:
    shares = torch.tensor([[0.2, 0.5, 0.51, 1.0]])
    assert torch.equal(hard_bce_targets(shares), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))


def test_squared_emd_by_hand() -> None:
    # 3 levels. softmax([0, 0, ln 2]) = [1/4, 1/4, 1/2], CDF [1/4, 1/2, 1].
    # Target [0, 1, 0], CDF [0, 1, 1]. Squared CDF gaps: 1/16 + 1/4 + 0 = 5/16 = 0.3125.
    # Second row: prediction = target -> 0. Mean: 5/32 = 0.15625.
    logits = torch.tensor([[0.0, 0.0, math.log(2)], [0.0, 0.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([[0.0, 1.0, 0.0], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
    assert squared_emd(logits, target).item() == pytest.approx(5 / 32, abs=1e-12)


def test_squared_emd_charges_by_distance_and_soft_ce_does_not() -> None:
    # Mass one level off costs less than mass two levels off; cross-entropy cannot tell.
    target = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    near = torch.log(torch.tensor([[0.5, 0.5, 1e-9]], dtype=torch.float64))
    far = torch.log(torch.tensor([[0.5, 1e-9, 0.5]], dtype=torch.float64))
    assert squared_emd(near, target).item() == pytest.approx(0.25, abs=1e-6)  # (1/2)^2
    assert squared_emd(far, target).item() == pytest.approx(0.5, abs=1e-6)  # 2 * (1/2)^2
    assert soft_ce(near, target).item() == pytest.approx(soft_ce(far, target).item())
