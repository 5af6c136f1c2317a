r"""Compare a PrAC run with a full-data IMP run of the same settings: a table, a CSV/JSON of every number, a plot.

Per round: density, ticket test accuracy, training-set size, epochs and optimiser steps of each run, and
(when given) the test accuracy of one pool method over each folder, the same method on both sides and named
in every row and in the figure; then the total steps PrAC saved. Pool folders whose methods differ are refused.

    python benchmarks/prac_vs_imp.py --imp runs/imp --prac runs/prac --imp_pools runs/pools_imp \
        --prac_pools runs/pools_prac --out docs/results/prac_fmnist
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lotterypools.core.errors import UserError, cli_entry  # noqa: E402


def read_json(path: Path, default=None):
    return json.loads(path.read_text()) if path.exists() else default


def pool_records(folder: Path | None) -> list[dict]:
    """The records of ``<folder>/pools_results.json`` other than the tickets' own (none without a folder)."""
    if folder is None:
        return []
    path = Path(folder) / "pools_results.json"
    data = read_json(path)
    if data is None:
        raise UserError(f"{path} not found: give the --save_dir of a Lottery_pools.py run")
    records = data["records"] if isinstance(data, dict) else data
    return [r for r in records if r["method"] != "ticket"]


def common_method(imp_records: list[dict], prac_records: list[dict], method: str | None) -> str | None:
    """The one pool method both folders are compared on: ``method`` if both hold it, else the method both hold
    when they hold the same ones; folders holding different methods are refused, so that no row compares
    one method on the IMP tickets with another on the PrAC tickets."""
    if not imp_records and not prac_records:
        return None
    imp_methods = list(dict.fromkeys(r["method"] for r in imp_records))
    prac_methods = list(dict.fromkeys(r["method"] for r in prac_records))
    if method is not None:
        for flag, methods in (("--imp_pools", imp_methods), ("--prac_pools", prac_methods)):
            if methods and method not in methods:
                raise UserError(f"{flag} holds no {method!r} results (it holds {', '.join(methods)}): run "
                                f"Lottery_pools.py with that method there, or give --method one that both folders hold")
        return method
    if imp_records and prac_records and set(imp_methods) != set(prac_methods):
        raise UserError(f"the pool folders hold different methods (--imp_pools: {', '.join(imp_methods)}; --prac_pools: "
                        f"{', '.join(prac_methods)}): compare the same method, name it with --method")
    methods = imp_methods or prac_methods
    if len(methods) > 1:
        raise UserError(f"the pool folders hold several methods ({', '.join(methods)}): name one with --method")
    return methods[0]


def pooled_accuracy(records: list[dict], method: str | None) -> dict[int, float]:
    """Test accuracy per target round of ``method``."""
    return {r["target_round"]: r["test_acc"] for r in records if r["method"] == method}


def rows(imp: Path, prac: Path, imp_pools: Path | None, prac_pools: Path | None, method: str | None,
         batch_size: int) -> list[dict]:
    imp_summary = {r["round"]: r for r in read_json(imp / "summary.json", [])}
    prac_summary = {r["round"]: r for r in read_json(prac / "summary.json", [])}
    sets = {r["round"]: r for r in read_json(prac / "prac_sets.json", [])}
    imp_records, prac_records = pool_records(imp_pools), pool_records(prac_pools)
    method = common_method(imp_records, prac_records, method)
    imp_lp, prac_lp = pooled_accuracy(imp_records, method), pooled_accuracy(prac_records, method)
    train_images = (sets.get(0) or {}).get("trained")
    table = []
    for k in sorted(set(imp_summary) | set(prac_summary)):
        i, p, s = imp_summary.get(k, {}), prac_summary.get(k, {}), sets.get(k, {})
        imp_epochs = i.get("epochs")
        table.append({
            "round": k, "imp_density": i.get("density"), "prac_density": p.get("density"),
            "imp_test_acc": i.get("test_acc"), "prac_test_acc": p.get("test_acc"), "pool_method": method,
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
    head = ("| round | density % (IMP / PrAC) | ticket test % IMP | PrAC | pool method | pooled test % IMP | PrAC "
            "| images IMP | PrAC | epochs IMP | PrAC | iterations IMP | PrAC |")
    lines = [head, "|" + "---|" * 13]
    for r in table:
        density = f"{fmt(100 * r['imp_density'] if r['imp_density'] else None)} / {fmt(100 * r['prac_density'] if r['prac_density'] else None)}"
        lines.append(f"| {r['round']} | {density} | {fmt(r['imp_test_acc'])} | {fmt(r['prac_test_acc'])} | "
                     f"{fmt(r['pool_method'])} | {fmt(r['imp_lp_test_acc'])} | {fmt(r['prac_lp_test_acc'])} | {fmt(r['imp_images'])} | "
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
    method = next((r["pool_method"] for r in table if r.get("pool_method")), None)
    for key, label, style in (("imp_test_acc", "IMP ticket", "o-"), ("prac_test_acc", "PrAC ticket", "s-"),
                              ("imp_lp_test_acc", f"IMP + {method}", "o--"), ("prac_lp_test_acc", f"PrAC + {method}", "s--")):
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
    if method:
        ax.set_title(f"pooled: {method} on both sides", fontsize=9)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    """The script's flags (tests/project/test_doc_commands.py parses the documented command with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--imp", type=Path, required=True, help="main_imp.py run folder")
    parser.add_argument("--prac", type=Path, required=True, help="main_PrAC_imp.py run folder")
    parser.add_argument("--imp_pools", type=Path, default=None, help="Lottery_pools.py --save_dir over the IMP folder")
    parser.add_argument("--prac_pools", type=Path, default=None, help="Lottery_pools.py --save_dir over the PrAC folder")
    parser.add_argument("--method", default=None, help="pool method to compare; both pool folders must hold it (default: their one method)")
    parser.add_argument("--batch_size", type=int, default=128, help="IMP batch size, for its iteration count (default 128)")
    parser.add_argument("--out", type=Path, default=None, help="write <out>.json, <out>.csv and <out>.png")
    return parser


@cli_entry(interrupted="interrupted: nothing was written")
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
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
