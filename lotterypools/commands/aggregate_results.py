r"""Combine the pools results of several seeds: mean ± std of test accuracy per (method, density).

Example (three seeds of the README's quickstart experiment):
    python aggregate_results.py runs/fmnist_conv4_seed41 runs/fmnist_conv4_seed42 runs/fmnist_conv4_seed43 \
        --out runs/fmnist_conv4_3seeds

Writes to --out: table.md and table.csv (the paper's layout: density rows, method columns, mean ± std),
gain.md and gain.csv (gain over the same seed's ticket), aggregate.json (every number, per-seed values
included), accuracy_vs_density.png (mean with a ± std band) and gain_vs_density.png. Folders of other
architectures, data sets or settings are refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import NOTHING_TO_RESUME, UserError, cli_entry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_folders", nargs="+", metavar="RUN_FOLDER",
                        help="run folders (or their pools_results.json) of one experiment, one per seed")
    parser.add_argument("--out", required=True, help="folder for the tables, aggregate.json and the plots")
    parser.add_argument("--title", default=None, help="plot title (default '<arch> on <dataset>, n seeds')")
    parser.add_argument("--digits", type=int, default=2, help="decimals in the Markdown tables (default 2)")
    parser.add_argument("--only", action="append", default=[], metavar="FIELD=VALUE",
                        help="keep one method or settings group of folders that hold several, e.g. "
                             "--only method=Lottery_pools or --only search_num=50 (repeatable; ticket rows are kept)")
    return parser


@cli_entry(interrupted=NOTHING_TO_RESUME)
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from ..aggregate import aggregate, csv_rows, markdown_table, parse_only, read_run_folder
    from ..console import log
    from ..files import check_writable_folder
    from ..plots import plot_mean_std_vs_density
    from ..results import atomic_write_text, write_csv, write_json

    out = Path(args.out)
    if not 0 <= args.digits <= 10:
        raise UserError(f"--digits {args.digits} must be 0 to 10 (decimals in the Markdown tables)")
    only = parse_only(args.only)
    runs = [read_run_folder(folder, only) for folder in args.run_folders]  # every file checked before any work
    summary = aggregate(runs)
    check_writable_folder(out, "--out")
    title = args.title or f"{summary['arch']} on {summary['dataset']}, {len(runs)} seeds (mean ± std)"
    write_json(out / "aggregate.json", summary)
    for name, table, signed in (("table", summary["test_acc"], False), ("gain", summary["gain_over_ticket"], True)):
        atomic_write_text(out / f"{name}.md", markdown_table(table, args.digits, signed) + "\n")
        columns, rows = csv_rows(table)
        write_csv(out / f"{name}.csv", rows, columns)
    plot_mean_std_vs_density(summary["test_acc"], title, "test accuracy (%)", out / "accuracy_vs_density.png")
    plot_mean_std_vs_density(summary["gain_over_ticket"], f"{title}: gain over the ticket",
                             "test accuracy − ticket's (points)", out / "gain_vs_density.png", zero_line=True)
    log(markdown_table(summary["test_acc"], args.digits))
    log(f"seeds {summary['seeds']}; written to {out}: table.md/.csv, gain.md/.csv, aggregate.json, "
        f"accuracy_vs_density.png, gain_vs_density.png")
