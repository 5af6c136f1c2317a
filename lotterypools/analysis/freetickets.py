"""Evaluating a folder of free tickets (FreeTickets' ``ensemble_freetickets.py``): reading and checking the
tickets, the output ensemble, calibration, pairwise disagreement and KL divergence, and a t-SNE of training runs.

The metrics are the project's (:mod:`lotterypools.analysis.calibration`, :func:`lotterypools.analysis.ensembles.member_probabilities`);
this module only finds the files and arranges the numbers.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch

from .calibration import disagreement_matrix, kl_divergence_matrix, prediction_metrics
from ..core.torchfiles import holds_pruning_buffers, load_file, state_dict_of, tensor_differences
from ..core.errors import UserError
from ..training.sparse import masks_density

TICKET_SUFFIXES = (".pth", ".pt", ".tar")
NOT_TICKETS = ("trajectory", "history", "checkpoint.pth", ".")
DENSITY_TOLERANCE = 0.01
RESULTS_NAME = "ensemble_results.json"  # ensemble_freetickets.py's numbers, one entry per mode, in the tickets' folder


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def find_tickets(folder: str | Path) -> list[Path]:
    """Ticket files directly in ``folder`` (natural order), or else DST's ``<folder>/seed=N/model.pth`` layout."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--resume {folder} is not a folder: give the folder holding the tickets")
    direct = [p for p in folder.iterdir() if p.is_file() and p.name.endswith(TICKET_SUFFIXES)
              and not p.name.startswith(NOT_TICKETS)]
    found = direct or [p / "model.pth" for p in folder.iterdir() if (p / "model.pth").is_file()]
    if not found:
        raise UserError(f"--resume {folder} holds no tickets (*.pth, *.pt files, or seed=N/model.pth): point it at "
                        f"the --save_dir of main_EDST.py, main_PF.py, or the DST/ folder above the seed=N runs")
    return sorted(found, key=_natural_key)


@dataclass
class Ticket:
    """One ensemble member: its file, plain weights and density over the conv and linear weights (its saved
    masks' density; for files without masks, the original's, the fraction of non-zero weights)."""

    path: Path
    weights: dict[str, torch.Tensor]
    density: float


def weights_density(weights: Mapping[str, torch.Tensor], names: Sequence[str]) -> float:
    """Fraction of non-zero entries over ``names``."""
    total = sum(weights[n].numel() for n in names)
    return sum(int(weights[n].count_nonzero()) for n in names) / total if total else 1.0


def load_tickets(paths: Sequence[Path], reference: Mapping[str, torch.Tensor], names: Sequence[str],
                 model_name: str, density: float | None = None, dataset: str | None = None,
                 normalisation: tuple[Sequence[float], Sequence[float]] | None = None) -> list[Ticket]:
    """Read every ticket and check it against ``--model`` (tensor names and shapes) and the density.

    With ``density`` every ticket must have it (within 0.01); without, all tickets must share one density.
    With ``dataset`` (and ``normalisation``, mean and std) tickets recorded as made on other data are refused
    (:func:`lotterypools.provenance.check_tickets_match`).
    """
    from ..core.provenance import check_tickets_match

    tickets = []
    for path in paths:
        saved = load_file(path)
        if dataset is not None:
            mean, std = normalisation if normalisation is not None else (None, None)
            check_tickets_match(path, dataset, "--dataset", mean, std, saved if isinstance(saved, dict) else None)
        weights = state_dict_of(saved, path)
        arch = saved.get("arch") if isinstance(saved, dict) else None
        differ = tensor_differences(weights, reference).names
        if differ and holds_pruning_buffers(weights):
            raise UserError(f"{path} is an IMP ticket (weight_orig/weight_mask pruning buffers), not a FreeTickets "
                            f"ticket: evaluate IMP folders with analyze_tickets.py (e.g. its ensemble command)")
        if differ or (isinstance(arch, str) and arch != model_name):
            what = f"a {arch}" if isinstance(arch, str) and arch != model_name else f"another model ({len(differ)} tensors differ, e.g. {differ[0]})"
            raise UserError(f"{path} is a ticket of {what}, not of --model {model_name}: give the --model the "
                            f"tickets were trained with, or a folder of {model_name} tickets")
        masks = saved.get("masks") if isinstance(saved, dict) else None
        tickets.append(Ticket(path, dict(weights), masks_density(masks) if masks else weights_density(weights, names)))
    _check_densities(tickets, density)
    return tickets


def _check_densities(tickets: Sequence[Ticket], density: float | None) -> None:
    if density is not None:
        wrong = [t for t in tickets if abs(t.density - density) > DENSITY_TOLERANCE]
        if wrong:
            raise UserError(f"{wrong[0].path} has density {wrong[0].density:.4f}, not --density {density:g}: the folder "
                            f"holds tickets of another density; give the matching --density or folder")
        return
    low, high = min(tickets, key=lambda t: t.density), max(tickets, key=lambda t: t.density)
    if high.density - low.density > DENSITY_TOLERANCE:
        raise UserError(f"tickets of different densities in one folder ({low.path.name} {low.density:.4f}, "
                        f"{high.path.name} {high.density:.4f}): an ensemble needs one density; move the others away")


# ---------------------------------------------------------------------------------------------- the modes
# How the numbers are summarised: "original" as ensemble_freetickets.py reports them (population std of the
# members; mean disagreement over the pairs that disagree at all; no probability floor beyond what keeps a
# log finite; ECE over its 14 effective bins), or "ours" (sample std, every pair, probabilities floored at
# 1e-12, 15 bins).
STATISTICS = ("original", "ours")
# The original takes log(p) unfloored, which is -inf for a probability that underflowed to 0 in float32; the
# smallest normal float32 keeps such a log finite (-87.3) and leaves every other probability as it is.
ORIGINAL_FLOOR = float(torch.finfo(torch.float32).tiny)
OUR_FLOOR = 1e-12
ORIGINAL_ECE_BINS = 14  # np.digitize on np.linspace(0, 1, 15) with right=True: 14 equal bins over (0, 1]
ORIGINAL_DISAGREEMENT_OFFSET = 0.001  # the original adds it to every non-zero entry before averaging


def _check_statistics(statistics: str) -> None:
    if statistics not in STATISTICS:
        raise UserError(f"unknown --statistics {statistics!r}: choose one of {', '.join(STATISTICS)}")


def _metrics(probs: torch.Tensor, labels: torch.Tensor, statistics: str) -> dict[str, float]:
    if statistics == "original":
        return prediction_metrics(probs, labels, eps=ORIGINAL_FLOOR, bins=ORIGINAL_ECE_BINS)
    return prediction_metrics(probs, labels, eps=OUR_FLOOR)


def predict_summary(members: Mapping[str, torch.Tensor], labels: torch.Tensor, statistics: str = "original") -> dict:
    """Accuracy and NLL of every member, their mean and std, and of the output ensemble (mean probabilities)."""
    from .ensembles import average_probabilities

    _check_statistics(statistics)
    rows = {name: _metrics(p, labels, statistics) for name, p in members.items()}
    ensemble = _metrics(average_probabilities(list(members.values())), labels, statistics)
    return {"statistics": statistics,
            "members": {n: {"accuracy": r["accuracy"], "nll": r["nll"]} for n, r in rows.items()},
            "member_mean": _mean_std(rows, ("accuracy", "nll"), statistics),
            "ensemble": {"accuracy": ensemble["accuracy"], "nll": ensemble["nll"]}}


def calibration_summary(members: Mapping[str, torch.Tensor], labels: torch.Tensor, statistics: str = "original") -> dict:
    """Accuracy, NLL, ECE and Brier score (ours; the original reports none) of every member and of the output ensemble."""
    from .ensembles import average_probabilities

    _check_statistics(statistics)
    rows = {name: _metrics(p, labels, statistics) for name, p in members.items()}
    return {"statistics": statistics, "members": rows,
            "member_mean": _mean_std(rows, ("accuracy", "nll", "ece", "brier"), statistics),
            "ensemble": _metrics(average_probabilities(list(members.values())), labels, statistics)}


def disagreement_summary(members: Mapping[str, torch.Tensor], statistics: str = "original") -> dict:
    """Pairwise prediction disagreement (fraction of test images whose predicted classes differ) and its mean:
    over the pairs that disagree at all (``original``, which drops pairs that never disagree) or over every
    pair (``ours``). Both means are in the result, and the original's printed value (its mean + 0.001)."""
    _check_statistics(statistics)
    matrix = disagreement_matrix([p.argmax(1) for p in members.values()])
    off = [v for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j]
    disagreeing = [v for v in off if v != 0]
    over_disagreeing = sum(disagreeing) / len(disagreeing) if disagreeing else 0.0
    over_all = sum(off) / len(off) if off else None
    return {"statistics": statistics, "names": list(members), "matrix": matrix,
            "mean": over_disagreeing if statistics == "original" else over_all,
            "mean_over_disagreeing_pairs": over_disagreeing, "mean_over_all_pairs": over_all,
            "original_printout": over_disagreeing + ORIGINAL_DISAGREEMENT_OFFSET if disagreeing else 0.0}


def kl_summary(members: Mapping[str, torch.Tensor], statistics: str = "original") -> dict:
    """KL(p_i || p_j) for every ordered pair, averaged over test images, and its mean over pairs."""
    _check_statistics(statistics)
    if statistics == "original":
        matrix = kl_divergence_matrix(list(members.values()), eps=ORIGINAL_FLOOR, floor_p=False)
    else:
        matrix = kl_divergence_matrix(list(members.values()), eps=OUR_FLOOR)
    return {"statistics": statistics, "names": list(members), "matrix": matrix, "mean": _off_diagonal_mean(matrix)}


def _off_diagonal_mean(matrix: Sequence[Sequence[float]]) -> float | None:
    values = [v for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j]
    return sum(values) / len(values) if values else None


def _mean_std(rows: Mapping[str, Mapping[str, float]], keys: Sequence[str], statistics: str = "original") -> dict:
    """Mean and std over the members: population std (NumPy's default, the original's) or sample std (ours)."""
    summary = {}
    for key in keys:
        values = torch.tensor([r[key] for r in rows.values()], dtype=torch.float64)
        std = float(values.std(correction=0 if statistics == "original" else 1)) if len(values) > 1 else 0.0
        summary[key] = {"mean": float(values.mean()), "std": std}
    return summary


def read_predict_results(folder: str | Path, missing_ok: bool = False) -> dict | None:
    """The ``predict`` entry of ``<folder>/ensemble_results.json`` (:func:`predict_summary`'s numbers with the
    members' densities); ``None`` when there is none yet and ``missing_ok``."""
    import json

    path = Path(folder) / RESULTS_NAME
    try:
        result = json.loads(path.read_text()).get("predict") if path.exists() else None
        if result is not None:
            float(result["ensemble"]["accuracy"]), float(result["member_mean"]["accuracy"]["mean"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise UserError(f"{path}: not ensemble_freetickets.py's results ({error.__class__.__name__}: {error}): rerun "
                        f"ensemble_freetickets.py --mode predict on {folder}") from None
    if result is None and not missing_ok:
        raise UserError(f"{path} has no predict results: run ensemble_freetickets.py --mode predict --tickets_dir {folder}")
    return result


# ---------------------------------------------------------------------------------------------- t-SNE
def find_trajectories(folder: str | Path) -> list[Path]:
    """``trajectory_*.pt`` files (per-epoch test predictions written by the training scripts) in ``folder``
    and its sub-folders one level down."""
    folder = Path(folder)
    found = sorted(folder.glob("trajectory_*.pt")) + sorted(folder.glob("*/trajectory_*.pt"))
    if not found:
        raise UserError(f"--resume {folder} holds no trajectory_*.pt files: the t-SNE picture needs runs of "
                        f"main_DST.py / main_EDST.py / main_PF.py, which write them beside their tickets")
    return found


def tsne_embedding(points: torch.Tensor, perplexity: float = 30.0, seed: int = 0) -> tuple[torch.Tensor, str]:
    """2-D t-SNE of ``points`` (n, d): scikit-learn's TSNE when installed, else :func:`exact_tsne`; returns the
    embedding and the name of the implementation used."""
    perplexity = min(perplexity, max((points.shape[0] - 1) / 3, 1.5))
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        return exact_tsne(points, perplexity, seed=seed), "exact t-SNE (lotterypools, scikit-learn not installed)"
    embedding = TSNE(2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(points.double().numpy())
    return torch.from_numpy(embedding), "sklearn.manifold.TSNE"


def exact_tsne(points: torch.Tensor, perplexity: float = 30.0, iterations: int = 750, seed: int = 0) -> torch.Tensor:
    """Exact t-SNE (van der Maaten and Hinton, 2008) for a few thousand points at most: Gaussian affinities with
    per-point bandwidths found by bisection to ``perplexity``, Student-t similarities in 2-D, gradient descent
    with momentum and early exaggeration."""
    x = points.double()
    distances = torch.cdist(x, x).pow(2)
    affinities = _perplexity_affinities(distances, perplexity)
    joint = ((affinities + affinities.T) / (2 * x.shape[0])).clamp_min(1e-12)
    y = torch.randn(x.shape[0], 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 1e-4
    velocity = torch.zeros_like(y)
    for iteration in range(iterations):
        exaggeration, momentum = (12.0, 0.5) if iteration < 250 else (1.0, 0.8)
        kernel = 1.0 / (1.0 + torch.cdist(y, y).pow(2))
        kernel.fill_diagonal_(0.0)
        similarity = (kernel / kernel.sum()).clamp_min(1e-12)
        weights = (exaggeration * joint - similarity) * kernel
        gradient = 4.0 * (weights.sum(1, keepdim=True) * y - weights @ y)
        velocity = momentum * velocity - 200.0 * gradient
        y = y + velocity
        y = y - y.mean(0)
    return y


def _perplexity_affinities(distances: torch.Tensor, perplexity: float, steps: int = 64) -> torch.Tensor:
    """Row-wise conditional probabilities p(j|i) whose entropy is log(perplexity), by bisection on the precision."""
    n = distances.shape[0]
    low = torch.zeros(n, dtype=torch.float64)
    high = torch.full((n,), float("inf"), dtype=torch.float64)
    beta = torch.ones(n, dtype=torch.float64)
    target = math.log(perplexity)
    off_diagonal = ~torch.eye(n, dtype=torch.bool)
    for _ in range(steps):
        shifted = distances - torch.where(off_diagonal, distances, torch.inf).min(1, keepdim=True).values
        kernel = torch.where(off_diagonal, torch.exp(-shifted.clamp_min(0) * beta[:, None]), 0.0)
        total = kernel.sum(1).clamp_min(1e-300)
        probs = kernel / total[:, None]
        entropy = -(probs.clamp_min(1e-300).log() * probs).sum(1)
        too_flat = entropy > target  # raise the precision
        low = torch.where(too_flat, beta, low)
        high = torch.where(too_flat, high, beta)
        beta = torch.where(torch.isinf(high), beta * 2, (low + high) / 2)
    return probs
