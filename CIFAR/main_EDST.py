"""FreeTickets' main_EDST.py: see lotterypools/cli/commands/main_edst.py (python main_EDST.py --help)."""

from lotterypools.cli.commands.main_edst import main

if __name__ == "__main__":
    main()
