"""Analyses of the tickets of an IMP run: OOD accuracy, ensembles, disagreement, pairwise averages.

The code is in lotterypools/cli/commands/analyze_tickets.py (installed as the console command `lotterypools-analyze`); --help lists the flags.
"""

from lotterypools.cli.commands.analyze_tickets import build_parser, main  # noqa: F401 (build_parser: for tools that read the flags)

if __name__ == "__main__":
    main()
