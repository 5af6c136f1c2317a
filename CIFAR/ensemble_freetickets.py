"""FreeTickets' ensemble_freetickets.py: see lotterypools/commands/ensemble_freetickets.py (--help)."""

from lotterypools.commands.ensemble_freetickets import main

if __name__ == "__main__":
    main()
