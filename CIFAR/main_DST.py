"""FreeTickets' main_DST.py: see lotterypools/cli/commands/main_dst.py (python main_DST.py --help)."""

from lotterypools.cli.commands.main_dst import main

if __name__ == "__main__":
    main()
