"""Write a CIFAR-C-like corrupted copy of a data set's test split, in the CIFAR-10-C layout.

The code is in lotterypools/cli/commands/make_corrupted.py (installed as the console command `lotterypools-make-corrupted`); --help lists the flags.
"""

from lotterypools.cli.commands.make_corrupted import build_parser, main  # noqa: F401 (build_parser: for tools that read the flags)

if __name__ == "__main__":
    main()
