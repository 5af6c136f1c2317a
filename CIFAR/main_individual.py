"""FreeTickets' main_individual.py: see lotterypools/cli/commands/main_individual.py (python main_individual.py --help)."""

from lotterypools.cli.commands.main_individual import main

if __name__ == "__main__":
    main()
