"""Losses for training on crowd soft labels. All return the mean over the batch.

- soft_ce: cross-entropy against the human label distribution, -sum_c p_hum(c) log p(c).
  A. Uma, T. Fornaciari, D. Hovy, S. Paun, B. Plank, M. Poesio, "A Case for Soft Loss
  Functions", HCOMP 2020 (their "soft loss").
- hard_ce: cross-entropy on the argmax of the same soft labels (the majority-style baseline).
- soft_bce: multi-label, per-class binary cross-entropy against each class's soft probability
  that it applies, summed over classes: Uma et al.'s soft loss on every class as a binary task
  (the multi-label soft labels are K Bernoulli probabilities, not a distribution).
  hard_bce_targets: those probabilities thresholded at 0.5 (the per-class majority baseline).
- squared_emd: ordinal, sum_k (CDF_p(k) - CDF_t(k))^2, the squared Earth Mover's Distance
  between two distributions over ordered levels one step apart. L. Hou, C.-P. Yu,
  D. Samaras, "Squared Earth Mover's Distance-based Loss for Training Deep Neural Networks",
  arXiv:1611.05916 (2016; NIPS 2017 Workshop on Learning on Distributions).
- distillation_term: T^2 * KL(softmax(z_t / T) || softmax(z_s / T)). G. Hinton, O. Vinyals,
  J. Dean, "Distilling the Knowledge in a Neural Network", NIPS 2014 Deep Learning Workshop,
  arXiv:1503.02531 (2015). The T^2 keeps gradient magnitudes comparable across temperatures.
- lwr_term: tau^2 * KL(stored || softmax(z / tau)). X. Deng, Z. Zhang, "Learning with
  Retrospection", AAAI 2021, arXiv:2012.13098.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LWR_MAX_BETA = 0.9  # Deng & Zhang's weight schedule tops out at 0.9


def soft_ce(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """mean_i -sum_c target_probs[i, c] * log_softmax(logits)[i, c] (Uma et al. 2020)."""
    # F.cross_entropy accepts class probabilities as the target (same shape as logits).
    return F.cross_entropy(logits, target_probs)


def hard_ce(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on argmax(target_probs); ties go to the lowest class index."""
    return F.cross_entropy(logits, target_probs.argmax(dim=1))


def hard_targets(target_probs: torch.Tensor) -> torch.Tensor:
    """One-hot rows of argmax(target_probs): soft_ce on these equals hard_ce on the originals.

    The trainer converts once before the loop, so both losses run the same per-step code.
    """
    return F.one_hot(target_probs.argmax(dim=1), target_probs.shape[1]).to(target_probs.dtype)


def soft_bce(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """mean_i sum_k -[t_ik log s(z_ik) + (1 - t_ik) log(1 - s(z_ik))], s the sigmoid.

    Summed over classes (as soft_ce sums over classes), so the loss of an item does not shrink
    as the project adds classes; `binary_cross_entropy_with_logits` computes it stably from the
    logits (log s(z) = -softplus(-z)), with no log(0) for a saturated sigmoid."""
    per = F.binary_cross_entropy_with_logits(logits, target_probs, reduction="none")
    return per.sum(dim=1).mean()


def hard_bce_targets(target_probs: torch.Tensor) -> torch.Tensor:
    """1 where a class's soft probability is above 0.5, else 0: the per-class majority of the
    voters for vote shares (a tie, exactly half, is no majority: 0). soft_bce on these is the
    hard-label baseline."""
    return (target_probs > 0.5).to(target_probs.dtype)


def squared_emd(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """mean_i sum_k (CDF_softmax(z_i)(k) - CDF_t_i(k))^2 (Hou, Yu & Samaras 2016, eq. for
    l = 2 with unit ground distance between neighbouring levels).

    The last CDF entry is 1 for both distributions, so summing over all K levels or the first
    K - 1 is the same. (Talebi & Milanfar's NIMA divides by K; a constant factor.)"""
    cdf_p = torch.cumsum(torch.softmax(logits, dim=1), dim=1)
    cdf_t = torch.cumsum(target_probs, dim=1)
    return ((cdf_p - cdf_t) ** 2).sum(dim=1).mean()


def distillation_term(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T^2 * mean_i KL(softmax(z_teacher / T) || softmax(z_student / T)) (Hinton et al. 2015)."""
    t = temperature
    student = F.log_softmax(student_logits / t, dim=1)
    teacher = F.log_softmax(teacher_logits / t, dim=1)
    return t * t * F.kl_div(student, teacher, reduction="batchmean", log_target=True)


def lwr_term(logits: torch.Tensor, stored_probs: torch.Tensor, tau: float) -> torch.Tensor:
    """tau^2 * mean_i KL(stored_probs || softmax(z / tau)) (Deng & Zhang 2021).

    `stored_probs` are probabilities (softmax(z_past / tau)); zero entries contribute 0.
    """
    log_p = F.log_softmax(logits / tau, dim=1)
    return tau * tau * F.kl_div(log_p, stored_probs, reduction="batchmean")


def lwr_beta(epoch: int, k: int, epochs: int) -> float:
    """Weight of the LWR term at 0-based `epoch`: 0.9 * floor(epoch / k) * k / epochs.

    0 for the first k epochs (nothing stored yet), then a step every k epochs, always < 0.9.
    The authors' code uses a fixed 240 in place of `epochs`.
    """
    return LWR_MAX_BETA * (epoch // k) * k / epochs


def with_lwr(loss: torch.Tensor, lwr: torch.Tensor, beta: float) -> torch.Tensor:
    """(1 - beta) * loss + beta * lwr_term: Deng & Zhang's combination, alpha = 1 - beta."""
    return (1.0 - beta) * loss + beta * lwr


def with_distillation(loss: torch.Tensor, distill: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha * distillation_term + (1 - alpha) * loss (Hinton et al. 2015)."""
    return alpha * distill + (1.0 - alpha) * loss
