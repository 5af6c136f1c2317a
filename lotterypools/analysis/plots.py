"""Every PNG plot of the project (matplotlib, Agg backend): imported only by front ends and result writers.

The library (search, masks, training, IMP) never imports this module at import time, so importing
``lotterypools.pools.search`` neither loads matplotlib nor changes a notebook's backend.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import torch  # noqa: E402

from ..pools.results import PoolResultsFile, method_label  # noqa: E402


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


def density_axis(ax: Any, densities_percent: Iterable[float]) -> None:
    """Log-scaled density axis, densest on the left, with one readable tick label per density that occurs."""
    ticks = sorted({round(d, 6) for d in densities_percent}, reverse=True)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xticks(ticks, [f"{d:.3g}" for d in ticks], rotation=45 if len(ticks) > 8 else 0,
                  fontsize=8 if len(ticks) > 8 else 9)
    if ticks:
        ax.set_xlim(ticks[0] * 1.08, ticks[-1] / 1.08)  # reversed limits: densest on the left


def _save(fig: Any, path: str | os.PathLike, dpi: int = 150) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def plot_accuracy_vs_density(series: Mapping[str, Iterable[tuple[float, float]]], title: str,
                             path: str | os.PathLike) -> None:
    """Test accuracy against density (log scale, densest on the left), one line per method."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    densities = []
    for name, points in series.items():
        points = sorted(points, key=lambda p: -p[0])
        if points:
            densities += [100 * d for d, _ in points]
            ax.plot([100 * d for d, _ in points], [a for _, a in points], marker="o", ms=3, label=method_label(name),
                    **({"color": "black", "linestyle": "--"} if name == "ticket" else {}))
    density_axis(ax, densities)
    ax.set(xlabel="density (%) of prunable weights, log scale", ylabel="test accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def series_label(name: str, rows: Sequence[Mapping[str, Any]], seeds: int) -> str:
    """The method's name, with "(n of N seeds)" when its rows rest on fewer seeds than the figure's others."""
    counts = [r["n"] for r in rows if "n" in r]
    fewest = min(counts, default=seeds)
    return method_label(name) + (f" ({fewest} of {seeds} seeds)" if fewest < seeds else "")


def most_seeds(table: Mapping[str, Sequence[Mapping[str, Any]]]) -> int:
    """The largest seed count of any row of the table (0 when no row says)."""
    return max((r.get("n", 0) for rows in table.values() for r in rows), default=0)


def plot_mean_std_vs_density(table: Mapping[str, Sequence[Mapping[str, float]]], title: str, ylabel: str,
                             path: str | os.PathLike, zero_line: bool = False) -> None:
    """Mean against density with a band of ± one standard deviation, one line per method.

    ``table[method]`` is a list of ``{"density": fraction, "mean": value, "std": value}``.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    densities, seeds = [], most_seeds(table)
    for name, rows in table.items():
        rows = sorted(rows, key=lambda r: -r["density"])
        if not rows:
            continue
        x = [100 * r["density"] for r in rows]
        mean = [r["mean"] for r in rows]
        std = [r["std"] for r in rows]
        densities += x
        style = {"color": "black", "linestyle": "--"} if name == "ticket" else {}
        line, = ax.plot(x, mean, marker="o", ms=3, label=series_label(name, rows, seeds), **style)
        ax.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=line.get_color(), alpha=0.15, linewidth=0)
    if zero_line:
        ax.axhline(0.0, color="grey", linewidth=0.8)
    density_axis(ax, densities)
    ax.set(xlabel="density (%) of prunable weights, log scale", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_gain_intervals(table: Mapping[str, Sequence[Mapping[str, Any]]], title: str,
                        path: str | os.PathLike, floor: float = -3.0) -> None:
    """Paired gain over the ticket against density: the mean with its confidence interval as error bars.

    ``table[method]`` is a list of ``{"density", "mean", "ci_low", "ci_high"}`` (intervals may be None for one
    seed); the methods are offset a little along the log-density axis so that their bars do not overlap. Means
    below ``floor`` are named in the figure rather than stretching its axis.
    """
    methods = [m for m in table if table[m]]
    fig, ax = plt.subplots(figsize=(11, 4.5) if len(methods) > 6 else (7, 4.5))
    densities, seeds = [], most_seeds(table)
    for index, name in enumerate(methods):
        rows = sorted(table[name], key=lambda r: -r["density"])
        shift = 1.0 + 0.025 * (index - (len(methods) - 1) / 2)
        x = [100 * r["density"] * shift for r in rows]
        mean = [r["mean"] for r in rows]
        low = [r["mean"] - r["ci_low"] if r.get("ci_low") is not None else 0.0 for r in rows]
        high = [r["ci_high"] - r["mean"] if r.get("ci_high") is not None else 0.0 for r in rows]
        densities += [100 * r["density"] for r in rows]
        ax.errorbar(x, mean, yerr=[low, high], marker="o", ms=3, capsize=2, linewidth=1,
                    label=series_label(name, rows, seeds))
    ax.axhline(0.0, color="grey", linewidth=0.8)
    density_axis(ax, densities)
    clip_collapses(ax, table, floor)
    ax.set(xlabel="density (%) of prunable weights, log scale", ylabel="gain over the ticket (points)", title=title)
    ax.grid(alpha=0.3)
    # many rows: the legend beside the axes, so it hides no bar
    ax.legend(fontsize=8, **({"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)} if len(methods) > 6 else {}))
    _save(fig, path)


def plot_accuracy_vs_budget(rows: Sequence[Mapping[str, Any]], title: str, path: str | os.PathLike) -> None:
    """One panel per density: each row's test accuracy (mean ± std) against its training epochs, the marker's area
    growing with the weights it evaluates at inference, so "what wins at which budget" reads off one figure.

    ``rows`` are :func:`lotterypools.experiments.report.budget_rows`: ``round``, ``density``, ``method``,
    ``label``, ``mean``, ``std``, ``epochs``, ``weights``.
    """
    rounds = sorted({r["round"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    markers = dict(zip(methods, "oDs^v<>pPX*h" * 2))
    columns = min(3, len(rounds))
    fig, axes = plt.subplots(-(-len(rounds) // columns), columns, figsize=(4.6 * columns, 3.8 * -(-len(rounds) // columns)),
                             squeeze=False)
    panels = list(axes.flat)
    for ax, round_index in zip(panels, rounds):
        at = [r for r in rows if r["round"] == round_index and r["epochs"] is not None]
        smallest = min((r["weights"] for r in at if r["weights"]), default=1)
        span = max(r["epochs"] for r in at) - min(r["epochs"] for r in at) or 1.0
        for r in at:  # rows of equal epochs side by side: SMS and 3x IMP spend the same training
            x = r["epochs"] + 0.02 * span * (methods.index(r["method"]) - (len(methods) - 1) / 2)
            size = 30 * (r["weights"] / smallest) ** 0.5 if r["weights"] else 30
            ax.errorbar(x, r["mean"], yerr=r["std"], fmt="none", ecolor=colours[r["method"]], capsize=2)
            ax.scatter(x, r["mean"], s=size, marker=markers[r["method"]], color=colours[r["method"]],
                       edgecolor="black", linewidth=0.5, zorder=3, label=r["label"])
        ax.set(title=f"density {100 * at[0]['density']:.3g}%" if at else "", xlabel="training epochs",
               ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in panels[len(rounds):]:
        ax.set_visible(False)
    by_label: dict = {}
    for ax in panels[:len(rounds)]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            by_label.setdefault(label, handle)
    fig.legend(by_label.values(), by_label.keys(), loc="upper center", ncol=min(3, len(by_label)), fontsize=8,
               markerscale=0.7, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title + "; marker area: weights at inference", fontsize=10)
    _save(fig, path)


def clip_collapses(ax: Any, table: Mapping[str, Sequence[Mapping[str, Any]]], floor: float) -> None:
    """Keep the y axis at or above ``floor`` points, so one collapsed method (EMA at the sparsest ticket loses tens
    of points) does not flatten every other bar to a line; the points below are named in the figure instead."""
    below = [f"{method_label(name)} {r['mean']:+.1f} at {100 * r['density']:.3g}%"
             for name, rows in table.items() for r in rows if r["mean"] < floor]
    if below:
        highest = max((r["mean"] for rows in table.values() for r in rows if r["mean"] >= floor), default=0.0)
        # a collapsed row's interval is as wide as its fall: it may leave the top too, rather than flatten the rest
        ax.set_ylim(floor, min(ax.get_ylim()[1], max(highest, 0.0) - floor))
        ax.text(0.0, -0.22, "off scale: " + "; ".join(below), transform=ax.transAxes, fontsize=7, va="top",
                wrap=True)  # below the density labels, not over the bars


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


def plot_heat_map(matrix: Sequence[Sequence[float]], labels: Sequence[str], title: str, colour_label: str,
                  path: str | os.PathLike, column_labels: Sequence[str] | None = None, digits: int = 1) -> None:
    """A matrix as a heat map with its values written in the cells."""
    rows, columns = len(matrix), len(matrix[0])
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * columns, 1.0 + 0.45 * rows))
    image = ax.imshow(matrix, cmap="viridis")
    ax.set_xticks(range(columns), column_labels or labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(rows), labels, fontsize=8)
    low, high = min(map(min, matrix)), max(map(max, matrix))
    for i in range(rows):
        for j in range(columns):
            bright = high > low and (matrix[i][j] - low) / (high - low) > 0.6
            ax.text(j, i, f"{matrix[i][j]:.{digits}f}", ha="center", va="center", fontsize=7,
                    color="black" if bright else "white")
    fig.colorbar(image, ax=ax, label=colour_label, shrink=0.8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_ensemble(records: Sequence[Mapping], title: str, path: str | os.PathLike) -> None:
    """Accuracy, NLL and ECE against density: the ticket, its output ensemble and the pooled ticket."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    densities = [100 * r["density"] for r in records]
    for ax, metric, label in zip(axes, ("accuracy", "nll", "ece"), ("test accuracy (%)", "test NLL", "ECE (15 bins)")):
        for kind, style in (("ticket", "o-"), ("ensemble", "s--"), ("pooled", "^-")):
            points = [(d, r[kind][metric]) for d, r in zip(densities, records) if kind in r]
            if points:
                ax.plot(*zip(*points), style, ms=4, label=kind)
        density_axis(ax, densities)
        ax.set(xlabel="density (%)", ylabel=label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_corruption_examples(images_by_name: Mapping[str, Sequence[torch.Tensor]], path: str | os.PathLike) -> None:
    """One test image under every corruption (rows) and severity (columns); images are uint8 (C, H, W)."""
    names = list(images_by_name)
    columns = len(next(iter(images_by_name.values())))
    fig, axes = plt.subplots(len(names), columns, figsize=(1.1 * columns + 1.4, 1.1 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        for column, image in enumerate(images_by_name[name]):
            ax = axes[row][column]
            picture = image.permute(1, 2, 0).numpy()
            ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
            if row == 0:
                ax.set_title(f"severity {column + 1}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def plot_pool_results(results: PoolResultsFile, title: str = "") -> None:
    """A pool results folder's ``pools_accuracy.png`` (and ``linear_interpolation.png`` when it holds paths)."""
    if results.records:
        plot_accuracy_vs_density(results.series(), title, results.save_dir / "pools_accuracy.png")
    if results.linear:
        plot_linear_paths(results.linear, results.save_dir / "linear_interpolation.png")
