r"""Combine the pools results of several seeds: mean ± std of test accuracy per (method, density).

Example (three seeds of the README's quickstart experiment):
    python aggregate_results.py runs/fmnist_conv4_seed41 runs/fmnist_conv4_seed42 runs/fmnist_conv4_seed43 \
        --out runs/fmnist_conv4_3seeds

Writes to --out: table.md and table.csv (the paper's layout: density rows, method columns, mean ± std),
table.tex (LaTeX), gain.md/.csv/.tex (the paired gain over the same seed's ticket: mean ± std, 95% t
interval over seeds, seeds that gained, verdict), aggregate.json (every number, per-seed values included),
accuracy_vs_density.png (mean with a ± std band) and gain_vs_density.png (mean with 95% interval error bars).
Folders of other architectures, data sets or settings are refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ...config.commands import ReportSettings
from ...config.settings import add_config_arguments
from ...core.errors import NOTHING_TO_RESUME, cli_entry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("run_folders", nargs="+", metavar="RUN_FOLDER",
                        help="run folders (or their pools_results.json) of one experiment, one per seed")
    parser.add_argument("--out", required=True, help="folder for the tables, aggregate.json and the plots")
    parser.add_argument("--title", default=None, help="plot title (default: model and data set in words, and the number of seeds)")
    add_config_arguments(parser, {"report": "tables"}, cls=ReportSettings)
    parser.add_argument("--only", action="append", default=[], metavar="FIELD=VALUE",
                        help="keep one method or settings group of folders that hold several, e.g. "
                             "--only method=Lottery_pools or --only search_num=50 (repeatable; ticket rows are kept)")
    return parser


@cli_entry(interrupted=NOTHING_TO_RESUME)
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from ...analysis.aggregate import check_combinable, gain_markdown, markdown_table, parse_only, read_run_folder
    from ...core.console import log
    from ...core.files import check_writable_folder
    from ...experiments.report import write_report

    out = Path(args.out)
    only = parse_only(args.only)
    runs = [read_run_folder(folder, only) for folder in args.run_folders]  # every file checked before any work
    check_combinable(runs)  # refused folders leave no --out folder behind
    check_writable_folder(out, "--out")
    summary = write_report(runs, out, args.title, args.digits)
    log(markdown_table(summary["test_acc"], args.digits))
    log(gain_markdown(summary, args.digits))
    log(f"seeds {summary['seeds']}; written to {out}: table.md/.csv/.tex, gain.md/.csv/.tex, aggregate.json, "
        f"accuracy_vs_density.png, gain_vs_density.png")
