"""FreeTickets' ensemble_freetickets.py: see lotterypools/cli/commands/ensemble_freetickets.py (--help)."""

from lotterypools.cli.commands.ensemble_freetickets import main

if __name__ == "__main__":
    main()
