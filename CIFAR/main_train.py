"""Retrain a subnetwork: the mask of one checkpoint, the initialisation of another (or a random one).

The code is in lotterypools/cli/commands/main_train.py (installed as the console command `lotterypools-train`); --help lists the flags.
"""

from lotterypools.cli.commands.main_train import build_parser, main  # noqa: F401 (build_parser: for tools that read the flags)

if __name__ == "__main__":
    main()
