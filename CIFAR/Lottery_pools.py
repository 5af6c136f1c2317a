"""Lottery Pools over the tickets of an IMP run folder, and its baselines (SWA, EMA, linear paths).

The code is in lotterypools/cli/commands/lottery_pools.py (installed as the console command `lotterypools-pools`); --help lists the flags.
"""

from lotterypools.cli.commands.lottery_pools import build_parser, main  # noqa: F401 (build_parser: for tools that read the flags)

if __name__ == "__main__":
    main()
