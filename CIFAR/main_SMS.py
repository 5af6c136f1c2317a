"""Sparse Model Soups: retrain m copies of each phase's pruned soup and merge them (uniform or greedy).

The code is in lotterypools/cli/commands/main_sms.py (installed as the console command `lotterypools-sms`); --help lists the flags.
"""

from lotterypools.cli.commands.main_sms import build_parser, main  # noqa: F401 (build_parser: for tools that read the flags)

if __name__ == "__main__":
    main()
