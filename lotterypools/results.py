"""Result files (JSON and CSV, written atomically), tables for the terminal, and PNG plots."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .files import atomic_output  # noqa: E402


def log(message: str) -> None:
    """Print a line without breaking the progress bars."""
    from tqdm import tqdm

    tqdm.write(message)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text to a temporary file beside ``path`` and rename it over ``path``."""
    with atomic_output(path) as stream:
        stream.write(text.encode())


def write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        from .errors import UserError
        raise UserError(f"{path} is not valid JSON ({error}); move it away to start a fresh results file") from None


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Rows as CSV; list values are joined with spaces."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: " ".join(map(str, v)) if isinstance(v, (list, tuple)) else v for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], digits: int = 2) -> str:
    """A plain-text table with aligned columns."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        if isinstance(value, (list, tuple)):
            return ",".join(cell(v) for v in value) or "-"
        return "-" if value is None else str(value)

    body = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in body)) if body else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in body]
    return "\n".join(lines)


def provenance(**extra: Any) -> dict[str, Any]:
    """Commit, package versions and machine, stored next to every result."""
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"commit": commit, "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.platform(), **extra}


def plot_training_curve(result: Mapping[str, Sequence[float]], first_epoch: int, title: str,
                        path: str | os.PathLike) -> None:
    """Train/validation/test accuracy per epoch of one IMP round."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("train_ta", "train"), ("val_ta", "validation"), ("test_ta", "test")):
        values = result.get(key, [])
        ax.plot(range(first_epoch + 1, first_epoch + 1 + len(values)), values, label=label)
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_accuracy_vs_density(series: Mapping[str, Iterable[tuple[float, float]]], title: str,
                             path: str | os.PathLike) -> None:
    """Test accuracy against density (log scale, densest on the left), one line per method."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in series.items():
        points = sorted(points, key=lambda p: -p[0])
        if points:
            ax.plot([100 * d for d, _ in points], [a for _, a in points], marker="o", ms=3, label=name)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set(xlabel="density (%) of prunable weights, log scale", ylabel="test accuracy (%)", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_linear_paths(paths: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Test accuracy and loss along the line between consecutive tickets, one curve per pair."""
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4))
    cmap = plt.get_cmap("viridis")
    for index, pair in enumerate(paths):
        colour = cmap(index / max(len(paths) - 1, 1))
        label = f"{pair['round_a']}->{pair['round_b']}"
        acc_ax.plot(pair["alphas"], pair["test_acc"], color=colour, label=label)
        loss_ax.plot(pair["alphas"], pair["test_loss"], color=colour, label=label)
    acc_ax.set(xlabel="alpha (weight on the sparser ticket)", ylabel="test accuracy (%)")
    loss_ax.set(xlabel="alpha (weight on the sparser ticket)", ylabel="test loss")
    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
