"""The command-line programs: one module per script, each with ``build_parser()`` and ``main(argv=None)``.

``CIFAR/*.py`` and ``ImageNet/*.py`` are thin wrappers over these modules, and ``pyproject.toml`` installs them as
console commands (``lotterypools-imp``, ``lotterypools-pools``, ...). Building a parser imports no torch,
torchvision or matplotlib: the heavy modules are imported inside ``main``, so ``--help`` returns at once.
"""

# The console command of every command module (pyproject.toml [project.scripts] lists the same pairs).
CONSOLE_COMMANDS = {
    "lotterypools-imp": "main_imp",
    "lotterypools-prac-imp": "main_prac_imp",
    "lotterypools-train": "main_train",
    "lotterypools-pools": "lottery_pools",
    "lotterypools-make-corrupted": "make_corrupted",
    "lotterypools-analyze": "analyze_tickets",
    "lotterypools-imagenet-imp": "imagenet_imp",
    "lotterypools-imagenet-pools": "imagenet_pools",
    "lotterypools-multiproc": "multiproc",
    "lotterypools-freetickets-dst": "main_dst",
    "lotterypools-freetickets-edst": "main_edst",
    "lotterypools-freetickets-individual": "main_individual",
    "lotterypools-freetickets-pf": "main_pf",
    "lotterypools-freetickets-ensemble": "ensemble_freetickets",
    "lotterypools-freetickets-imagenet": "imagenet_edst",
    "lotterypools-aggregate": "aggregate_results",
    "lotterypools-experiment": "experiment",
    "lotterypools-sms": "main_sms",
}
