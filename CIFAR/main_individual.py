"""FreeTickets' main_individual.py: see lotterypools/commands/main_individual.py (python main_individual.py --help)."""

from lotterypools.commands.main_individual import main

if __name__ == "__main__":
    main()
