"""Mean ± std over seeds of Lottery Pools results, in the paper's table layout, with plots.

The code is in lotterypools/cli/commands/aggregate_results.py (installed as the console command `lotterypools-aggregate`); --help lists the flags.
"""

from lotterypools.cli.commands.aggregate_results import build_parser, main  # noqa: F401 (build_parser: for tools that read the flags)

if __name__ == "__main__":
    main()
