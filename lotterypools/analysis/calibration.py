"""How good and how well calibrated a network's predicted probabilities are, and how often two networks disagree.

Every function takes class probabilities ``(N, K)`` (rows sum to 1) and integer labels ``(N,)``.
"""

from __future__ import annotations

from typing import Sequence

import torch

ECE_BINS = 15


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Percentage of examples whose most probable class is the label."""
    return 100.0 * float((probs.argmax(1) == labels).double().mean())


def negative_log_likelihood(probs: torch.Tensor, labels: torch.Tensor, eps: float = 1e-12) -> float:
    """Mean of ``-log p(label)`` (natural log); probabilities are floored at ``eps``."""
    picked = probs.double().gather(1, labels.long()[:, None]).squeeze(1)
    return float(-picked.clamp_min(eps).log().mean())


def brier_score(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over examples of the squared distance between the probabilities and the one-hot label (sum over classes)."""
    one_hot = torch.nn.functional.one_hot(labels.long(), probs.shape[1]).double()
    return float(((probs.double() - one_hot) ** 2).sum(1).mean())


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per confidence bin (equal-width over (0, 1], bin b holds (b/bins, (b+1)/bins]): the number of examples,
    the sum of their confidences (max probability) and the number classified correctly."""
    confidence, predicted = probs.double().max(1)
    correct = (predicted == labels).double()
    index = (confidence * bins).ceil().long().clamp(1, bins) - 1
    count = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, torch.ones_like(confidence))
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, confidence)
    correct_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct)
    return count, conf_sum, correct_sum


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """ECE: the confidence (max probability) is cut into ``bins`` equal-width bins over (0, 1]; per bin,
    |accuracy - mean confidence| weighted by the bin's share of examples, summed. A fraction in [0, 1]."""
    _, conf_sum, correct_sum = reliability_bins(probs, labels, bins)
    gap = (correct_sum - conf_sum).abs()  # = count * |acc - conf| per bin
    return float(gap.sum() / max(len(labels), 1))


def prediction_metrics(probs: torch.Tensor, labels: torch.Tensor, eps: float = 1e-12, bins: int = ECE_BINS) -> dict[str, float]:
    """Accuracy (%), NLL (probabilities floored at ``eps``), ECE (``bins`` bins) and Brier score of one set of predictions."""
    return {"accuracy": accuracy(probs, labels), "nll": negative_log_likelihood(probs, labels, eps),
            "ece": expected_calibration_error(probs, labels, bins), "brier": brier_score(probs, labels)}


def disagreement(predicted_a: torch.Tensor, predicted_b: torch.Tensor) -> float:
    """Fraction of examples on which two networks' predicted classes differ."""
    return float((predicted_a != predicted_b).double().mean())


def disagreement_matrix(predictions: Sequence[torch.Tensor]) -> list[list[float]]:
    """Pairwise :func:`disagreement` of predicted classes; symmetric with a zero diagonal."""
    size = len(predictions)
    matrix = [[0.0] * size for _ in range(size)]
    for i in range(size):
        for j in range(i + 1, size):
            matrix[i][j] = matrix[j][i] = disagreement(predictions[i], predictions[j])
    return matrix


def kl_divergence(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-12, floor_p: bool = True) -> float:
    """Mean over examples of KL(p || q) = sum_k p_k (log p_k - log q_k) (natural log; q floored at ``eps``, and p
    too when ``floor_p``; otherwise terms with p_k = 0 count 0, as ``torch.nn.functional.kl_div``)."""
    p, q = p.double(), q.double().clamp_min(eps)
    if floor_p:
        p = p.clamp_min(eps)
    return float((torch.xlogy(p, p) - p * q.log()).sum(1).mean())


def kl_divergence_matrix(probs: Sequence[torch.Tensor], eps: float = 1e-12, floor_p: bool = True) -> list[list[float]]:
    """``matrix[i][j]`` = :func:`kl_divergence` (probs[i] || probs[j]); zero diagonal, not symmetric."""
    return [[0.0 if i == j else kl_divergence(p, q, eps, floor_p) for j, q in enumerate(probs)] for i, p in enumerate(probs)]
