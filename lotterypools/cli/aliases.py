"""Per-script spellings, declared in one place: each flag name means one thing inside the package.

``SCRIPT_ALIASES[script]`` maps a setting (a dataclass field) to the original script's other spelling of it,
accepted by that script only; for example FreeTickets' ``--data cifar10`` is ``--dataset`` (``--data`` is a
folder elsewhere) and PrAC's 0-based ``--rewind_epoch 2`` is ``--rewind_index 2`` (``--rewind_epoch`` is a count
elsewhere). ``NO_EFFECT[script]`` lists the flags an original script took that change nothing here: a seed
README passes them verbatim, so they are accepted with a one-line note; ``REFUSED`` ones end the command with
one line instead. Both show in ``--help`` and docs/cli.md. Torch-free.
"""

from __future__ import annotations

import argparse
import os
from typing import NamedTuple

from ..core.errors import UserError

FREETICKETS_CIFAR = {"dataset": ("--data",), "weight_decay": ("--l2",), "batch_size": ("--batch-size",)}

SCRIPT_ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "main_dst": FREETICKETS_CIFAR,
    "main_edst": FREETICKETS_CIFAR,
    "main_individual": {**FREETICKETS_CIFAR, "nolrsche": ("--nolr_scheduler",)},
    "main_pf": FREETICKETS_CIFAR,
    "imagenet_edst": {"per_process_batch": ("-b", "--batch-size", "--batch_size"),
                      "weight_decay": ("--weight-decay", "--wd")},
    "ensemble_freetickets": {"dataset": ("--data",), "tickets_dir": ("--resume",)},
    "main_prac_imp": {"rewind_index": ("--rewind_epoch",)},
    "lottery_pools": {"bn_batch_size": ("--batch_size",)},
    "analyze_tickets": {"bn_batch_size": ("--batch_size",)},
    "imagenet_pools": {"bn_batch_size": ("-b", "--batch_size")},
}


class NoEffect(NamedTuple):
    """A flag an original script took that does nothing here: ``why``, and whether it takes a value."""

    flags: tuple[str, ...]
    why: str
    takes_value: bool = True
    refuse: bool = False


PRINT_FREQ = NoEffect(("--print_freq",), "a progress bar (on a terminal) and one line per epoch replace the "
                                         "periodic prints")
IMAGENET_PRINT_FREQ = PRINT_FREQ._replace(flags=("-p", "--print_freq"))
MASTER_PORT = NoEffect(("--master_port",), "only multiproc.py reads it (from the script's arguments when it has "
                                           "no --master_port of its own)")
FREETICKETS_RESUME = NoEffect(("--resume",), "rerunning the same command continues an interrupted run",
                              takes_value=False)
POOL_REWIND_EPOCH = NoEffect(("--rewind_epoch",), "the search reads the tickets as they are (the rewind point "
                                                   "mattered when main_imp.py trained them)")
INFERENCE = NoEffect(("--inference",), "the tickets are always evaluated first", takes_value=False)

# The training scripts' --print_freq comes with lotterypools.cli.flags.add_training_arguments (PRINT_FREQ).
NO_EFFECT: dict[str, tuple[NoEffect, ...]] = {
    "main_dst": (FREETICKETS_RESUME,),
    "main_edst": (FREETICKETS_RESUME,),
    "main_individual": (FREETICKETS_RESUME,),
    "main_pf": (FREETICKETS_RESUME,
                NoEffect(("--epochs-fs",), "the original parsed it and never used it"),
                NoEffect(("--model-num",), "the PF ensemble is one run per dense seed")),
    "imagenet_edst": (IMAGENET_PRINT_FREQ, MASTER_PORT),
    "imagenet_imp": (IMAGENET_PRINT_FREQ, MASTER_PORT),
    "imagenet_pools": (IMAGENET_PRINT_FREQ, MASTER_PORT, POOL_REWIND_EPOCH, INFERENCE),
    "lottery_pools": (POOL_REWIND_EPOCH, INFERENCE),
    "ensemble_freetickets": (NoEffect(("--batch-size",), "nothing is trained; the evaluation batch is "
                                                         "--test-batch-size", refuse=True),),
}


NOTES = "_no_effect_notes"  # the namespace attribute collecting the notes (printed by say_no_effect, not stored)


class _NoEffectAction(argparse.Action):
    """Collects a one-line note (or, for a refused flag, raises a one-line error) when the flag is given; the
    note is printed by :func:`say_no_effect` when the command starts work, so a parse that only checks a
    command line (an experiment's plan) prints nothing."""

    def __init__(self, option_strings, dest, why: str = "", refuse: bool = False, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.why, self.refuse = why, refuse

    def __call__(self, parser, namespace, values, option_string=None):
        given = option_string if values in (None, []) else f"{option_string} {values}"
        if self.refuse:
            raise UserError(f"{given} has no effect here: {self.why}; drop it")
        setattr(namespace, NOTES, [*getattr(namespace, NOTES, []), f"note: {given} has no effect: {self.why}"])


def say_no_effect(args: argparse.Namespace) -> None:
    """Print the notes of the no-effect flags given (once per launch: rank 0 only)."""
    if os.environ.get("RANK", "0") == "0":
        for note in getattr(args, NOTES, []):
            print(note, flush=True)


def add_no_effect_flags(parser: argparse.ArgumentParser, script: str | None = None,
                        entries: tuple[NoEffect, ...] = ()) -> None:
    """The flags of ``NO_EFFECT[script]`` (and ``entries``), in a group of their own (their values are not stored)."""
    entries = (*NO_EFFECT.get(script or "", ()), *entries)
    if not entries:
        return
    group = parser.add_argument_group("accepted from the original, without effect")
    for entry in entries:
        verdict = "refused with one line" if entry.refuse else "accepted with a note"
        group.add_argument(*entry.flags, dest=f"no_effect_{entry.flags[-1].lstrip('-').replace('-', '_')}",
                           action=_NoEffectAction, why=entry.why, refuse=entry.refuse,
                           nargs=None if entry.takes_value else 0, default=argparse.SUPPRESS,
                           help=f"no effect ({verdict}): {entry.why}")


def aliases_of(script: str) -> dict[str, tuple[str, ...]]:
    """The alias table of one script (empty when it has none)."""
    return SCRIPT_ALIASES.get(script, {})
