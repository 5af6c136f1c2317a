"""Create lottery tickets by iterative magnitude pruning (IMP), with or without weight rewinding.

The code is in lotterypools/cli/commands/main_imp.py (installed as the console command `lotterypools-imp`); --help lists the flags.
"""

from lotterypools.cli.commands.main_imp import build_parser, main  # noqa: F401 (build_parser: for tools that read the flags)

if __name__ == "__main__":
    main()
