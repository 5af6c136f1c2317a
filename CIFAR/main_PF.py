"""FreeTickets' main_PF.py: see lotterypools/cli/commands/main_pf.py (python main_PF.py --help)."""

from lotterypools.cli.commands.main_pf import main

if __name__ == "__main__":
    main()
