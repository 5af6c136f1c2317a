r"""Compare a PrAC run with a full-data IMP run of the same settings: a table, a CSV/JSON of every number, a plot.

Per round: density, ticket test accuracy, training-set size, epochs and optimiser steps of each run, and
(when given) the Lottery Pools test accuracy over each folder; then the total steps PrAC saved.

    python benchmarks/prac_vs_imp.py --imp runs/imp --prac runs/prac --imp_pools runs/pools_imp \
        --prac_pools runs/pools_prac --out docs/results/prac_fmnist
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path


def read_json(path: Path, default=None):
    return json.loads(path.read_text()) if path.exists() else default


def pooled_accuracy(folder: Path | None, method: str | None) -> dict[int, float]:
    """Test accuracy per target round of a pool method in ``pools_results.json`` (first pool method if none named)."""
    if folder is None:
        return {}
    data = read_json(Path(folder) / "pools_results.json", default={})
    records = data["records"] if isinstance(data, dict) else data
    methods = [r["method"] for r in records if r["method"] != "ticket"]
    chosen = method or (methods[0] if methods else None)
    return {r["target_round"]: r["test_acc"] for r in records if r["method"] == chosen}


def rows(imp: Path, prac: Path, imp_pools: Path | None, prac_pools: Path | None, method: str | None,
         batch_size: int) -> list[dict]:
    imp_summary = {r["round"]: r for r in read_json(imp / "summary.json", [])}
    prac_summary = {r["round"]: r for r in read_json(prac / "summary.json", [])}
    sets = {r["round"]: r for r in read_json(prac / "prac_sets.json", [])}
    imp_lp, prac_lp = pooled_accuracy(imp_pools, method), pooled_accuracy(prac_pools, method)
    train_images = (sets.get(0) or {}).get("trained")
    table = []
    for k in sorted(set(imp_summary) | set(prac_summary)):
        i, p, s = imp_summary.get(k, {}), prac_summary.get(k, {}), sets.get(k, {})
        imp_epochs = i.get("epochs")
        table.append({
            "round": k, "imp_density": i.get("density"), "prac_density": p.get("density"),
            "imp_test_acc": i.get("test_acc"), "prac_test_acc": p.get("test_acc"),
            "imp_lp_test_acc": imp_lp.get(k), "prac_lp_test_acc": prac_lp.get(k),
            "imp_images": train_images, "prac_images": s.get("trained"),
            "imp_epochs": imp_epochs, "prac_epochs": s.get("epochs", p.get("epochs")),
            "imp_iterations": i.get("iterations", imp_epochs * math.ceil(train_images / batch_size))
            if imp_epochs is not None and train_images else None,
            "prac_iterations": s.get("iterations"), "prac_cet": s.get("cet"), "prac_cep": s.get("cep"),
        })
    return table


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(table: list[dict]) -> str:
    head = ("| round | density % (IMP / PrAC) | ticket test % IMP | PrAC | LP test % IMP | LP PrAC | images IMP | PrAC "
            "| epochs IMP | PrAC | iterations IMP | PrAC |")
    lines = [head, "|" + "---|" * 12]
    for r in table:
        density = f"{fmt(100 * r['imp_density'] if r['imp_density'] else None)} / {fmt(100 * r['prac_density'] if r['prac_density'] else None)}"
        lines.append(f"| {r['round']} | {density} | {fmt(r['imp_test_acc'])} | {fmt(r['prac_test_acc'])} | "
                     f"{fmt(r['imp_lp_test_acc'])} | {fmt(r['prac_lp_test_acc'])} | {fmt(r['imp_images'])} | "
                     f"{fmt(r['prac_images'])} | {fmt(r['imp_epochs'])} | {fmt(r['prac_epochs'])} | "
                     f"{fmt(r['imp_iterations'])} | {fmt(r['prac_iterations'])} |")
    imp_total = sum(r["imp_iterations"] or 0 for r in table)
    prac_total = sum(r["prac_iterations"] or 0 for r in table)
    if imp_total:
        lines.append(f"\nTotal iterations: IMP {imp_total}, PrAC {prac_total}: PrAC saved {imp_total - prac_total} "
                     f"({100 * (imp_total - prac_total) / imp_total:.1f}%).")
    return "\n".join(lines)


def plot(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for key, label, style in (("imp_test_acc", "IMP ticket", "o-"), ("prac_test_acc", "PrAC ticket", "s-"),
                              ("imp_lp_test_acc", "IMP + Lottery Pools", "o--"), ("prac_lp_test_acc", "PrAC + Lottery Pools", "s--")):
        density = "imp_density" if key.startswith("imp") else "prac_density"
        points = [(100 * r[density], r[key]) for r in table if r[key] is not None and r[density]]
        if points:
            ax.plot(*zip(*points), style, label=label)
    ax.set_xscale("log")
    densities = sorted({100 * r["imp_density"] for r in table if r["imp_density"]}, reverse=True)
    ax.set_xticks(densities, [f"{d:.1f}" for d in densities])
    ax.minorticks_off()
    ax.invert_xaxis()
    ax.set_xlabel("density (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--imp", type=Path, required=True, help="main_imp.py run folder")
    parser.add_argument("--prac", type=Path, required=True, help="main_PrAC_imp.py run folder")
    parser.add_argument("--imp_pools", type=Path, default=None, help="Lottery_pools.py --save_dir over the IMP folder")
    parser.add_argument("--prac_pools", type=Path, default=None, help="Lottery_pools.py --save_dir over the PrAC folder")
    parser.add_argument("--method", default=None, help="pool method to report (default: the first in the files)")
    parser.add_argument("--batch_size", type=int, default=128, help="IMP batch size, for its iteration count (default 128)")
    parser.add_argument("--out", type=Path, default=None, help="write <out>.json, <out>.csv and <out>.png")
    args = parser.parse_args()
    table = rows(args.imp, args.prac, args.imp_pools, args.prac_pools, args.method, args.batch_size)
    print(markdown(table))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(table, indent=2))
        with open(args.out.with_suffix(".csv"), "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
        plot(table, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
