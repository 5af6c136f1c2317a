"""Run a whole comparison from one spec file (see experiments/*.toml); the same command again continues it.

The code is in lotterypools/commands/experiment.py (installed as the console command `lotterypools-experiment`).
"""

from lotterypools.cli.commands.experiment import build_parser, main  # noqa: F401 (build_parser: for tools that read the flags)

if __name__ == "__main__":
    main()
