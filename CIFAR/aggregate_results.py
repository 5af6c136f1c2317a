"""Mean ± std over seeds of Lottery Pools results (see ``lotterypools/commands/aggregate_results.py``)."""

from lotterypools.commands.aggregate_results import main

if __name__ == "__main__":
    main()
