"""FreeTickets' main_EDST.py: see lotterypools/commands/main_edst.py (python main_EDST.py --help)."""

from lotterypools.commands.main_edst import main

if __name__ == "__main__":
    main()
