"""FreeTickets' ImageNet/main.py (EDST): see lotterypools/cli/commands/imagenet_edst.py (python main.py --help)."""

from lotterypools.cli.commands.imagenet_edst import main

if __name__ == "__main__":
    main()
