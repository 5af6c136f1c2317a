"""FreeTickets' main_PF.py: see lotterypools/commands/main_pf.py (python main_PF.py --help)."""

from lotterypools.commands.main_pf import main

if __name__ == "__main__":
    main()
