"""Create ImageNet lottery tickets by IMP with rewinding, in OpenLTH's layout and with OpenLTH's ImageNet defaults.

The code is in lotterypools/cli/commands/imagenet_imp.py (installed as the console command `lotterypools-imagenet-imp`); --help lists the flags.
"""

from lotterypools.cli.commands.imagenet_imp import build_parser, main  # noqa: F401 (build_parser: for tools that read the flags)

if __name__ == "__main__":
    main()
