r"""Evaluate a folder of free tickets on the test set (FreeTickets' ensemble_freetickets.py).

Example (the FreeTickets README):
    resume=results/wrn-28-10/cifar10/random/seed17/density_0.2/EDST/M=3/
    python ensemble_freetickets.py --mode predict --resume $resume --dataset cifar10 --model wrn-28-10 \
        --seed 18 --test-batch-size 128
Modes: predict (member and ensemble accuracy and NLL), calibration (also ECE and Brier), disagreement
(pairwise prediction disagreement), KD (pairwise KL divergence), tsne (the training runs' test predictions
per epoch, embedded in 2-D). Each mode adds its numbers under its name to <resume>/ensemble_results.json and
draws <resume>/<mode>.png. A folder of DST runs (DST/seed=N/model.pth) is read as one ensemble.
"""

from __future__ import annotations

import argparse

from ..aliases import add_no_effect_flags, aliases_of
from ...config.pools import AnalysisSettings
from ...config.settings import add_config_arguments
from ...config.sparse import FreeTicketsSettings
from ...core.errors import NOTHING_TO_RESUME, UserError, cli_entry

MODES = ("predict", "disagreement", "calibration", "KD", "tsne")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    aliases = aliases_of("ensemble_freetickets")
    parser.add_argument("--mode", default="predict", help=f"{', '.join(MODES)} (default predict)")
    parser.add_argument("--tickets_dir", *aliases["tickets_dir"], dest="tickets_dir", required=True,
                        help="folder holding the tickets (model_0.pth, ...; or DST's seed=N/ runs); --resume is this "
                             "script's spelling (the original's)")
    add_config_arguments(parser, {"data": "data set and model"}, only=("dataset",), aliases=aliases)
    add_config_arguments(parser, {"model": "data set and model"}, cls=FreeTicketsSettings)
    add_config_arguments(parser, {"freetickets": "checks"}, cls=AnalysisSettings)
    add_config_arguments(parser, {"evaluation": "evaluation"}, cls=FreeTicketsSettings, defaults={"test_batch_size": 128})
    parser.add_argument("--statistics", default="original",
                        help="original: the numbers as the original prints them (population std over members, mean "
                             "disagreement over the pairs that disagree, unfloored log-probabilities, 14 ECE bins); ours: "
                             "sample std, every pair, probabilities floored at 1e-12, 15 bins (default original)")
    add_config_arguments(parser, {"model": "t-SNE"}, defaults={"seed": 18}, only=("seed",))
    parser.add_argument("--data_dir", default="../data", help="folder holding the data set (default ../data)")
    parser.add_argument("--no_download", action="store_true", help="never download a missing data set")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    add_no_effect_flags(parser, "ensemble_freetickets")
    return parser


@cli_entry(interrupted=NOTHING_TO_RESUME)  # its --resume names the tickets' folder
def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.mode not in MODES:
        raise UserError(f"unknown --mode {args.mode!r}: choose one of {', '.join(MODES)}")
    from ...analysis.freetickets import RESULTS_NAME, STATISTICS

    if args.statistics not in STATISTICS:
        raise UserError(f"unknown --statistics {args.statistics!r}: choose one of {', '.join(STATISTICS)}")
    from pathlib import Path

    from ...core.console import log
    from ...core.records import read_json, write_json

    from ...core.files import check_writable_folder

    folder = Path(args.tickets_dir)
    if folder.is_dir():  # the results go into the tickets' folder: refuse an unwritable one before the work
        check_writable_folder(folder, "--tickets_dir", create=False)
    result = run_tsne(args, folder) if args.mode == "tsne" else run_on_tickets(args, folder)
    results_path = folder / RESULTS_NAME
    write_json(results_path, {**read_json(results_path, default={}), args.mode: result})
    log(f"{args.mode}: numbers in {results_path}, picture in {folder / (args.mode + '.png')}")
    return result


def run_on_tickets(args: argparse.Namespace, folder) -> dict:
    """predict / calibration / disagreement / KD: every ticket's test probabilities, then the mode's numbers."""
    from ...analysis.ensembles import member_probabilities
    from ...data.datasets import BatchSource, freetickets_spec, load_dataset
    from ...core.device import resolve_device
    from ...models import build_model
    from ...core.console import log
    from ...training.sparse import check_density, sparse_weight_names
    from ...analysis.freetickets import (calibration_summary, disagreement_summary, find_tickets, kl_summary, load_tickets,
                                    predict_summary)

    if args.density is not None:
        check_density(args.density)
    spec = freetickets_spec(args.dataset)
    model = build_model(args.model, spec.num_classes, spec.channels, spec.mean, spec.std, spec.image_size)
    tickets = load_tickets(find_tickets(folder), model.state_dict(), sparse_weight_names(model), args.model, args.density,
                           dataset=spec.name, normalisation=(spec.mean, spec.std))
    names = [str(t.path.relative_to(folder)) for t in tickets]
    log(f"{len(tickets)} tickets of {args.model} in {folder}: " +
        ", ".join(f"{n} (density {t.density:.4f})" for n, t in zip(names, tickets)))
    device = resolve_device(args.device)
    data = load_dataset(args.dataset, args.data_dir, download=not args.no_download)
    batches = BatchSource(data.test, args.test_batch_size, device)
    members, labels = member_probabilities(model.to(device), {n: t.weights for n, t in zip(names, tickets)}, batches, device)
    densities = {n: t.density for n, t in zip(names, tickets)}
    if args.mode == "predict":
        result = predict_summary(members, labels, args.statistics)
        plot_members(result, ("accuracy", "nll"), folder / "predict.png", args.model)
    elif args.mode == "calibration":
        result = calibration_summary(members, labels, args.statistics)
        plot_reliability(members, labels, folder / "calibration.png", args.model)
    elif args.mode == "disagreement":
        result = disagreement_summary(members, args.statistics)
        plot_matrix(result, "prediction disagreement", folder / "disagreement.png")
    else:
        result = kl_summary(members, args.statistics)
        plot_matrix(result, "KL(row || column)", folder / "KD.png")
    result.update({"densities": densities, "test_images": len(labels), "dataset": args.dataset, "model": args.model})
    log(summary_line(args.mode, result))
    return result


def summary_line(mode: str, result: dict) -> str:
    """One log line; says which statistics (the original's or ours) the numbers follow."""
    original = result.get("statistics", "original") == "original"
    if mode in ("predict", "calibration"):
        member, ensemble = result["member_mean"], result["ensemble"]
        std = "population std, as the original" if original else "sample std (ours)"
        parts = [f"{k} members {v['mean']:.4f} ± {v['std']:.4f}, ensemble {ensemble[k]:.4f}" for k, v in member.items()]
        return "; ".join(parts) + f" ({std})"
    if mode == "disagreement":
        pairs = "over the pairs that disagree, as the original" if original else "over all pairs (ours)"
        return f"mean pairwise disagreement {pairs}: {result['mean']}"
    return f"mean pairwise KL divergence ({'the original' if original else 'ours'}): {result['mean']}"


def run_tsne(args: argparse.Namespace, folder) -> dict:
    """Embed every run's per-epoch test predictions together and draw one line per run."""
    import torch

    from ...core.torchfiles import load_file
    from ...analysis.freetickets import find_trajectories, tsne_embedding

    runs = [load_file(path) for path in find_trajectories(folder)]
    points = torch.cat([run["probs"].double().flatten(1) for run in runs])
    embedding, method = tsne_embedding(points, seed=args.seed)
    lengths = [len(run["epochs"]) for run in runs]
    pieces = torch.split(embedding, lengths)
    result = {"method": method, "runs": [
        {"name": run["name"], "epochs": run["epochs"], "phases": run["phases"], "xy": piece.tolist()}
        for run, piece in zip(runs, pieces)]}
    plot_tsne(result, folder / "tsne.png")
    return result


# ---------------------------------------------------------------------------------------------- pictures
def plot_members(result: dict, metrics, path, title: str) -> None:
    from ...analysis.plots import plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4))
    names = list(result["members"])
    for ax, metric in zip(axes, metrics):
        values = [result["members"][n][metric] for n in names] + [result["ensemble"][metric]]
        colours = ["tab:blue"] * len(names) + ["tab:red"]
        ax.bar(range(len(values)), values, color=colours)
        ax.set_xticks(range(len(values)), [n.replace("/model.pth", "") for n in names] + ["ensemble"], rotation=30, ha="right", fontsize=8)
        low, high = min(values), max(values)
        ax.set_ylim(low - 0.1 * (high - low + 1e-9) - (0.5 if metric == "accuracy" else 0.01), high + 0.1 * (high - low + 1e-9))
        ax.set_ylabel("test accuracy (%)" if metric == "accuracy" else "test NLL")
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{title}: members and their output ensemble", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_reliability(members, labels, path, title: str) -> None:
    from ...analysis.ensembles import average_probabilities
    from ...analysis.calibration import ECE_BINS, reliability_bins
    from ...analysis.plots import plt

    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    curves = {**members, "ensemble": average_probabilities(list(members.values()))}
    for name, probs in curves.items():
        count, conf_sum, correct_sum = reliability_bins(probs, labels, ECE_BINS)
        filled = count > 0
        ax.plot((conf_sum[filled] / count[filled]).tolist(), (correct_sum[filled] / count[filled]).tolist(),
                "s-" if name == "ensemble" else "o--", ms=3, lw=2 if name == "ensemble" else 1,
                label=name.replace("/model.pth", ""))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    ax.set(xlabel="confidence", ylabel="accuracy", title=f"{title}: reliability ({ECE_BINS} bins)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_matrix(result: dict, label: str, path) -> None:
    from ...analysis.plots import plot_heat_map

    names = [n.replace("/model.pth", "") for n in result["names"]]
    which = "the original's mean" if result.get("statistics", "original") == "original" else "mean (ours)"
    plot_heat_map(result["matrix"], names, f"{which} {result['mean']:.4f}", label, path, digits=3)


def plot_tsne(result: dict, path) -> None:
    from ...analysis.plots import plt

    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for run in result["runs"]:
        xy = run["xy"]
        line = ax.plot([p[0] for p in xy], [p[1] for p in xy], "-", lw=0.8, alpha=0.6)[0]
        ax.scatter([p[0] for p in xy], [p[1] for p in xy], s=[8 + 30 * i / max(len(xy) - 1, 1) for i in range(len(xy))],
                   color=line.get_color(), label=run["name"])
        ends = [i for i in range(len(xy)) if i + 1 == len(xy) or run["phases"][i + 1] != run["phases"][i]]
        ax.scatter([xy[i][0] for i in ends], [xy[i][1] for i in ends], marker="*", s=120, color=line.get_color(),
                   edgecolor="black", linewidths=0.5)
    ax.set(title=f"t-SNE of per-epoch test predictions ({result['method'].split(' (')[0]})", xticks=[], yticks=[])
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
