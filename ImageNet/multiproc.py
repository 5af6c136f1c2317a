"""Start a script once per device, as the original multiproc.py, with PyTorch's own launcher (torch.distributed.run).

The code is in lotterypools/cli/commands/multiproc.py (installed as the console command `lotterypools-multiproc`); --help lists the flags.
"""

from lotterypools.cli.commands.multiproc import build_parser, main  # noqa: F401 (build_parser: for tools that read the flags)

if __name__ == "__main__":
    main()
