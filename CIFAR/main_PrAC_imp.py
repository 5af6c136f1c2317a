"""Find lottery tickets on the pruning-aware critical set (PrAC-LTH's main_PrAC_imp.py).

The code is in lotterypools/cli/commands/main_prac_imp.py (installed as the console command `lotterypools-prac-imp`); --help lists the flags.
"""

from lotterypools.cli.commands.main_prac_imp import build_parser, main  # noqa: F401 (build_parser: for tools that read the flags)

if __name__ == "__main__":
    main()
