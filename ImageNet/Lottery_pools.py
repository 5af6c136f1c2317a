"""Lottery Pools over OpenLTH ImageNet tickets, and its baselines, on one or several processes.

The code is in lotterypools/cli/commands/imagenet_pools.py (installed as the console command `lotterypools-imagenet-pools`); --help lists the flags.
"""

from lotterypools.cli.commands.imagenet_pools import build_parser, main  # noqa: F401 (build_parser: for tools that read the flags)

if __name__ == "__main__":
    main()
